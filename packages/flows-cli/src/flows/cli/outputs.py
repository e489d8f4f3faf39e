"""Writing output files whole or not at all, and the PNG of data beside samples."""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_file", "check_output_path", "plot_pair", "write_table"]


def check_output_path(path: str | os.PathLike[str], option: str) -> Path:
    """Refuse, before any work is done, an output path whose folder does not exist."""
    path = Path(path)
    if path.is_dir():
        raise OSError(f"{option} {str(path)!r} is a folder; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise OSError(f"{option} {str(path)!r}: folder {str(folder)!r} does not exist")
    return path


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; move it onto ``path`` only if the block succeeds."""
    path = Path(path)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, mode) as file:
            yield file
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(temporary, 0o666 & ~mask)  # mkstemp makes it private; be an ordinary file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _csv_text(values: Any, names: Sequence[str]) -> str:
    buffer = io.StringIO()
    buffer.write(",".join(names) + "\n")
    for row in values:
        buffer.write(",".join(repr(float(v)) for v in row) + "\n")
    return buffer.getvalue()


def write_table(values: Any, names: Sequence[str], path: str | None, stdout: IO[str]) -> None:
    """Write rows as CSV with a header to ``stdout`` (no path) or to a ``.csv``/``.npy`` file."""
    import numpy as np

    if path is None:
        stdout.write(_csv_text(values, names))
        stdout.flush()
        return
    suffix = Path(path).suffix.lower()
    if suffix == ".npy":
        with atomic_file(path) as file:
            np.save(file, np.asarray(values))
    elif suffix in (".csv", ".txt"):
        with atomic_file(path, "w") as file:
            file.write(_csv_text(values, names))
    else:
        raise ValueError(f"--out {path!r}: expected a .csv or .npy file name")


def plot_pair(
    data: Any, samples: Any, names: Sequence[str], title: str, path: str | os.PathLike[str]
) -> str | None:
    """Save a PNG with the data on the left and the samples on the right, on the same axes.

    Returns ``None``, or a note saying why no picture was drawn (matplotlib missing).
    """
    try:
        import matplotlib
    except ImportError:
        return "matplotlib is not installed, so no plot was drawn (pip install 'flows-cli[plot]')"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    low = np.quantile(data, 0.001, axis=0)
    high = np.quantile(data, 0.999, axis=0)
    pad = 0.1 * (high - low)
    low, high = low - pad, high + pad

    ratio = float(np.clip((high[1] - low[1]) / (high[0] - low[0]), 0.3, 3.0))
    figure, axes = plt.subplots(1, 2, figsize=(10, 5 * ratio + 1.2), sharex=True, sharey=True)
    bins = 120
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
    save: Callable[..., Any] = figure.savefig
    with atomic_file(path) as file:
        save(file, format="png", dpi=80)
    plt.close(figure)
    return None
