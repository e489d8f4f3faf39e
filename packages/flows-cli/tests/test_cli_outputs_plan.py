"""Unit tests of flows.cli.outputs: the output plan and the streaming tables."""

from __future__ import annotations

import io
import os
import socket
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.cli.outputs import (
    OutputError,
    OutputPlan,
    is_flows_checkpoint,
    is_flows_plot,
    plot_pair,
    write_rows,
)
from flows.core import MAF
from flows.core.checkpoint import FORMAT, save


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / "flow.pt"
    save(MAF(features=2, transforms=1, hidden_features=[4]), path)
    return path


@pytest.fixture
def plot(tmp_path: Path) -> Path:
    path = tmp_path / "flow.png"
    points = np.random.default_rng(0).normal(size=(50, 2))
    assert plot_pair(points, points, ["x", "y"], "test", path) is None
    return path


# Recognizing what flows wrote


def test_checkpoints_are_recognized_by_their_tag(tmp_path: Path, checkpoint: Path):
    assert FORMAT == "flows-checkpoint"  # the tag outputs.py repeats
    assert is_flows_checkpoint(checkpoint)
    torch.save({"format": "something-else", "payload": b""}, tmp_path / "other.pt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    (tmp_path / "text.pt").write_text("format flows-checkpoint")
    truncated = tmp_path / "cut.pt"
    truncated.write_bytes(checkpoint.read_bytes()[:300])
    for name in ("other.pt", "tensor.pt", "text.pt", "cut.pt", "missing.pt"):
        assert not is_flows_checkpoint(tmp_path / name), name


def test_plots_are_recognized_by_their_software_text(tmp_path: Path, plot: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert is_flows_plot(plot)
    figure = plt.figure(figsize=(1, 1))
    figure.savefig(tmp_path / "theirs.png", dpi=10)
    plt.close(figure)
    (tmp_path / "text.png").write_text("not a picture")
    for name in ("theirs.png", "text.png", "missing.png"):
        assert not is_flows_plot(tmp_path / name), name


# The plan


def test_plan_refuses_every_name_of_an_input(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "d.csv"
    data.write_text("x\n1\n")
    os.link(data, tmp_path / "hard.csv")
    plan = OutputPlan(inputs={"DATA": "d.csv", "MODEL": None, "--context": "0.5,1"})
    for name in ("d.csv", "./d.csv", str(data), "hard.csv", "sub/../d.csv"):
        (tmp_path / "sub").mkdir(exist_ok=True)
        with pytest.raises(OutputError, match=r"is the same file as DATA 'd.csv', an input"):
            plan.add("--out", name, "table")
    assert data.read_text() == "x\n1\n"


def test_plan_refuses_two_outputs_naming_one_file(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    plan = OutputPlan()
    assert plan.add("--out", "a.pt", "checkpoint") == Path("a.pt")
    with pytest.raises(OutputError) as error:
        plan.add("--plot", "sub/../a.pt", "plot", default=True)
    assert str(error.value) == (
        "--plot 'sub/../a.pt' (its default) is the same file as --out 'a.pt'; "
        "give --plot another name"
    )
    assert plan.add("--plot", "a.png", "plot") == Path("a.png")
    assert list(tmp_path.iterdir()) == [tmp_path / "sub"]  # planning writes nothing


def test_plan_names_what_a_non_regular_file_is(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a socket's path must be short: bind it by a relative one
    (tmp_path / "target").write_text("kept")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    server = socket.socket(socket.AF_UNIX)
    try:
        server.bind("sock")
        cases = {
            "link": "is a symbolic link; flows writes only regular files: choose another name",
            "fifo": "is a named pipe (FIFO)",
            "folder": "is a folder; give a file name",
            "sock": "is a socket",
            "/dev/null": "is a character device",
        }
        for name, words in cases.items():
            with pytest.raises(OutputError, match=words.replace("(", r"\(").replace(")", r"\)")):
                OutputPlan(force=True).add("--out", tmp_path / name, "checkpoint")
    finally:
        server.close()
    assert (tmp_path / "target").read_text() == "kept"


def test_plan_checks_the_folder(tmp_path: Path, monkeypatch):
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match=r"folder '.*missing' does not exist"):
        OutputPlan().add("--out", tmp_path / "missing" / "a.csv", "table")
    with pytest.raises(OutputError, match="Not a directory"):
        OutputPlan().add("--out", tmp_path / "file" / "a.csv", "table")
    # Root may write anywhere, so the answer of access(2) is what the test controls.
    monkeypatch.setattr(os, "access", lambda path, how: Path(path) != tmp_path)
    with pytest.raises(OutputError, match="is not writable"):
        OutputPlan().add("--out", tmp_path / "a.csv", "table")


def test_plan_refuses_read_only_files_even_with_force(tmp_path: Path, checkpoint: Path):
    checkpoint.chmod(0o444)
    with pytest.raises(OutputError, match=r"'.*flow.pt' is read-only; make it writable"):
        OutputPlan(force=True).add("--out", checkpoint, "checkpoint")


def test_plan_replaces_only_files_flows_wrote_for_that_output(
    tmp_path: Path, checkpoint: Path, plot: Path
):
    plan = OutputPlan()
    assert plan.add("--out", checkpoint, "checkpoint") == checkpoint
    assert plan.add("--plot", plot, "plot") == plot
    (tmp_path / "s.csv").write_text("x\n")
    refusals = [
        ("--out", plot, "checkpoint", "exists and is not a flows checkpoint; pass --force"),
        ("--plot", checkpoint, "plot", "exists and is not a plot drawn by flows; pass --force"),
        ("--out", tmp_path / "s.csv", "table", "'.*s.csv' exists; pass --force to replace it"),
    ]
    for option, path, kind, message in refusals:
        with pytest.raises(OutputError, match=message):
            OutputPlan().add(option, path, kind)
        assert OutputPlan(force=True).add(option, path, kind) == path


def test_plan_wants_a_table_suffix(tmp_path: Path):
    with pytest.raises(OutputError, match=r"--out '.*s.pt': expected a .csv or .npy file name"):
        OutputPlan().add("--out", tmp_path / "s.pt", "table")


# Streaming tables


def chunks(count: int, rows: int = 3, width: int = 2):
    for k in range(count):
        yield np.arange(rows * width, dtype=np.float64).reshape(rows, width) + 100 * k


def test_write_rows_streams_blocks_to_npy_and_csv(tmp_path: Path):
    expected = np.concatenate(list(chunks(4)))
    write_rows(chunks(4), ["a", "b"], 12, str(tmp_path / "t.npy"), io.StringIO())
    loaded = np.load(tmp_path / "t.npy")
    assert loaded.dtype == np.float64 and np.array_equal(loaded, expected)
    write_rows(chunks(4), ["a", "b"], 12, str(tmp_path / "t.csv"), io.StringIO())
    lines = (tmp_path / "t.csv").read_text().splitlines()
    assert lines[0] == "a,b" and lines[1] == "0.0,1.0" and lines[-1] == "304.0,305.0"
    assert len(lines) == 13


def test_write_rows_to_stdout_writes_each_block_before_drawing_the_next():
    out = io.StringIO()

    def drawn():
        for k, block in enumerate(chunks(3)):
            assert out.getvalue().count("\n") == 1 + 3 * k  # the header and earlier blocks
            yield block

    write_rows(drawn(), ["a", "b"], 9, None, out)
    assert out.getvalue().count("\n") == 10


def test_write_rows_refuses_a_wrong_row_count_and_leaves_nothing(tmp_path: Path):
    with pytest.raises(ValueError, match=r"12 rows were written to .*, 13 announced"):
        write_rows(chunks(4), ["a", "b"], 13, str(tmp_path / "t.npy"), io.StringIO())
    assert list(tmp_path.iterdir()) == []
