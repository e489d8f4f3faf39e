"""Ctrl-C and SIGTERM held back while a cleanup is set up; SIGTERM as an exception on demand."""

from __future__ import annotations

import os
import signal
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.core import MAF, save
from flows.core.files import atomic_path
from flows.core.interrupts import Terminated, held, interrupts_raise


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


@pytest.mark.parametrize("block", [interrupts_raise, held])
def test_a_custom_ctrl_c_handler_is_left_alone(block):
    def custom(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, custom)
    try:
        with block():
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


def signal_right_after_mkdtemp(monkeypatch: pytest.MonkeyPatch, signum: int) -> None:
    """Make every ``tempfile.mkdtemp`` send ``signum`` once its folder exists."""
    make_folder = tempfile.mkdtemp

    def made_then_signalled(*args, **kwargs):
        folder = make_folder(*args, **kwargs)
        os.kill(os.getpid(), signum)
        let_handlers_run()
        return folder

    monkeypatch.setattr(tempfile, "mkdtemp", made_then_signalled)


def test_a_sigterm_while_the_temporary_folder_is_made_leaves_nothing(tmp_path, monkeypatch):
    # The race CI once hit: the signal arrived right after mkdtemp made the folder, before
    # the `try` that removes it, and the folder stayed.
    signal_right_after_mkdtemp(monkeypatch, signal.SIGTERM)
    with pytest.raises(Terminated), interrupts_raise(), atomic_path(tmp_path / "s.npy") as path:
        path.write_bytes(b"never committed")
    assert list(tmp_path.iterdir()) == []


def test_a_sigterm_while_writing_removes_the_temporary_folder(tmp_path: Path):
    with pytest.raises(Terminated), interrupts_raise(), atomic_path(tmp_path / "s.npy") as path:
        path.write_bytes(b"half")
        os.kill(os.getpid(), signal.SIGTERM)
        let_handlers_run()
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_inside_a_held_block_waits_in_library_code(default_ctrl_c):
    # No interrupts_raise here: a library call, Python's own Ctrl-C handler in place.
    done = []
    with pytest.raises(KeyboardInterrupt), held():
        assert signal.getsignal(signal.SIGINT) is not signal.default_int_handler
        os.kill(os.getpid(), signal.SIGINT)
        let_handlers_run()
        done.append("finished")
    assert done == ["finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_held_in_another_thread_holds_nothing_back(default_ctrl_c):
    # Signals interrupt the main thread only: a worker's held block must not delay them.
    inside, release = threading.Event(), threading.Event()

    def worker():
        with held():
            inside.set()
            release.wait(10)

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(10)
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            let_handlers_run()
    finally:
        release.set()
        thread.join()


def test_ctrl_c_while_save_makes_its_folder_leaves_nothing(
    tmp_path, monkeypatch, default_ctrl_c, device
):
    signal_right_after_mkdtemp(monkeypatch, signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        save(MAF(features=2, transforms=1, hidden_features=[4]).to(device), tmp_path / "flow.pt")
    assert list(tmp_path.iterdir()) == []
