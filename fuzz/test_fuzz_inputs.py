"""Hostile CSV files and command lines: every run succeeds honestly or ends in one clear line.

Files that were there before a command must be there after it, byte for byte, whatever the
command was told; a command that says it succeeded has printed finite numbers.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

TINY = ("--flow", "maf", "--transforms", "1", "--hidden", "4", "--epochs", "1", "--no-plot")

cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**40), 10**40).map(str),
    st.sampled_from(["", " ", "nan", "-inf", "1e308", "-1e-320", "1e155", "x", '"1"', "1;2"]),
    st.text(alphabet=st.characters(blacklist_characters=",\n\r"), max_size=4),
)


@st.composite
def csv_texts(draw: Any) -> str:
    """Mostly numbers at one scale (tiny to near overflow), some hostile cells and rows."""
    width = draw(st.integers(1, 4))
    scale = draw(st.sampled_from([1e-20, 1e-3, 1.0, 1e10, 1e37, 1e155, 1e300]))
    hostile_percent = draw(st.sampled_from([0, 0, 1, 10]))
    lines = []
    if draw(st.booleans()):
        names = st.lists(st.text("abxy_", max_size=3), min_size=width, max_size=width)
        lines.append(",".join(draw(names)))
    numbers = st.floats(-10, 10).map(lambda v: repr(v * scale))
    for _ in range(draw(st.integers(0, 40))):
        row_width = (
            width if draw(st.integers(0, 99)) >= hostile_percent else draw(st.integers(0, 6))
        )
        row = [
            draw(cells if draw(st.integers(0, 99)) < hostile_percent else numbers)
            for _ in range(row_width)
        ]
        lines.append(",".join(row))
    return "\n".join(lines) + draw(st.sampled_from(["", "\n", "\n\n", "\r\n"]))


@contextmanager
def inside(folder: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


@given(text=csv_texts())
def test_hostile_csv_files(model: Path, tmp_path_factory, harness, text):
    folder = tmp_path_factory.mktemp("csv")
    data = folder / "data.csv"
    data.write_text(text)
    before = harness.snapshot(folder)

    fitted = harness.run("fit", str(data), *TINY, "--out", str(folder / "out.pt"))
    harness.assert_clean_ending(fitted)
    if fitted.status == 0:
        from flows.core.checkpoint import load

        extra = load(folder / "out.pt").extra
        assert math.isfinite(extra["train_nll"]), extra
        (folder / "out.pt").unlink()
    else:
        assert not (folder / "out.pt").exists()

    evaluated = harness.run("eval", str(model), str(data))
    harness.assert_clean_ending(evaluated)
    if evaluated.status == 0:
        assert math.isfinite(float(evaluated.stdout.split()[2])), evaluated.stdout
    assert harness.snapshot(folder) == before


targets = st.sampled_from(
    ["out.csv", "out.npy", "out.pt", "flow.png", "model.pt", "data.csv", "precious.csv", "",
     ".", "missing/out.csv", "/dev/null", "link.csv", "out.txt", "out.PNG"]
)  # fmt: skip
values = st.sampled_from(
    ["", "0", "1", "2", "-1", "3", "0.5", "1e12", "nan", "inf", "-inf", "x", "1,2", "8,8",
     "maf", "nsf", "nope", "true", "cuda", "cpu", "meta", "10000000000000"]
)  # fmt: skip
options = {
    "fit": ["--flow", "--transforms", "--hidden", "--bins", "--epochs", "--batch-size", "--lr",
            "--patience", "--validation", "--clip-grad", "--seed", "--samples", "--device",
            "--columns", "--context-columns", "--flow-arg", "--threads"],
    "sample": ["-n", "--seed", "--context"],
    "eval": ["--samples", "--seed", "--columns", "--context-columns"],
}  # fmt: skip
flags = ["--force", "--no-plot", "--drop-nonfinite", "--per-row"]


@st.composite
def command_lines(draw: Any) -> list[str]:
    command = draw(st.sampled_from(sorted(options)))
    argv = [command]
    if command == "fit":
        argv += [draw(st.sampled_from(["moons", "data.csv", "precious.csv", "model.pt", "none"]))]
        argv += ["--epochs", "1", "--samples", "300", "--transforms", "1", "--hidden", "4"]
    else:
        argv += [draw(st.sampled_from(["model.pt", "precious.csv", "none.pt", "link.csv"]))]
        if command == "eval":
            argv += [draw(st.sampled_from(["moons", "data.csv", "precious.csv", "model.pt"]))]
            argv += ["--samples", "300"]
        else:
            argv += ["-n", "3"]
    for _ in range(draw(st.integers(0, 4))):
        kind = draw(st.integers(0, 3))
        if kind == 0:
            argv += ["--out", draw(targets)]
        elif kind == 1 and command == "fit":
            argv += ["--plot", draw(targets)]
        elif kind == 2:
            flag = draw(st.sampled_from(flags))
            argv += [flag]
        else:
            argv += [draw(st.sampled_from(options[command])), draw(values)]
    return argv


@given(argv=command_lines())
def test_hostile_command_lines(model: Path, tmp_path_factory, harness, argv):
    folder = tmp_path_factory.mktemp("argv")
    shutil.copy(model, folder / "model.pt")
    (folder / "data.csv").write_text(
        "x,y\n" + "".join(f"{i % 7},{i % 5 - 2}\n" for i in range(60))
    )
    (folder / "precious.csv").write_text("a,b\n1,2\n3,5\n8,13\n")
    (folder / "link.csv").symlink_to(folder / "precious.csv")
    precious = harness.snapshot(folder)["precious.csv"]
    model_bytes = (folder / "model.pt").read_bytes()

    with inside(folder):
        ran = harness.run(*argv)
    harness.assert_clean_ending(ran)
    assert harness.snapshot(folder)["precious.csv"] == precious
    assert (folder / "link.csv").is_symlink()
    if argv[0] != "fit":
        assert (folder / "model.pt").read_bytes() == model_bytes
    if ran.status == 0 and argv[0] == "eval" and "--per-row" not in argv:
        assert math.isfinite(float(ran.stdout.split()[2])), ran.stdout
    if ran.status != 0:
        leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        assert not leftovers, leftovers
