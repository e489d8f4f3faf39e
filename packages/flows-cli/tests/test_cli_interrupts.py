"""SIGTERM and Ctrl-C as exceptions while a command runs, held back while a cleanup is set up."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.cli.interrupts import Terminated, held, interrupts_raise
from flows.cli.outputs import atomic_path


def let_handlers_run() -> None:
    for _ in range(1000):  # Python runs a signal's handler between bytecodes
        pass


@pytest.fixture
def default_ctrl_c() -> Iterator[None]:
    # Python's own Ctrl-C handler, as a command in a terminal starts with: a process started in
    # the background inherits Ctrl-C ignored, and Python then leaves it so.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize(
    ("signum", "raised"), [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)]
)
def test_interrupts_raise_within_the_block_only(signum, raised, default_ctrl_c):
    before = signal.getsignal(signum)
    with pytest.raises(raised), interrupts_raise():
        os.kill(os.getpid(), signum)
        let_handlers_run()
    assert signal.getsignal(signum) == before
    assert not issubclass(Terminated, Exception)  # no `except Exception` swallows it


def test_interrupts_raise_does_nothing_outside_the_main_thread():
    seen = []

    def worker():
        with interrupts_raise():
            seen.append(signal.getsignal(signal.SIGTERM))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [before]


def test_a_custom_ctrl_c_handler_is_left_alone():
    def custom(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, custom)
    try:
        with interrupts_raise():
            assert signal.getsignal(signal.SIGINT) is custom
    finally:
        signal.signal(signal.SIGINT, previous)


def test_an_interruption_waits_for_the_outermost_held_block():
    done = []
    with pytest.raises(Terminated), interrupts_raise(), held():
        with held():
            os.kill(os.getpid(), signal.SIGTERM)
            let_handlers_run()
            done.append("inner")
        let_handlers_run()
        done.append("outer")
    assert done == ["inner", "outer"]


def test_a_sigterm_while_the_temporary_folder_is_made_leaves_nothing(tmp_path, monkeypatch):
    # The race CI once hit: the signal arrived right after mkdtemp made the folder, before
    # the `try` that removes it, and the folder stayed.
    make_folder = tempfile.mkdtemp

    def made_then_killed(*args, **kwargs):
        folder = make_folder(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        let_handlers_run()
        return folder

    monkeypatch.setattr(tempfile, "mkdtemp", made_then_killed)
    with pytest.raises(Terminated), interrupts_raise(), atomic_path(tmp_path / "s.npy") as path:
        path.write_bytes(b"never committed")
    assert list(tmp_path.iterdir()) == []


def test_a_sigterm_while_writing_removes_the_temporary_folder(tmp_path: Path):
    with pytest.raises(Terminated), interrupts_raise(), atomic_path(tmp_path / "s.npy") as path:
        path.write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGTERM)
        let_handlers_run()
    assert list(tmp_path.iterdir()) == []
