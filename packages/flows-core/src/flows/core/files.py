"""Writing a file whole or not at all.

:func:`atomic_path` hands out a path inside a private temporary folder beside the target
(``.NAME.XXXX.tmp``, mode 0700, so nobody reads the file before it has its final mode). When
the block succeeds the file is flushed to disk, given the permission bits of the file it
replaces (a new file keeps those it was created with, ``0o666 & ~umask`` by :func:`open`) and
renamed onto the target, so the target is always the old file or the whole new one, never a
part of it. Whatever happens the folder is removed; Ctrl-C while it is made or removed waits
until that is done (:func:`flows.core.interrupts.held`), so an interrupted write leaves
nothing behind. Only a regular file is ever replaced: a symbolic link, a folder, a pipe or a
device at the target is refused, never followed or written through.

:func:`flows.core.checkpoint.save`, :func:`flows.core.export.export` and every file the
``flows`` command writes go through here.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = Path(folder, "notes.txt")
    ...     with atomic_file(path, "w") as file:
    ...         _ = file.write("whole")
    ...     try:
    ...         with atomic_file(path, "w") as file:
    ...             _ = file.write("half")
    ...             raise RuntimeError("stopped")
    ...     except RuntimeError:
    ...         pass
    ...     print(path.read_text(), sorted(p.name for p in Path(folder).iterdir()))
    whole ['notes.txt']
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from flows.core.interrupts import held

__all__ = ["NotARegularFileError", "atomic_file", "atomic_path", "file_kind"]


class NotARegularFileError(OSError):
    """The target of a write is a symbolic link, a folder, a pipe, a device or a socket."""


def file_kind(mode: int) -> str:
    """What a file of ``stat`` mode ``mode`` is, in words: ``"a symbolic link"``, ...

    Example:
        >>> import stat
        >>> file_kind(stat.S_IFIFO | 0o644)
        'a named pipe (FIFO)'
    """
    for test, words in (
        (stat.S_ISREG, "a regular file"),
        (stat.S_ISLNK, "a symbolic link"),
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return words
    return "not a regular file"


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _commit(staged: Path, target: Path) -> None:
    """Flush ``staged`` to disk, give it the replaced file's mode, rename it onto ``target``."""
    _fsync(staged)
    try:
        st = os.lstat(target)
    except FileNotFoundError:
        # A new file keeps the mode it was created with, open()'s 0o666 & ~umask (reading the
        # umask would mean setting it, a race with other threads creating files).
        pass
    else:
        if not stat.S_ISREG(st.st_mode):
            raise NotARegularFileError(
                f"{str(target)!r} is {file_kind(st.st_mode)}; flows replaces only regular files"
            )
        os.chmod(staged, stat.S_IMODE(st.st_mode) & 0o777)
    os.replace(staged, target)
    with contextlib.suppress(OSError):  # make the rename itself durable, where folders allow
        _fsync(target.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a path to write the new ``path`` to; moved onto ``path`` only if the block succeeds.

    Raises:
        FileNotFoundError: The folder of ``path`` does not exist.
        NotARegularFileError: ``path`` exists and is not a regular file (checked when the
            block ends, so something that appeared there meanwhile is caught too); nothing
            is written then.

    Example:
        >>> import tempfile, torch
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     with atomic_path(f"{folder}/t.pt") as staged:
        ...         torch.save(torch.ones(2), staged)
        ...     torch.load(f"{folder}/t.pt")
        tensor([1., 1.])
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"cannot write {str(target)!r}: folder {str(target.parent)!r} does not exist"
        )
    folder = None
    try:
        # An interruption while the folder is made waits until its removal below is in place.
        with held():
            # The name's head only: the whole name plus the staging marks could pass the
            # file system's limit on names that the target itself keeps.
            prefix = f".{target.name[:64]}."
            folder = tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent)
        staged = Path(folder, target.name)
        yield staged
        _commit(staged, target)
    finally:
        if folder is not None:
            with held():  # and one during the removal waits until it is done
                shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb") -> Iterator[IO[Any]]:
    """Open the new ``path`` for writing; it replaces ``path`` only if the block succeeds.

    ``mode`` is :func:`open`'s, for writing (``"w"``, ``"wb"``); the rest as
    :func:`atomic_path`.
    """
    if not mode.startswith("w"):
        raise ValueError(f"mode must open the file for writing ('w', 'wb'), got {mode!r}")
    with atomic_path(path) as staged, open(staged, mode) as file:
        yield file
