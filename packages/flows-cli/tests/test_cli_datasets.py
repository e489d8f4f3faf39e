"""Tests of flows.cli.datasets: toy sets, file formats, column selection, non-finite rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flows.cli.datasets import (
    TOY_SETS,
    DataError,
    check_finite,
    load_data,
    parse_columns,
    read_file,
    select,
    toy,
)


@pytest.mark.parametrize("name", sorted(TOY_SETS))
def test_toy_sets_are_deterministic_by_seed(name):
    a, b, c = toy(name, 500, seed=1), toy(name, 500, seed=1), toy(name, 500, seed=2)
    assert a.values.shape == (500, 2) and np.isfinite(a.values).all()
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)


def test_moons_lie_on_two_half_circles():
    points = toy("moons", 4000, seed=0).values
    upper = np.hypot(points[:, 0], points[:, 1])
    lower = np.hypot(points[:, 0] - 1, points[:, 1] - 0.5)
    # Every point is near radius 1 from one of the two centres.
    assert (np.minimum(abs(upper - 1), abs(lower - 1)) < 0.25).mean() > 0.99


def test_checkerboard_fills_only_dark_squares():
    points = toy("checkerboard", 4000, seed=0).values
    cells = np.floor(points + 2).astype(int)
    assert ((cells.sum(axis=1) % 2) == 0).all()
    assert (abs(points) <= 2).all()


def test_csv_header_gives_the_column_names(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,c\n1,2,3\n4,5,6\n")
    table = read_file(path)
    assert table.header and table.names == ["a", "b", "c"]
    np.testing.assert_array_equal(table.values, [[1, 2, 3], [4, 5, 6]])


def test_csv_without_header_and_other_delimiters(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("1.5;2\n-3e2;4\n")
    table = read_file(path)
    assert not table.header and table.names == ["0", "1"]
    np.testing.assert_array_equal(table.values, [[1.5, 2], [-300, 4]])


def test_csv_non_numeric_value_is_named_with_its_line(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\n3,oops\n")
    with pytest.raises(DataError, match=r"line 3, column 'b': 'oops' is not a number"):
        read_file(path)


def test_csv_ragged_rows_are_refused(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("1,2\n3\n")
    with pytest.raises(DataError, match="line 2 has 1 fields, expected 2"):
        read_file(path)


def test_npy_and_npz_are_read_and_npz_needs_a_valid_key(tmp_path: Path):
    array = np.arange(12.0).reshape(4, 3)
    np.save(tmp_path / "d.npy", array)
    np.testing.assert_array_equal(read_file(tmp_path / "d.npy").values, array)
    np.savez(tmp_path / "d.npz", x=array, y=array[:, :1])
    np.testing.assert_array_equal(read_file(tmp_path / "d.npz", key="y").values, array[:, :1])
    with pytest.raises(DataError, match="choose one with --key"):
        read_file(tmp_path / "d.npz")
    with pytest.raises(DataError, match="no array 'z'"):
        read_file(tmp_path / "d.npz", key="z")


def test_pickled_npy_is_refused(tmp_path: Path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"not a readable \.npy"):
        read_file(tmp_path / "o.npy")


def test_missing_file_and_unknown_names():
    with pytest.raises(FileNotFoundError, match=r"nope\.csv"):
        load_data("nope.csv")
    with pytest.raises(DataError, match="neither a file nor a built-in data set"):
        load_data("mooons")


def test_select_by_names_and_indices():
    table = toy("moons", 10)
    x, c = select(table, parse_columns("y"), parse_columns("0"))
    np.testing.assert_array_equal(x.values[:, 0], table.values[:, 1])
    np.testing.assert_array_equal(c.values[:, 0], table.values[:, 0])
    with pytest.raises(DataError, match="no column 'z'"):
        select(table, ["z"])
    with pytest.raises(DataError, match="out of range"):
        select(table, ["5"])
    with pytest.raises(DataError, match="both data and context"):
        select(table, ["x"], ["x"])


def test_non_finite_rows_are_named_or_dropped(tmp_path: Path):
    path = tmp_path / "d.csv"
    path.write_text("a,b\n1,2\nnan,2\n3,inf\n4,\n5,6\n")
    x, _ = select(read_file(path))
    with pytest.raises(DataError, match=r"3 row\(s\).*data rows 2, 3, 4.*--drop-nonfinite"):
        check_finite(x)
    kept, _, dropped = check_finite(x, drop=True)
    assert dropped == 3
    np.testing.assert_array_equal(kept.values, [[1, 2], [5, 6]])
