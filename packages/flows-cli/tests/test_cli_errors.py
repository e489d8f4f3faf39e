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


# Corrupt data files raise exceptions that are not ValueErrors (BadZipFile, EOFError,
# csv.Error, PIL's DecompressionBombError): each must still be one line, no traceback.


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_empty_array_file_is_one_error_line(outputs, tmp_path, capsys, suffix):
    path = tmp_path / f"d{suffix}"
    path.write_bytes(b"")
    fails(["fit", str(path), *TINY], capsys, f"{str(path)!r} is not a readable {suffix}")


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_npz_is_one_error_line(outputs, tmp_path, capsys, damage):
    path = tmp_path / "d.npz"
    np.savez(path, a=np.random.default_rng(0).normal(size=(50, 2)))
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[:300]
    else:
        data[200] ^= 0xFF
    path.write_bytes(bytes(data))
    fails(["fit", str(path), *TINY], capsys, f"{str(path)!r} is not a readable .npz archive")


def test_csv_field_over_the_size_limit_is_one_error_line(outputs, tmp_path, capsys):
    import csv

    path = tmp_path / "d.csv"
    # A stray quote makes the rest of the file one field, longer than csv's field limit.
    limit = csv.field_size_limit()
    path.write_text('x,y\n1,2\n3,"4\n' + "5,6\n" * (limit // 4 + 10))
    line = fails(["fit", str(path), *TINY], capsys, f"{str(path)!r} line ")
    assert "not valid CSV" in line and "field limit" in line


@pytest.mark.together("flows.image")
def test_image_over_the_decompression_bomb_limit_is_one_error_line(
    outputs, tmp_path, capsys, monkeypatch
):
    image = pytest.importorskip("PIL.Image")
    pytest.importorskip("flows.image")
    folder = tmp_path / "pics"
    folder.mkdir()
    image.new("L", (8, 8)).save(folder / "a.png")
    # Over twice the limit, PIL raises DecompressionBombError (not an OSError).
    monkeypatch.setattr(image, "MAX_IMAGE_PIXELS", 16)
    for data in (folder / "a.png", folder):
        line = fails(["fit", str(data), "--epochs", "1"], capsys, "is not a readable image")
        assert "decompression bomb" in line


def test_an_unforeseen_exception_class_is_one_error_line(outputs, capsys, monkeypatch):
    class Surprise(Exception):
        pass

    def explode(*args, **kwargs):
        raise Surprise("something odd\nhappened")

    monkeypatch.setattr("flows.cli.datasets.load_data", explode)
    line = fails(["fit", "moons", *TINY], capsys, "Surprise: something odd happened")
    assert line == "flows: error: Surprise: something odd happened"


@pytest.mark.together("flows.image")
def test_force_never_replaces_an_image_of_a_data_folder(outputs, tmp_path, capsys):
    image = pytest.importorskip("PIL.Image")
    pytest.importorskip("flows.image")
    folder = tmp_path / "pics"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):  # enough to fit, so that the plot's path is checked
        image.fromarray(rng.integers(0, 256, (8, 8)).astype(np.uint8)).save(folder / f"i{i}.png")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    # The default --plot beside --out is pics/i0.png, one of the training images.
    argv = ["fit", str(folder), "--epochs", "1", "--out", str(folder / "i0.pt"), "--force"]
    line = fails(argv, capsys, "is the same file as DATA")
    assert f"--plot {str(folder / 'i0.png')!r} (its default)" in line
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_header_naming_a_column_twice_is_refused(outputs, tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("x,x,y\n1,2,3\n4,5,7\n2,1,0\n")
    line = fails(["fit", str(path), *TINY], capsys, "names column(s) 'x' more than once")
    assert line.startswith(f"flows: error: {str(path)!r}: the header")


def test_an_output_name_near_the_file_system_limit_is_written(tmp_path: Path, monkeypatch):
    # 248 characters is a legal name; the staging folder's name (".NAME.XXXXXXXX.tmp") was
    # not, and the fit failed only once it had trained.
    monkeypatch.chdir(tmp_path)
    name = "m" * 245 + ".pt"
    assert main(["fit", "moons", *TINY, "--no-plot", "--out", name]) == 0
    assert [p.name for p in tmp_path.iterdir()] == [name]
