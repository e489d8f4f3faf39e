"""Ctrl-C and SIGTERM that wait while a cleanup is being put in place.

Python runs a signal's handler between any two bytecodes, so ``KeyboardInterrupt`` can arrive
after a temporary file was made and before the ``try`` that removes it is entered, and the file
stays. Inside :func:`held` an interruption is only noted; it is raised when the outermost held
block ends, where the cleanup is in place. :mod:`flows.core.files` holds the few statements
that make and remove its temporary folder this way, in the library as in the ``flows``
command.

A command also wants SIGTERM, whose default is to end the process on the spot, as an
exception, so that every ``finally`` runs: within :func:`interrupts_raise` SIGTERM raises
:class:`Terminated` (and waits out held blocks like Ctrl-C).

Example:
    >>> import os, signal
    >>> with interrupts_raise():
    ...     try:
    ...         with held():
    ...             os.kill(os.getpid(), signal.SIGTERM)
    ...             print("made the folder")
    ...     except Terminated:
    ...         print("then terminated")
    made the folder
    then terminated
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["Terminated", "held", "interrupts_raise"]


class Terminated(BaseException):
    """SIGTERM arrived within :func:`interrupts_raise` (raised by its handler).

    A :class:`BaseException`, as :class:`KeyboardInterrupt`, so that no ``except Exception``
    swallows it, while every ``finally`` and ``except BaseException`` cleanup runs.
    """


class _Holding:
    """How many :func:`held` blocks are open, and the interruption that arrived inside them."""

    def __init__(self) -> None:
        self.depth = 0
        self.pending: BaseException | None = None


_HOLDING = _Holding()


def _interrupt(error: BaseException) -> None:
    if _HOLDING.depth:
        _HOLDING.pending = _HOLDING.pending or error
        return
    raise error


def _on_sigint(signum: int, frame: Any) -> None:
    _interrupt(KeyboardInterrupt())


def _on_sigterm(signum: int, frame: Any) -> None:
    _interrupt(Terminated("SIGTERM"))


def _in_main_thread() -> bool:
    # Python delivers signals to the main thread only, and only there can handlers be set.
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Within the block, Ctrl-C (and SIGTERM within :func:`interrupts_raise`) waits.

    The interruption is raised when the outermost held block ends. For the few statements that
    make something and put its cleanup in place, not for work that takes time: a held
    interruption is not answered until the block ends. Where Ctrl-C has Python's default
    handler, the block puts a waiting one in its place and restores the default after; a
    handler of the program's own is left alone. Outside the main thread, which signals never
    interrupt, the block does nothing.
    """
    if not _in_main_thread():
        yield
        return
    replace_ctrl_c = not _HOLDING.depth and signal.getsignal(signal.SIGINT) is (
        signal.default_int_handler
    )
    if replace_ctrl_c:
        try:
            signal.signal(signal.SIGINT, _on_sigint)
        except ValueError:  # a subinterpreter's main thread, where no handler can be set
            replace_ctrl_c = False
    _HOLDING.depth += 1
    try:
        yield
    finally:
        _HOLDING.depth -= 1
        if replace_ctrl_c:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if not _HOLDING.depth and _HOLDING.pending is not None:
        error, _HOLDING.pending = _HOLDING.pending, None
        raise error


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` and Ctrl-C ``KeyboardInterrupt``.

    Both wait out :func:`held` blocks. Ctrl-C's handler is replaced only where it is Python's
    default; in any thread but the main one (where no handler can be set) this does nothing.
    """
    if not _in_main_thread():
        yield
        return
    previous_sigterm = signal.signal(signal.SIGTERM, _on_sigterm)
    previous_sigint = signal.getsignal(signal.SIGINT)
    if previous_sigint is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        if previous_sigint is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous_sigint)
        _HOLDING.pending = None
