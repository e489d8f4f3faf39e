"""A fit on two processes ends with one set of weights when the flow has ActNorm or BatchNorm.

ActNorm initialises itself from the first batch it sees and BatchNorm keeps running statistics
of the batches it sees; under :mod:`torch.distributed` each process sees its share of every
batch, so :func:`flows.core.fit` must bring them together. Two processes are spawned with gloo,
as ``torchrun`` would start them.
"""

from __future__ import annotations

import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import torch

SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from flows.core import ActNorm, BatchNorm, Flow
    from flows.core.distributions import DiagNormal
    from flows.core.lazy import UnconditionalDistribution
    from flows.core.layers import MaskedAutoregressiveTransform
    from flows.core.training import fit

    def make(batchnorm, seed):
        torch.manual_seed(seed)
        layers = [ActNorm(2), MaskedAutoregressiveTransform(2, hidden_features=(8,))]
        if batchnorm:
            layers.insert(1, BatchNorm(2))
        base = UnconditionalDistribution(
            DiagNormal, torch.zeros(2), torch.ones(2), buffer=True
        )
        return Flow(layers, base).double()

    def data():
        g = torch.Generator().manual_seed(0)
        return torch.randn(90, 2, generator=g, dtype=torch.float64) * 3 + 1

    def train(batchnorm, seed):
        flow = make(batchnorm, seed)
        fit(flow, data(), epochs=2, batch_size=16, lr=1e-2, seed=5)
        return flow.state_dict()

    def run(rank, world, port, out):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        states = {bn: train(bn, seed=rank) for bn in (False, True)}
        torch.save(states, f"{out}.{rank}")
        dist.barrier()  # no rank tears gloo down while another still uses it
        dist.destroy_process_group()

    if __name__ == "__main__":
        world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
        mp.spawn(run, args=(world, port, out), nprocs=world)
    """
)


def _spawn(tmp_path: Path, port: int) -> tuple[dict, dict, dict]:
    script = tmp_path / "ddp_norms.py"
    script.write_text(SCRIPT)
    out = tmp_path / "states.pt"
    subprocess.run(
        [sys.executable, str(script), "2", str(port), str(out)],
        check=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    first, second = (torch.load(f"{out}.{rank}", weights_only=True) for rank in (0, 1))
    return first, second, runpy.run_path(str(script))


def test_two_processes_end_with_the_same_actnorm_and_batchnorm_state(
    tmp_path: Path, free_port: int
):
    first, second, code = _spawn(tmp_path, free_port)
    for batchnorm in (False, True):
        zero, one = first[batchnorm], second[batchnorm]
        assert zero.keys() == one.keys()
        assert bool(zero["transform.transforms.0.initialized"])
        for key in zero:
            assert torch.equal(zero[key], one[key]), (batchnorm, key)
    assert "transform.transforms.1.running_mean" in first[True]
    # The statistics moved away from their start (zero mean, unit variance), towards the data's.
    running = first[True]["transform.transforms.1.running_mean"]
    assert running.abs().min() > 1e-3

    # Without BatchNorm, ActNorm is initialised from the whole first batch and the two
    # processes take the steps one process takes on the same global batches.
    single = code["train"](False, seed=0)
    for key, value in single.items():
        torch.testing.assert_close(first[False][key], value, rtol=1e-9, atol=1e-11)
