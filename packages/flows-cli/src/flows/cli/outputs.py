"""Where the ``flows`` command may write, and writing there whole or not at all.

Every command that writes files (``fit``, ``sample``, ``eval``, ``export``) first lists them in one
:class:`OutputPlan`, before any model is loaded or trained, and the plan refuses an output that
would destroy something:

1. an input of the same command (the DATA file, the MODEL checkpoint, a ``--context`` file),
   compared as files (:func:`os.path.samefile`), so ``./d.csv``, a symbolic link to it and a
   hard link to it are all caught;
2. another output of the same command (``--out`` and ``--plot``, its default included);
3. an existing path that is not a regular file: a symbolic link (refused, never followed), a
   folder, a named pipe, a device, a socket;
4. a read-only file, or a folder that is missing or not writable;
5. an existing file that flows cannot tell it wrote as that same kind of output, unless
   ``--force`` is given. A checkpoint carries the ``flows-checkpoint`` tag, a plot the PNG text
   ``Software: flows-cli ...``, an exported model the ONNX producer ``flows-core`` or the
   ``flows.json`` of a ``torch.export`` archive; CSV and ``.npy`` tables carry no mark, so
   replacing one always needs ``--force``. Rerunning ``flows fit moons`` thus replaces its own
   ``flow.pt`` and ``flow.png``, and nothing else is replaced unasked.

The files are then written whole or not at all by :mod:`flows.core.files`: the target is the
old file or the whole new one, never a part, and keeps its permission bits. While a command
runs, SIGTERM and Ctrl-C are exceptions (:func:`flows.core.interrupts.interrupts_raise`), so
the temporary files are removed when the command is killed too.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from flows.cli.outputs import OutputError, OutputPlan, write_table
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     data = Path(folder, "d.csv")
    ...     _ = data.write_text("x,y\\n1,2\\n")
    ...     plan = OutputPlan(inputs={"DATA": data})
    ...     out = plan.add("--out", Path(folder, "s.csv"), "table")
    ...     write_table([[0.5, 1.0]], ["x", "y"], str(out), None)
    ...     print(out.read_text(), end="")
    ...     for option, path, kind in (
    ...         ("--out", f"{folder}/./d.csv", "table"),
    ...         ("--plot", out, "plot"),
    ...     ):
    ...         try:
    ...             plan.add(option, path, kind)
    ...         except OutputError as error:
    ...             print(str(error).replace(folder + "/", ""))
    x,y
    0.5,1.0
    --out './d.csv' is the same file as DATA 'd.csv', an input of this command; choose another name
    --plot 's.csv' is the same file as --out 's.csv'; choose another name
"""

from __future__ import annotations

import contextlib
import io
import os
import stat
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Literal

from flows.cli.arguments import CLIError
from flows.core.files import atomic_file, file_kind

__all__ = [
    "PLOT_SOFTWARE",
    "OutputError",
    "OutputPlan",
    "is_flows_checkpoint",
    "is_flows_export",
    "is_flows_plot",
    "plot_pair",
    "write_rows",
    "write_table",
]

Kind = Literal["checkpoint", "plot", "table", "model"]

#: The PNG ``Software`` text of every plot flows draws: how a rerun knows it may replace one.
PLOT_SOFTWARE = "flows-cli"
#: ``flows.core.checkpoint.FORMAT``, repeated so that recognizing a checkpoint needs no torch.
CHECKPOINT_TAG = "flows-checkpoint"
TABLE_SUFFIXES = (".csv", ".txt", ".npy")
#: ``flows.core.export.formats.PRODUCER``, the ``producer_name`` of the ONNX models flows writes.
EXPORT_PRODUCER = b"flows-core"

_WHAT = {
    "checkpoint": "a flows checkpoint",
    "plot": "a plot drawn by flows",
    "model": "a model exported by flows",
}


class OutputError(CLIError):
    """An output path the command refuses to write; the message names it and how to proceed."""


def is_flows_checkpoint(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` starts as a checkpoint written by ``flows.core.save``.

    Reads only the first strings of the outer pickle inside the torch zip archive, without
    unpickling anything: enough to recognize the format tag, not to vouch for the contents.
    """
    import pickletools  # here, so that the listing commands, which import this module via
    import zipfile  # flows.cli.main, do not pay for them

    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            if name is None:
                return False
            with archive.open(name) as file:
                head = file.read(4096)
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    strings: list[str] = []
    try:
        for _, argument, _ in pickletools.genops(io.BytesIO(head)):
            if isinstance(argument, str):
                strings.append(argument)
                if len(strings) == 2:
                    break
    except Exception:  # the head is cut mid-opcode or is not a pickle: what was read decides
        pass
    return strings == ["format", CHECKPOINT_TAG]


def is_flows_plot(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a PNG whose ``Software`` text (before the image data) names flows."""
    try:
        with open(path, "rb") as file:
            if file.read(8) != b"\x89PNG\r\n\x1a\n":
                return False
            while True:
                header = file.read(8)
                if len(header) < 8:
                    return False
                size, kind = struct.unpack(">I4s", header)
                if kind in (b"IDAT", b"IEND") or size > 1 << 16:
                    return False
                body = file.read(size + 4)[:size]  # and the CRC
                if kind == b"tEXt":
                    keyword, _, text = body.partition(b"\0")
                    if keyword == b"Software":
                        return text.decode("latin-1").startswith(PLOT_SOFTWARE)
    except OSError:
        return False


def is_flows_export(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a model ``flows.core.export`` wrote: ONNX or ``torch.export``.

    An ONNX model names its producer in its first bytes (after the IR version); a pt2 archive
    holds the extra file ``flows.json``. Nothing is parsed beyond that.
    """
    import zipfile

    try:
        with open(path, "rb") as file:
            head = file.read(64)
        if head.startswith(b"PK"):
            with zipfile.ZipFile(path) as archive:
                return any(n.endswith("/extra/flows.json") for n in archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    # ModelProto: field 1, the IR version (a varint), then field 2, the producer's name.
    if not head.startswith(b"\x08"):
        return False
    end = 1
    while end < len(head) and head[end] & 0x80:
        end += 1
    name = b"\x12" + bytes([len(EXPORT_PRODUCER)]) + EXPORT_PRODUCER
    return head[end + 1 : end + 1 + len(name)] == name


def _same_file(a: Path, b: Path) -> bool:
    """Whether two names denote one file: the same inode if both exist, else one real path."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


class OutputPlan:
    """The files one command will write, each refused before any work if it would harm.

    :meth:`add` checks an output against the inputs, against the outputs added before it and
    against what is on disk (rules 1 to 5 of this module), and returns its path.

    Arguments:
        force: Replace existing files that flows cannot tell it wrote (``--force``).
        inputs: The files the command reads, by name (``{"DATA": path, "MODEL": path}``), or
            a list of files under one name (the images of a DATA folder); a ``None`` or a
            name that is no existing file (a built-in data set) is skipped.
    """

    def __init__(
        self,
        *,
        force: bool = False,
        inputs: Mapping[str, str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None]
        | None = None,
    ) -> None:
        self.force = force
        # (label, path) pairs: a folder's files are inputs as much as a single file is, and
        # all of them are protected under the one label.
        self.inputs: list[tuple[str, str]] = []
        for label, given in (inputs or {}).items():
            if given is None:
                continue
            paths = [given] if isinstance(given, (str, os.PathLike)) else list(given)
            self.inputs += [(label, os.fspath(path)) for path in paths if os.path.isfile(path)]
        self.outputs: list[tuple[str, Path, str]] = []

    def add(
        self, option: str, path: str | os.PathLike[str], kind: Kind, *, default: bool = False
    ) -> Path:
        """Check one output and record it.

        Arguments:
            option: The option that names it, for messages (``"--out"``).
            path: The file to write.
            kind: ``"checkpoint"``, ``"plot"``, ``"table"`` (a ``.csv``/``.npy`` file) or
                ``"model"`` (an exported ONNX model or ``torch.export`` program).
            default: The path was not given but derived (the plot beside the checkpoint).

        Returns:
            ``path`` as a :class:`~pathlib.Path`.

        Raises:
            OutputError: The output would destroy an input, another output or a file flows
                did not write (without ``force``), is no regular file, or cannot be written.
        """
        shown = os.fspath(path)  # as given: Path() would drop a leading "./"
        path = Path(path)
        name = f"{option} {shown!r}" + (" (its default)" if default else "")
        fix = f"give {option} another name" if default else "choose another name"

        try:
            st: os.stat_result | None = os.lstat(path)
        except FileNotFoundError:
            st = None
        except OSError as error:  # a folder on the way is a file, or is unreadable
            raise OutputError(f"{name}: {error.strerror}") from None

        if st is not None:
            for label, source in self.inputs:
                with contextlib.suppress(OSError):  # a dangling link is no input
                    if os.path.samefile(path, source):
                        raise OutputError(
                            f"{name} is the same file as {label} {source!r}, an input of this "
                            f"command; {fix}"
                        )
        for other, other_path, other_shown in self.outputs:
            if _same_file(path, other_path):
                raise OutputError(f"{name} is the same file as {other} {other_shown!r}; {fix}")

        if st is not None and not stat.S_ISREG(st.st_mode):
            if stat.S_ISDIR(st.st_mode):
                raise OutputError(f"{name} is a folder; give a file name")
            raise OutputError(
                f"{name} is {file_kind(st.st_mode)}; flows writes only regular files: {fix}"
            )

        if kind == "table" and path.suffix.lower() not in TABLE_SUFFIXES:
            raise OutputError(f"{option} {shown!r}: expected a .csv or .npy file name")

        folder = path.parent
        if not folder.is_dir():
            what = "is not a folder" if folder.exists() else "does not exist"
            raise OutputError(f"{name}: folder {str(folder)!r} {what}")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"{name}: folder {str(folder)!r} is not writable")

        if st is not None:
            if not st.st_mode & 0o222 or not os.access(path, os.W_OK):
                raise OutputError(f"{name} is read-only; make it writable or {fix}")
            if not self.force and not _recognized(path, kind):
                what = f" and is not {_WHAT[kind]}" if kind in _WHAT else ""
                raise OutputError(f"{name} exists{what}; pass --force to replace it")

        self.outputs.append((option, path, shown))
        return path


def _recognized(path: Path, kind: Kind) -> bool:
    if kind == "checkpoint":
        return is_flows_checkpoint(path)
    if kind == "plot":
        return is_flows_plot(path)
    if kind == "model":
        return is_flows_export(path)
    return False  # CSV and .npy files carry no mark of who wrote them


def _csv_rows(values: Any) -> str:
    import numpy as np

    rows = np.asarray(values, dtype=np.float64).tolist()
    return "".join(",".join(map(repr, row)) + "\n" for row in rows)


def write_rows(
    chunks: Iterable[Any], names: Sequence[str], rows: int, path: str | None, stdout: IO[str]
) -> None:
    """Write blocks of rows as CSV with a header to ``stdout`` (no path) or a ``.csv``/``.npy``.

    One block is in memory at a time: CSV is written block by block, and a ``.npy`` file gets
    the header of its final shape ``(rows, len(names))`` first, then each block's float64 bytes.

    Raises:
        ValueError: ``path`` is no ``.csv``/``.txt``/``.npy`` name, or the blocks do not hold
            ``rows`` rows of ``len(names)`` values.
    """
    import numpy as np

    header = ",".join(names) + "\n"
    if path is None:
        stdout.write(header)
        for chunk in chunks:
            stdout.write(_csv_rows(chunk))
            stdout.flush()
        stdout.flush()
        return
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".txt"):
        with atomic_file(path, "w") as file:
            file.write(header)
            for chunk in chunks:
                file.write(_csv_rows(chunk))
        return
    if suffix != ".npy":
        raise ValueError(f"--out {path!r}: expected a .csv or .npy file name")
    dtype = np.dtype("<f8")
    with atomic_file(path) as file:
        np.lib.format.write_array_header_1_0(
            file,
            {
                "descr": np.lib.format.dtype_to_descr(dtype),
                "fortran_order": False,
                "shape": (rows, len(names)),
            },
        )
        written = 0
        for chunk in chunks:
            block = np.ascontiguousarray(chunk, dtype=dtype)
            if block.ndim != 2 or block.shape[1] != len(names):
                raise ValueError(f"a block of shape {block.shape} for {len(names)} columns")
            file.write(block.tobytes())
            written += block.shape[0]
        if written != rows:
            raise ValueError(f"{written} rows were written to {path!r}, {rows} announced")


def write_table(values: Any, names: Sequence[str], path: str | None, stdout: IO[str]) -> None:
    """Write rows as CSV with a header to ``stdout`` (no path) or to a ``.csv``/``.npy`` file."""
    write_rows([values], names, len(values), path, stdout)


def plot_pair(
    data: Any, samples: Any, names: Sequence[str], title: str, path: str | os.PathLike[str]
) -> str | None:
    """Save a PNG with the data on the left and the samples on the right, on the same axes.

    Returns ``None``, or a note saying why no picture was drawn (matplotlib missing, data too
    wide to draw).
    """
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed, so no plot was drawn (pip install 'flows-cli[plot]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from flows.cli import __version__

    # The plot is drawn after the checkpoint is written: a plot that cannot be drawn is a note,
    # not a failure. Data may span more than the largest double (the Standardizer copes), so
    # the range is computed from halves, where ``high - low`` would overflow to inf.
    with np.errstate(over="ignore", invalid="ignore"):
        low = np.quantile(data, 0.001, axis=0)
        high = np.quantile(data, 0.999, axis=0)
        middle, half = low / 2 + high / 2, 1.2 * (high / 2 - low / 2)  # 10% padding each side
        low, high = middle - half, middle + half
        span = high - low
    if not (np.isfinite(low).all() and np.isfinite(high).all() and np.isfinite(span).all()):
        return "the data span more than the largest float, so no plot was drawn"

    ratio = float(np.clip(span[1] / span[0], 0.3, 3.0))
    figure, axes = plt.subplots(1, 2, figsize=(10, 5 * ratio + 1.2), sharex=True, sharey=True)
    bins = 120
    try:
        for ax, points, label in ((axes[0], data, "data"), (axes[1], samples, "flow samples")):
            ax.hist2d(
                points[:, 0],
                points[:, 1],
                bins=bins,
                range=[[low[0], high[0]], [low[1], high[1]]],
                cmap="viridis",
            )
            ax.set_title(f"{label} ({len(points)} points)")
            ax.set_xlabel(names[0])
            ax.set_aspect("equal")
        axes[0].set_ylabel(names[1])
        figure.suptitle(title)
        figure.tight_layout()
    except (ValueError, ArithmeticError) as error:
        plt.close(figure)
        return f"no plot was drawn: {' '.join(str(error).split())}"
    save: Callable[..., Any] = figure.savefig
    try:
        with atomic_file(path) as file:
            save(
                file,
                format="png",
                dpi=80,
                metadata={"Software": f"{PLOT_SOFTWARE} {__version__}"},
            )
    finally:
        plt.close(figure)
    return None
