"""Data for the ``flows`` command: built-in 2-D toy sets and ``.csv``, ``.npy``, ``.npz`` files.

Toy sets are generated on the fly, the same points for the same seed. Files are read into a
:class:`Table` of float64 values with column names; :func:`select` picks the data and context
columns by index or name, and :func:`check_finite` refuses (or drops) rows holding NaN or inf,
naming them.

Example:
    >>> table = toy("moons", 1000, seed=0)
    >>> table.values.shape, table.names
    ((1000, 2), ['x', 'y'])
"""

from __future__ import annotations

import csv
import dataclasses
import math
import zipfile
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "TOY_SETS",
    "DataError",
    "Table",
    "check_finite",
    "load_data",
    "nonfinite_rows",
    "parse_columns",
    "read_file",
    "row_numbers",
    "select",
    "toy",
]


class DataError(ValueError):
    """Data that cannot be used as given; the message says what and where."""


@dataclasses.dataclass
class Table:
    """Rows of numbers with a name per column.

    Arguments:
        values: A float64 array of shape ``(rows, columns)``.
        names: One name per column (the header, or ``"0"``, ``"1"``, ... without one).
        source: Where the rows come from, for messages.
        header: Whether the names came from the file.
    """

    values: np.ndarray
    names: list[str]
    source: str
    header: bool = False


# Toy sets. Each takes (rows, generator) and returns an array (rows, 2).


def _moons(n: int, rng: np.random.Generator) -> np.ndarray:
    upper = n // 2
    angle = rng.uniform(0, math.pi, n)
    x = np.where(np.arange(n) < upper, np.cos(angle), 1 - np.cos(angle))
    y = np.where(np.arange(n) < upper, np.sin(angle), 0.5 - np.sin(angle))
    points = np.stack([x, y], axis=1) + rng.normal(0, 0.05, (n, 2))
    return rng.permutation(points)


def _circles(n: int, rng: np.random.Generator) -> np.ndarray:
    radius = np.where(rng.random(n) < 0.5, 1.0, 0.5)
    angle = rng.uniform(0, 2 * math.pi, n)
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return points + rng.normal(0, 0.03, (n, 2))


def _rings(n: int, rng: np.random.Generator) -> np.ndarray:
    radius = rng.integers(1, 5, n) * 0.5
    angle = rng.uniform(0, 2 * math.pi, n)
    points = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return points + rng.normal(0, 0.04, (n, 2))


def _checkerboard(n: int, rng: np.random.Generator) -> np.ndarray:
    # A 4 x 4 board on [-2, 2]^2; points fill the cells whose indices have an even sum.
    column = rng.integers(0, 4, n)
    row = 2 * rng.integers(0, 2, n) + (column % 2)
    x = column - 2 + rng.random(n)
    y = row - 2 + rng.random(n)
    return np.stack([x, y], axis=1)


def _spirals(n: int, rng: np.random.Generator) -> np.ndarray:
    turn = np.sqrt(rng.random(n)) * 3 * math.pi
    arm = np.where(rng.random(n) < 0.5, 0.0, math.pi)
    radius = turn / (3 * math.pi) * 2
    points = radius[:, None] * np.stack([np.cos(turn + arm), np.sin(turn + arm)], axis=1)
    return points + rng.normal(0, 0.05, (n, 2))


def _eight_gaussians(n: int, rng: np.random.Generator) -> np.ndarray:
    angle = rng.integers(0, 8, n) * (math.pi / 4)
    centers = 2 * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centers + rng.normal(0, 0.15, (n, 2))


def _pinwheel(n: int, rng: np.random.Generator) -> np.ndarray:
    arms = 5
    arm = rng.integers(0, arms, n)
    along = rng.normal(1.0, 0.3, n)
    across = rng.normal(0.0, 0.06, n)
    # Each arm bends more the further out it goes.
    angle = arm * (2 * math.pi / arms) + 0.35 * np.exp(along)
    return np.stack(
        [
            along * np.cos(angle) - across * np.sin(angle),
            along * np.sin(angle) + across * np.cos(angle),
        ],
        axis=1,
    )


def _swissroll(n: int, rng: np.random.Generator) -> np.ndarray:
    turn = 1.5 * math.pi * (1 + 2 * rng.random(n))
    points = np.stack([turn * np.cos(turn), turn * np.sin(turn)], axis=1) / 5
    return points + rng.normal(0, 0.05, (n, 2))


#: The built-in toy sets: name -> generator (descriptions live in flows.cli.listing).
TOY_SETS: dict[str, Callable[[int, np.random.Generator], np.ndarray]] = {
    "8gaussians": _eight_gaussians,
    "checkerboard": _checkerboard,
    "circles": _circles,
    "moons": _moons,
    "pinwheel": _pinwheel,
    "rings": _rings,
    "spirals": _spirals,
    "swissroll": _swissroll,
}


def toy(name: str, rows: int, seed: int = 0) -> Table:
    """Generate ``rows`` points of the built-in 2-D toy set ``name``.

    Example:
        >>> toy("8gaussians", 5, seed=1).values.shape
        (5, 2)
    """
    if name not in TOY_SETS:
        raise DataError(f"unknown data set {name!r}; built-in sets: {', '.join(TOY_SETS)}")
    if rows < 1:
        raise DataError(f"the number of samples must be at least 1, got {rows}")
    generate = TOY_SETS[name]
    values = generate(rows, np.random.default_rng(seed)).astype(np.float64)
    return Table(values, ["x", "y"], name, header=True)


# Files


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> Table:
    with path.open(newline="", encoding="utf-8-sig") as file:
        first_line = file.readline()
        file.seek(0)
        delimiter = next((d for d in ",;\t" if d in first_line), ",")
        reader = csv.reader(file, delimiter=delimiter)
        try:
            lines = [row for row in reader if any(f.strip() for f in row)]
        except csv.Error as error:
            # E.g. a stray quote whose "field" swallows the rest of the file past csv's field
            # size limit: csv.Error is no ValueError, so it would escape as a traceback.
            raise DataError(
                f"{str(path)!r} line {reader.line_num} is not valid CSV: {error}"
            ) from None
    if not lines:
        raise DataError(f"{str(path)!r} holds no rows")
    first = [field.strip() for field in lines[0]]
    header = not all(_is_number(field) or field == "" for field in first)
    names = first if header else [str(i) for i in range(len(first))]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        # Columns are chosen and recorded by name: a repeated one would be ambiguous, and a
        # checkpoint holding it could not be evaluated on its own data.
        raise DataError(
            f"{str(path)!r}: the header names column(s) {', '.join(map(repr, repeated))} more "
            "than once; give each column its own name"
        )
    body = lines[1:] if header else lines
    if not body:
        raise DataError(f"{str(path)!r} has a header but no data rows")
    values = np.empty((len(body), len(names)), dtype=np.float64)
    for r, row in enumerate(body):
        line = r + 1 + header
        if len(row) != len(names):
            raise DataError(
                f"{str(path)!r} line {line} has {len(row)} fields, expected {len(names)}"
            )
        for c, field in enumerate(row):
            field = field.strip()
            if field == "":
                values[r, c] = math.nan  # a missing value, refused or dropped like NaN
                continue
            try:
                values[r, c] = float(field)
            except ValueError:
                raise DataError(
                    f"{str(path)!r} line {line}, column {names[c]!r}: {field!r} is not a number"
                ) from None
    return Table(values, names, str(path), header=header)


def _numeric(array: np.ndarray, where: str) -> np.ndarray:
    if array.dtype.kind not in "biuf":
        raise DataError(f"{where} holds {array.dtype} values, not numbers")
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise DataError(f"{where} has shape {array.shape}; expected (rows, columns)")
    if array.shape[0] == 0:
        raise DataError(f"{where} holds no rows")
    return array.astype(np.float64)


def read_file(path: str | Path, key: str | None = None) -> Table:
    """Read a ``.csv`` (header optional), ``.npy`` or ``.npz`` (``key``) file into a table."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file {str(path)!r}")
    if path.is_dir():
        raise DataError(f"{str(path)!r} is a folder, not a data file")
    suffix = path.suffix.lower()
    where = repr(str(path))
    if suffix in (".csv", ".txt", ".tsv"):
        try:
            return _read_csv(path)
        except UnicodeDecodeError:
            raise DataError(f"{where} is not a text CSV file") from None
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            # An empty file (an interrupted np.save) raises EOFError, a .npz renamed .npy a
            # BadZipFile: neither is a ValueError, and each must be one error line, not a crash.
            raise DataError(f"{where} is not a readable .npy array: {error}") from None
        values = _numeric(array, where)
        return Table(values, [str(i) for i in range(values.shape[1])], str(path))
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                keys = list(archive.keys())
                if key is None:
                    if len(keys) != 1:
                        raise DataError(
                            f"{where} holds arrays {', '.join(keys)}; choose one with --key"
                        )
                    key = keys[0]
                if key not in keys:
                    raise DataError(f"{where} has no array {key!r}; it holds {', '.join(keys)}")
                array = archive[key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            # A truncated or corrupted archive raises BadZipFile (or EOFError when empty or cut
            # inside a member) and a flipped bit zlib.error: none is a ValueError, and each is
            # bad data to report in one line.
            if isinstance(error, DataError):
                raise
            raise DataError(f"{where} is not a readable .npz archive: {error}") from None
        values = _numeric(array, f"{where}[{key!r}]")
        return Table(values, [str(i) for i in range(values.shape[1])], f"{path}[{key}]")
    raise DataError(
        f"cannot read {where}: expected a .csv, .npy or .npz file or a built-in data set "
        f"({', '.join(TOY_SETS)})"
    )


def load_data(
    source: str, *, key: str | None = None, samples: int = 10000, seed: int = 0
) -> Table:
    """A built-in toy set by name, else the file ``source``."""
    if source in TOY_SETS:
        return toy(source, samples, seed)
    if not Path(source).suffix and not Path(source).exists():
        raise DataError(
            f"{source!r} is neither a file nor a built-in data set ({', '.join(TOY_SETS)})"
        )
    return read_file(source, key)


def parse_columns(spec: str | None) -> list[str] | None:
    """Split ``"0,2"`` or ``"x,y"`` into its parts (``None`` stays ``None``)."""
    if spec is None:
        return None
    parts = [part.strip() for part in spec.split(",")]
    if not all(parts):
        raise DataError(f"bad column list {spec!r}: expected indices or names separated by commas")
    return parts


def _column_indices(table: Table, wanted: Sequence[str], option: str) -> list[int]:
    indices = []
    for item in wanted:
        if item in table.names and (table.header or not item.lstrip("-").isdigit()):
            indices.append(table.names.index(item))
            continue
        try:
            index = int(item)
        except ValueError:
            raise DataError(
                f"{option}: no column {item!r} in {table.source} "
                f"(columns: {', '.join(table.names)})"
            ) from None
        width = len(table.names)
        if not -width <= index < width:
            raise DataError(
                f"{option}: column index {index} is out of range for {table.source}, "
                f"which has {width} column(s)"
            )
        indices.append(index % width)
    if len(set(indices)) != len(indices):
        raise DataError(f"{option}: a column is listed twice in {', '.join(wanted)}")
    return indices


def select(
    table: Table,
    columns: Sequence[str] | None = None,
    context_columns: Sequence[str] | None = None,
) -> tuple[Table, Table | None]:
    """Split a table into data columns and context columns.

    Without ``columns``, every column that is not a context column is data.

    Example:
        >>> t = Table(np.arange(6.0).reshape(2, 3), ["a", "b", "c"], "t", header=True)
        >>> x, c = select(t, context_columns=["c"])
        >>> x.names, c.names
        (['a', 'b'], ['c'])
    """
    context = (
        _column_indices(table, context_columns, "--context-columns") if context_columns else []
    )
    if columns:
        data = _column_indices(table, columns, "--columns")
        both = sorted(set(data) & set(context))
        if both:
            names = ", ".join(table.names[i] for i in both)
            raise DataError(f"column(s) {names} are both data and context columns")
    else:
        data = [i for i in range(len(table.names)) if i not in context]
    if not data:
        raise DataError(f"{table.source}: no data columns left once the context columns are taken")

    def part(indices: list[int]) -> Table:
        return Table(
            table.values[:, indices], [table.names[i] for i in indices], table.source, table.header
        )

    return part(data), (part(context) if context else None)


def row_numbers(numbers: Sequence[int] | np.ndarray, shown: int = 10) -> str:
    """The first ``shown`` row numbers and how many more, for a message.

    Example:
        >>> row_numbers([3, 7]), row_numbers(range(1, 15))
        ('3, 7', '1, 2, 3, 4, 5, 6, 7, 8, 9, 10 and 4 more')
    """
    numbers = [int(n) for n in numbers]
    more = len(numbers) - shown
    return ", ".join(map(str, numbers[:shown])) + (f" and {more} more" if more > 0 else "")


def nonfinite_rows(x: Table, c: Table | None = None) -> np.ndarray:
    """A boolean mask of the rows holding NaN or inf in ``x`` or in ``c``."""
    bad = ~np.isfinite(x.values).all(axis=1)
    if c is not None:
        bad |= ~np.isfinite(c.values).all(axis=1)
    return bad


def check_finite(
    x: Table, c: Table | None = None, *, drop: bool = False
) -> tuple[Table, Table | None, int]:
    """Refuse rows holding NaN or inf (naming them, counted from 1), or drop them.

    Returns the tables without those rows and the number of rows dropped.
    """
    bad = nonfinite_rows(x, c)
    count = int(bad.sum())
    if count == 0:
        return x, c, 0
    if not drop:
        shown = row_numbers(np.flatnonzero(bad) + 1)
        raise DataError(
            f"{x.source}: {count} row(s) hold NaN, inf or a missing value (data rows {shown}, "
            "counted from 1); fix them or pass --drop-nonfinite"
        )
    keep = ~bad
    if not keep.any():
        raise DataError(f"{x.source}: every row holds NaN, inf or a missing value")
    x = dataclasses.replace(x, values=x.values[keep])
    if c is not None:
        c = dataclasses.replace(c, values=c.values[keep])
    return x, c, count
