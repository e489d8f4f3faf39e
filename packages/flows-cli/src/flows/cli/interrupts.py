"""SIGTERM and Ctrl-C as exceptions, which wait while a cleanup is being put in place.

While a command runs (:func:`interrupts_raise`), SIGTERM raises :class:`Terminated` and Ctrl-C
:class:`KeyboardInterrupt`, so every ``finally`` runs and a killed command removes its
temporary files. Python runs a signal's handler between any two bytecodes, so an exception
could also arrive after a temporary folder was made and before the ``try`` that removes it
was entered. Inside :func:`held`, the handlers only note the signal; its exception is raised
when the outermost held block ends, where the cleanup is in place.

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
    """SIGTERM arrived while a command ran (raised by the handler of :func:`interrupts_raise`).

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


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Within the block, an interruption waits: it is raised when the outermost block ends.

    For the few statements that make something and put its cleanup in place, not for work
    that takes time: a held SIGTERM or Ctrl-C is not answered until the block ends.
    """
    _HOLDING.depth += 1
    try:
        yield
    finally:
        _HOLDING.depth -= 1
    if not _HOLDING.depth and _HOLDING.pending is not None:
        error, _HOLDING.pending = _HOLDING.pending, None
        raise error


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` and Ctrl-C ``KeyboardInterrupt``.

    Both wait out :func:`held` blocks. Ctrl-C's handler is replaced only where it is Python's
    default; in any thread but the main one (where no handler can be set) this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        _interrupt(Terminated("SIGTERM"))

    def on_sigint(signum: int, frame: Any) -> None:
        _interrupt(KeyboardInterrupt())

    previous_sigterm = signal.signal(signal.SIGTERM, on_sigterm)
    previous_sigint = signal.getsignal(signal.SIGINT)
    if previous_sigint is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_sigint)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous_sigterm)
        if previous_sigint is signal.default_int_handler:
            signal.signal(signal.SIGINT, previous_sigint)
        _HOLDING.pending = None
