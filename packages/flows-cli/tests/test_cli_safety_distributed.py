"""A stopped data-parallel process makes the others fail with one line, not wait forever.

The two processes are started the way `torchrun` starts its workers (RANK, WORLD_SIZE,
MASTER_ADDR, ... in the environment), but by the test itself, so that it knows which process
is which rank and can stop rank 1 with SIGSTOP once both are in the group. A tiny wrapper
imports torch and the command first and waits for a go-ahead, so both processes reach the
rendezvous together however slowly the machine imports torch: `--dist-timeout 5` then bounds
only the wait on the stopped process.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

WRAPPER = """
import pathlib
import sys
import time

import torch  # noqa: F401  (the slow import, before the rendezvous)

from flows.cli.main import main

ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.05)
sys.exit(main(sys.argv[3:]))
"""

ARGS = [
    "fit",
    "moons",
    "--flow",
    "maf",
    "--transforms",
    "1",
    "--hidden",
    "8",
    "--samples",
    "200",
    "--batch-size",
    "64",
    "--validation",
    "0",  # no early stopping: training outlasts the test by far
    "--epochs",
    "1000000",
    "--no-plot",
    "--dist-timeout",
    "5",
    "--out",
    "m.pt",
]


def test_a_stopped_process_ends_the_other_with_one_line(tmp_path: Path, free_port: int):
    wrapper = tmp_path / "wrapper.py"
    wrapper.write_text(textwrap.dedent(WRAPPER))
    work = tmp_path / "work"
    work.mkdir()
    go = tmp_path / "go"
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port),
        "WORLD_SIZE": "2",
        "LOCAL_WORLD_SIZE": "2",
    }
    processes = [
        subprocess.Popen(
            [sys.executable, str(wrapper), str(tmp_path / f"ready{rank}"), str(go), *ARGS],
            cwd=work,
            env={**environment, "RANK": str(rank), "LOCAL_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if rank == 0 else subprocess.DEVNULL,
            text=True,
        )
        for rank in (0, 1)
    ]
    first, second = processes
    try:
        deadline = time.monotonic() + 240
        while not all((tmp_path / f"ready{rank}").exists() for rank in (0, 1)):
            assert all(p.poll() is None for p in processes), "a process ended before the start"
            assert time.monotonic() < deadline, "the processes did not import torch in time"
            time.sleep(0.05)
        go.touch()
        # Rank 0 announces the fit once both processes are in the group and the flow is built.
        announcement = first.stderr.readline()
        assert announcement.startswith("fitting maf"), announcement
        os.kill(second.pid, signal.SIGSTOP)

        out, err = first.communicate(timeout=240)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()  # SIGKILL ends a stopped process too
            process.communicate()

    assert first.returncode == 1, err
    assert "Traceback" not in err
    assert err.splitlines() == [
        "flows: error: another data-parallel process did not answer within --dist-timeout 5 "
        "seconds (it stopped, hung or is much slower); raise --dist-timeout if it is only slow"
    ]
    assert "train NLL" not in out
    assert list(work.iterdir()) == []
