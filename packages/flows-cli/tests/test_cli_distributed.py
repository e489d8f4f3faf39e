"""`torchrun --nproc-per-node 2 -m flows.cli fit` takes the same steps as one process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import torch

from flows.cli.main import main
from flows.core.checkpoint import load

ARGS = [
    "--flow",
    "maf",
    "--transforms",
    "1",
    "--hidden",
    "8",
    "--epochs",
    "2",
    "--batch-size",
    "64",
    "--seed",
    "0",
    "--no-plot",
    "--samples",
    "300",
]


def test_torchrun_two_processes_match_one(
    tmp_path: Path, tmp_path_factory, capsys, free_port: int
):
    # torchrun's agent leaves a log folder in the temporary directory: keep it in pytest's.
    scratch = tmp_path_factory.mktemp("torchrun")
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    result = subprocess.run(
        [
            torchrun,
            "--nnodes",
            "1",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            str(free_port),
            "-m",
            "flows.cli",
            "fit",
            "moons",
            *ARGS,
            "--out",
            str(tmp_path / "double.pt"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        # PYTHONFAULTHANDLER: a process that dies of a signal (one SIGABRT, "terminate called
        # without an active exception", was seen once under heavy load) prints every thread's
        # Python stack, so the failure says where it was.
        env={
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "TMPDIR": str(scratch),
            "PYTHONFAULTHANDLER": "1",
        },
    )
    assert result.returncode == 0, result.stderr
    # Only rank 0 prints its summary and writes.
    assert result.stdout.count("train NLL") == 1 and "(2 processes)" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["double.pt"]

    assert main(["fit", "moons", *ARGS, "--out", str(tmp_path / "single.pt")]) == 0
    single, double = load(tmp_path / "single.pt"), load(tmp_path / "double.pt")
    assert single.extra["steps"] == double.extra["steps"] == 10  # 270 rows, batches of 64
    first, second = single.flow.state_dict(), double.flow.state_dict()
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(second[key], first[key], rtol=1e-4, atol=1e-5)
    # Training moved the weights: the comparison is not between two untouched networks.
    torch.manual_seed(0)
    fresh = type(single.flow)(**single.arguments).state_dict()
    assert any(not torch.allclose(fresh[k], first[k]) for k in first if k.endswith("weight"))
