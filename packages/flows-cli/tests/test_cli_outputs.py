"""The `flows` command never destroys a file it did not create (see flows.cli.outputs).

Each refusal runs the real command in a subprocess and checks: exit status 1, exactly one stderr
line `flows: error: ...`, no traceback, and every file that was there before still there, with
the same bytes and mode, and nothing new (no temporary file either).
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flows.cli.main import main
from flows.cli.using import CHUNK
from flows.core.checkpoint import load

TINY = ["--flow", "maf", "--transforms", "1", "--hidden", "8", "--epochs", "1", "--samples", "200"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def flows(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env=ENV,
    )


def snapshot(folder: Path) -> dict[str, tuple[str, int, bytes | str | None]]:
    """Every entry under ``folder`` (hidden ones too): its kind, its mode and its contents."""
    found: dict[str, tuple[str, int, bytes | str | None]] = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        key = str(path.relative_to(folder))
        if stat.S_ISLNK(st.st_mode):
            found[key] = ("link", stat.S_IMODE(st.st_mode), os.readlink(path))
        elif stat.S_ISREG(st.st_mode):
            found[key] = ("file", stat.S_IMODE(st.st_mode), path.read_bytes())
        else:  # never read a pipe
            found[key] = (stat.filemode(st.st_mode)[0], stat.S_IMODE(st.st_mode), None)
    return found


def refused(cwd: Path, *argv: str, expected: str, watch: Path | None = None) -> str:
    """Run ``flows ARGV``: check it failed cleanly, touching nothing in ``cwd`` or ``watch``."""
    folders = [cwd] + ([watch] if watch is not None else [])
    before = [snapshot(folder) for folder in folders]
    result = flows(cwd, *argv)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flows: error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert [snapshot(folder) for folder in folders] == before
    return lines[0]


def succeeds(cwd: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    result = flows(cwd, *argv)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny checkpoint of moons, written once for the module."""
    path = tmp_path_factory.mktemp("model") / "m.pt"
    assert main(["fit", "moons", *TINY, "--no-plot", "--out", str(path)]) == 0
    return path


@pytest.fixture
def work(tmp_path: Path, trained: Path) -> Path:
    """A folder holding the model m.pt and 2-D data d.csv (with a header)."""
    shutil.copy(trained, tmp_path / "m.pt")
    rows = np.random.default_rng(0).normal(size=(40, 2))
    (tmp_path / "d.csv").write_text("x,y\n" + "".join(f"{a!r},{b!r}\n" for a, b in rows.tolist()))
    return tmp_path


# Inputs are never outputs


@pytest.mark.parametrize("spelling", ["d.csv", "./d.csv", "link.csv", "hard.csv", "{abs}"])
def test_fit_never_writes_its_checkpoint_over_its_data(work: Path, spelling: str):
    (work / "link.csv").symlink_to("d.csv")
    os.link(work / "d.csv", work / "hard.csv")
    out = spelling.format(abs=work / "d.csv")
    refused(work, "fit", "d.csv", *TINY, "--out", out, expected="is the same file as DATA 'd.csv'")


def test_fit_reads_data_through_a_link_and_still_protects_it(work: Path):
    (work / "link.csv").symlink_to("d.csv")
    refused(
        work,
        "fit",
        "link.csv",
        *TINY,
        "--out",
        "d.csv",
        expected="--out 'd.csv' is the same file as DATA 'link.csv', an input of this command",
    )


def test_fit_never_draws_its_plot_over_its_data(work: Path):
    line = refused(work, "fit", "d.csv", *TINY, "--plot", "./d.csv", expected="DATA 'd.csv'")
    assert line.startswith("flows: error: --plot './d.csv' is the same file as DATA")


def test_eval_never_writes_over_its_data_or_its_model(work: Path):
    refused(work, "eval", "m.pt", "d.csv", "--out", "d.csv", expected="same file as DATA 'd.csv'")
    refused(work, "eval", "m.pt", "d.csv", "--out", "m.pt", expected="same file as MODEL 'm.pt'")


def test_sample_never_writes_over_its_model_or_its_context(work: Path):
    refused(work, "sample", "m.pt", "--out", "m.pt", expected="same file as MODEL 'm.pt'")
    refused(
        work,
        "sample",
        "m.pt",
        "--context",
        "d.csv",
        "--out",
        "d.csv",
        "--force",  # --force replaces files, never inputs
        expected="--out 'd.csv' is the same file as --context 'd.csv', an input of this command",
    )


# Two outputs are never one file


def test_fit_checkpoint_named_like_the_default_plot_is_refused(work: Path):
    line = refused(work, "fit", "moons", *TINY, "--out", "flow.png", expected="--plot")
    assert line == (
        "flows: error: --plot 'flow.png' (its default) is the same file as --out 'flow.png'; "
        "give --plot another name"
    )


def test_fit_out_and_plot_naming_one_file_are_refused(work: Path):
    refused(
        work,
        "fit",
        "moons",
        *TINY,
        "--out",
        "a.pt",
        "--plot",
        "./a.pt",
        expected="--plot './a.pt' is the same file as --out 'a.pt'; choose another name",
    )


# Only regular files are replaced


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda p: p.symlink_to(p.parent / "outside" / "kept.pt"), "is a symbolic link"),
        (lambda p: p.symlink_to("nowhere.pt"), "is a symbolic link"),
        (lambda p: os.mkfifo(p), "is a named pipe (FIFO)"),
        (lambda p: p.mkdir(), "is a folder; give a file name"),
    ],
    ids=["symlink", "dangling-symlink", "fifo", "folder"],
)
def test_outputs_that_are_not_regular_files_are_refused(tmp_path: Path, work: Path, make, what):
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    outside.mkdir()
    (outside / "kept.pt").write_bytes(b"someone else's file")
    (work / "outside").symlink_to(outside)
    make(work / "x.pt")
    make(work / "x.csv")
    for argv in (
        ["fit", "moons", *TINY, "--out", "x.pt", "--force"],
        ["sample", "m.pt", "--out", "x.csv", "--force"],
        ["eval", "m.pt", "d.csv", "--out", "x.csv", "--force"],
    ):
        refused(work, *argv, expected=what, watch=outside)


def test_a_device_is_never_replaced(work: Path):
    # Refused before anything is opened, so even as root /dev/null is not at risk.
    refused(work, "sample", "m.pt", "--out", "/dev/null", expected="is a character device")


# Existing files: flows replaces only its own, unless --force


def test_fit_does_not_replace_a_file_it_did_not_write(work: Path):
    (work / "notes.pt").write_text("my notes")
    (work / "keep.csv").write_text("a,b\n1,2\n")
    refused(
        work,
        "fit",
        "moons",
        *TINY,
        "--out",
        "notes.pt",
        expected="--out 'notes.pt' exists and is not a flows checkpoint; pass --force to replace",
    )
    refused(
        work,
        "fit",
        "moons",
        *TINY,
        "--plot",
        "keep.csv",
        expected="--plot 'keep.csv' exists and is not a plot drawn by flows; pass --force",
    )


def test_sample_and_eval_do_not_replace_an_existing_table(work: Path):
    (work / "s.csv").write_text("precious\n")
    (work / "s.npy").write_bytes(b"precious")
    for argv in (["sample", "m.pt"], ["eval", "m.pt", "d.csv"]):
        for name in ("s.csv", "s.npy"):
            refused(
                work,
                *argv,
                "--out",
                name,
                expected=f"--out '{name}' exists; pass --force to replace it",
            )


def test_force_replaces_a_file_and_keeps_its_mode(work: Path):
    (work / "s.csv").write_text("old\n")
    (work / "s.csv").chmod(0o600)
    (work / "r.npy").write_text("old")
    (work / "r.npy").chmod(0o640)
    (work / "notes.pt").write_text("old")
    (work / "notes.pt").chmod(0o600)

    succeeds(work, "sample", "m.pt", "-n", "5", "--out", "s.csv", "--force")
    assert (work / "s.csv").read_text().splitlines()[0] == "x,y"
    succeeds(work, "eval", "m.pt", "d.csv", "--out", "r.npy", "--force")
    assert np.load(work / "r.npy").shape == (40, 1)
    succeeds(work, "fit", "moons", *TINY, "--no-plot", "--out", "notes.pt", "--force")
    assert load(work / "notes.pt").preset == "maf"

    modes = {name: stat.S_IMODE((work / name).stat().st_mode) for name in ("s.csv", "r.npy")}
    assert modes == {"s.csv": 0o600, "r.npy": 0o640}
    assert stat.S_IMODE((work / "notes.pt").stat().st_mode) == 0o600


def test_a_read_only_file_is_refused_even_with_force(work: Path):
    shutil.copy(work / "m.pt", work / "frozen.pt")
    (work / "frozen.pt").chmod(0o444)
    refused(
        work,
        "fit",
        "moons",
        *TINY,
        "--out",
        "frozen.pt",
        "--force",
        expected="--out 'frozen.pt' is read-only; make it writable or choose another name",
    )


def test_fit_moons_twice_replaces_its_own_checkpoint_and_plot(tmp_path: Path):
    succeeds(tmp_path, "fit", "moons", *TINY)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.png", "flow.pt"]
    (tmp_path / "flow.pt").chmod(0o600)
    first = {name: (tmp_path / name).stat().st_ino for name in ("flow.pt", "flow.png")}

    again = succeeds(tmp_path, "fit", "moons", *TINY, "--seed", "1")
    assert "checkpoint    flow.pt" in again.stdout and "plot          flow.png" in again.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.png", "flow.pt"]
    second = {name: (tmp_path / name).stat().st_ino for name in ("flow.pt", "flow.png")}
    assert all(first[name] != second[name] for name in first)  # both written anew
    assert load(tmp_path / "flow.pt").extra["steps"] == 1
    assert stat.S_IMODE((tmp_path / "flow.pt").stat().st_mode) == 0o600

    # A picture flows did not draw stops the rerun, before the checkpoint is touched.
    (tmp_path / "flow.png").write_bytes(b"\x89PNG\r\n\x1a\n a drawing of mine")
    refused(
        tmp_path,
        "fit",
        "moons",
        *TINY,
        expected="--plot 'flow.png' (its default) exists and is not a plot drawn by flows; "
        "pass --force to replace it",
    )


def test_folder_problems_are_found_before_any_work(work: Path):
    (work / "file").write_text("not a folder")
    refused(work, "fit", "moons", *TINY, "--out", "missing/m.pt", expected="does not exist")
    refused(work, "sample", "m.pt", "--out", "file/s.csv", expected="--out 'file/s.csv'")
    refused(work, "eval", "m.pt", "d.csv", "--out", "r.pt", expected="expected a .csv or .npy")


# A killed command leaves nothing behind


def test_sigterm_while_writing_leaves_no_temporary_file(work: Path):
    before = snapshot(work)
    process = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", "sample", "m.pt", "-n", "100000000", "--out", "s.npy"],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(p.name.startswith(".s.npy.") for p in work.iterdir()):
            assert process.poll() is None and time.monotonic() < deadline, "no temporary file"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    assert err.splitlines() == ["flows: interrupted (SIGTERM)"]
    assert snapshot(work) == before


# Samples are drawn and written chunk by chunk


def test_sample_streams_many_chunks_to_npy_csv_and_stdout(work: Path, capsys):
    num = 2 * CHUNK + 3
    model = str(work / "m.pt")
    assert (
        main(["sample", model, "-n", str(num), "--seed", "3", "--out", str(work / "s.npy")]) == 0
    )
    assert (
        main(["sample", model, "-n", str(num), "--seed", "3", "--out", str(work / "s.csv")]) == 0
    )
    assert main(["sample", model, "-n", str(num), "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    array = np.load(work / "s.npy")
    assert array.shape == (num, 2) and array.dtype == np.float64
    assert (work / "s.csv").read_text() == printed
    assert printed.splitlines()[0] == "x,y"
    assert np.array_equal(np.loadtxt(work / "s.csv", delimiter=",", skiprows=1), array)
    assert not np.isclose(array[:CHUNK], array[CHUNK : 2 * CHUNK]).all(axis=1).any()  # fresh


def test_conditional_samples_stay_grouped_by_context_row_across_chunks(tmp_path: Path, capsys):
    rng = np.random.default_rng(0)
    c = rng.normal(size=(200, 1))
    x = np.concatenate([c + 0.1 * rng.normal(size=(200, 1)), rng.normal(size=(200, 1))], axis=1)
    data = tmp_path / "d.npy"
    np.save(data, np.concatenate([x, c], axis=1))
    model = tmp_path / "c.pt"
    argv = ["fit", str(data), *TINY, "--context-columns", "2", "--out", str(model)]
    assert main(argv) == 0
    (tmp_path / "ctx.csv").write_text("0.25\n-1.5\n")

    for num in (3, CHUNK + 5):  # many context rows in one draw; one row over several draws
        out = tmp_path / f"s{num}.npy"
        argv = ["sample", str(model), "-n", str(num), "--context", str(tmp_path / "ctx.csv")]
        assert main([*argv, "--out", str(out)]) == 0
        values = np.load(out)
        assert values.shape == (2 * num, 3)
        assert np.array_equal(values[:num, 0], np.full(num, 0.25))
        assert np.array_equal(values[num:, 0], np.full(num, -1.5))
    capsys.readouterr()
