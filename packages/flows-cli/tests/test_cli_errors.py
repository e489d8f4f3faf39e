"""Bad input ends with one `flows: error:` line, a non-zero exit, no traceback, no output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flows.cli.main import main

TINY = ["--flow", "maf", "--transforms", "1", "--hidden", "8", "--epochs", "1"]


def fails(argv: list[str], capsys, expected: str, code: int = 1) -> str:
    """Run the command, check it failed cleanly and return its last stderr line."""
    if code == 2:
        with pytest.raises(SystemExit) as exit:
            main(argv)
        status = exit.value.code
    else:
        status = main(argv)
    err = capsys.readouterr().err
    assert status == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    prefix = "flows: error: " if code == 1 else "flows fit: error: "
    assert last.startswith(prefix), last
    assert expected in last, last
    return last


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "m.pt"
    assert main(["fit", "moons", "--samples", "200", *TINY, "--no-plot", "--out", str(path)]) == 0
    return path


@pytest.fixture
def outputs(tmp_path: Path, monkeypatch) -> Path:
    """A working folder that must stay empty."""
    folder = tmp_path / "work"
    folder.mkdir()
    monkeypatch.chdir(folder)
    yield folder
    assert list(folder.iterdir()) == []


def test_missing_data_file(outputs, capsys):
    fails(["fit", "missing.csv", *TINY], capsys, "no such file 'missing.csv'")


def test_unreadable_data_file(outputs, tmp_path, capsys):
    path = tmp_path / "bad.npy"
    path.write_bytes(b"not an array")
    fails(["fit", str(path), *TINY], capsys, "not a readable .npy")


def test_non_numeric_column(outputs, tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,x\n")
    fails(["fit", str(path), *TINY], capsys, "line 3, column 'b': 'x' is not a number")


def test_nan_and_inf_rows_are_refused_with_their_numbers(outputs, tmp_path, capsys):
    rows = np.random.default_rng(0).normal(size=(20, 2))
    rows[4, 0], rows[9, 1] = np.nan, np.inf
    path = tmp_path / "d.npy"
    np.save(path, rows)
    fails(["fit", str(path), *TINY], capsys, "data rows 5, 10")


def test_unknown_flow_suggests_close_names(outputs, capsys):
    line = fails(["fit", "moons", "--flow", "maff", "--epochs", "1"], capsys, "unknown preset")
    assert "did you mean 'maf'" in line


def test_option_a_flow_does_not_take(outputs, capsys):
    line = fails(["fit", "moons", *TINY, "--bins", "4"], capsys, "flow 'maf' refused its options")
    assert "--bins 4" in line and "'bins'" in line


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--epochs", "-1"),
        ("--bins", "0"),
        ("--hidden", "64,x"),
        ("--lr", "0"),
        ("--batch-size", "0"),
        ("--lr-patience", "-1"),
        ("--validation", "1.5"),
    ],
)
def test_options_out_of_range(outputs, option, value, capsys):
    fails(["fit", "moons", option, value], capsys, f"argument {option}", code=2)


def test_output_folder_missing(outputs, capsys):
    fails(["fit", "moons", *TINY, "--out", "nowhere/m.pt"], capsys, "folder 'nowhere' does not")
    fails(["fit", "moons", *TINY, "--plot", "nowhere/m.png"], capsys, "does not exist")


def test_eval_with_wrong_column_count(model, outputs, tmp_path, capsys):
    path = tmp_path / "three.csv"
    path.write_text("1,2,3\n4,5,6\n")
    fails(["eval", str(model), str(path)], capsys, "the model expects 2 (x, y)")


def test_sample_with_context_for_an_unconditional_model(model, outputs, capsys):
    fails(["sample", str(model), "--context", "1,2"], capsys, "not conditional")


def test_sample_to_missing_folder(model, outputs, capsys):
    fails(["sample", str(model), "--out", "nowhere/s.csv"], capsys, "does not exist")


def test_truncated_checkpoint(model, outputs, capsys):
    model.write_bytes(model.read_bytes()[:500])
    fails(["sample", str(model)], capsys, "not a readable flows checkpoint")


def test_tampered_checkpoint(model, outputs, capsys):
    import torch

    envelope = torch.load(model, weights_only=True)
    payload = bytearray(envelope["payload"])
    payload[-100] ^= 1
    envelope["payload"] = bytes(payload)
    torch.save(envelope, model)
    fails(["eval", str(model), "moons"], capsys, "damaged")


def test_missing_checkpoint(outputs, capsys):
    fails(["sample", "absent.pt"], capsys, "no checkpoint file 'absent.pt'")


def test_constant_column_is_refused_by_name(outputs, tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,5\n2,5\n3,5\n4,5\n")
    fails(["fit", str(path), *TINY], capsys, "column(s) b are constant")
