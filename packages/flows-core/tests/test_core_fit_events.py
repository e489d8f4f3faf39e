"""Tests of flows.core.training.fit on events of any rank and with dequantization."""

from __future__ import annotations

import json
import os
import runpy
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

from flows.core.training import fit


class Gaussian(nn.Module):
    """A diagonal Gaussian over events of ``shape``; it records what ``log_prob`` is given."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))
        self.seen: list[tuple[bool, torch.Tensor]] = []

    def forward(self) -> Independent:
        module = self

        class Recorded(Independent):
            def log_prob(self, value: torch.Tensor) -> torch.Tensor:
                module.seen.append((module.training, value.detach().clone()))
                return super().log_prob(value)

        return Recorded(Normal(self.loc, self.log_scale.exp()), len(self.loc.shape))


def test_fit_takes_image_events_as_it_takes_their_rows(dtype, device):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(40, 1, 2, 3, generator=generator, dtype=dtype).to(device) * 2 + 1
    options = dict(epochs=3, batch_size=8, lr=0.05, seed=3)
    as_images = Gaussian((1, 2, 3)).to(device=device, dtype=dtype)
    as_rows = Gaussian((6,)).to(device=device, dtype=dtype)
    result = fit(as_images, images, **options)
    expected = fit(as_rows, images.flatten(1), **options)
    # The same split, batches and steps: the same weights and NLLs, bit for bit.
    assert torch.equal(as_images.loc.flatten(), as_rows.loc)
    assert torch.equal(as_images.log_scale.flatten(), as_rows.log_scale)
    assert (result.train_nll, result.val_nll, result.steps) == (
        expected.train_nll,
        expected.val_nll,
        expected.steps,
    )
    assert [h["val_nll"] for h in result.history] == [h["val_nll"] for h in expected.history]


def test_fit_names_the_image_rows_that_are_not_finite(device):
    images = torch.zeros(5, 1, 2, 2, device=device)
    images[3, 0, 1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"^x holds NaN or inf in row\(s\) 3 of 5; remove"):
        fit(Gaussian((1, 2, 2)).to(device), images, epochs=1)
    with pytest.raises(ValueError, match=r"x must have shape \(rows, features\) with rows >= 1"):
        fit(Gaussian((1,)).to(device), torch.zeros(5, device=device), epochs=1)


def uniform(levels: int):
    def dequantize(k: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        u = torch.rand(k.shape, generator=generator, device=k.device, dtype=k.dtype)
        return (k + u) / levels

    return dequantize


def test_dequantize_draws_fresh_training_noise_and_fixed_held_out_values(dtype, device):
    # Row i is the level i, so floor(K x) tells which row a dequantized value came from.
    rows = 20
    k = torch.arange(rows, dtype=dtype, device=device)[:, None]
    flow = Gaussian((1,)).to(device=device, dtype=dtype)
    result = fit(
        flow, k, epochs=4, batch_size=16, validation=0.2, seed=0, dequantize=uniform(rows)
    )
    assert result.steps == 4
    training = [x for train, x in flow.seen if train]
    measured = [x for train, x in flow.seen if not train]
    assert len(training) == 4 and len(measured) == 4 + 2  # per epoch, then train and held-out
    for x in [*training, *measured]:
        assert bool(((x >= 0) & (x < 1)).all())
    # Each step dequantizes its batch anew: a row seen at two steps has two values.
    first = {int(v * rows): float(v) for v in training[0].flatten()}
    second = {int(v * rows): float(v) for v in training[1].flatten()}
    assert first.keys() == second.keys()  # one batch of all 16 training rows per epoch
    assert all(first[row] != second[row] for row in first)
    # The held-out rows were dequantized once: every measure sees the same values.
    held = measured[:4] + measured[5:]
    assert all(torch.equal(x, held[0]) for x in held)
    train_measured = {int(v * rows) for v in measured[4].flatten()}
    assert train_measured == set(first) and train_measured.isdisjoint(
        int(v * rows) for v in held[0].flatten()
    )
    # The seed fixes them: another fit with seed 0 measures the same held-out values.
    again = Gaussian((1,)).to(device=device, dtype=dtype)
    fit(again, k, epochs=1, batch_size=16, validation=0.2, seed=0, dequantize=uniform(rows))
    assert torch.equal([x for train, x in again.seen if not train][-1], held[0])


DISTRIBUTED = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch import nn
    from torch.distributions import Independent, Normal
    from flows.core.training import fit

    class Gaussian(nn.Module):
        def __init__(self):
            super().__init__()
            self.loc = nn.Parameter(torch.zeros(1, 2, 2, dtype=torch.float64))
            self.log_scale = nn.Parameter(torch.zeros(1, 2, 2, dtype=torch.float64))
        def forward(self):
            return Independent(Normal(self.loc, self.log_scale.exp()), 3)

    def dequantize(k, generator):
        return (k + torch.rand(k.shape, generator=generator, dtype=k.dtype)) / 8

    def run_fit():
        k = torch.randint(8, (60, 1, 2, 2), generator=torch.Generator().manual_seed(0))
        flow = Gaussian()
        result = fit(flow, k, epochs=2, batch_size=16, lr=0.1, seed=5, dequantize=dequantize)
        return {"loc": flow.loc.flatten().tolist(), "val_nll": result.val_nll,
                "train_nll": result.train_nll}

    def run(rank, world, port, out):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        with open(f"{out}.{rank}", "w") as f:
            json.dump(run_fit(), f)
        dist.barrier()  # no rank tears gloo down while another still uses it
        dist.destroy_process_group()

    if __name__ == "__main__":
        world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
        mp.spawn(run, args=(world, port, out), nprocs=world)
    """
)


def test_dequantized_fit_on_two_processes_takes_the_steps_of_one(tmp_path: Path):
    script = tmp_path / "ddp_dequantized.py"
    script.write_text(DISTRIBUTED)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "world2.json"
    subprocess.run(
        [sys.executable, str(script), "2", str(port), str(out)],
        check=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    first, second = (json.loads(Path(f"{out}.{rank}").read_text()) for rank in (0, 1))
    single = runpy.run_path(str(script))["run_fit"]()
    # Every process dequantized the whole global batch with the same noise and took its share.
    assert first == second
    torch.testing.assert_close(
        torch.tensor(first["loc"]), torch.tensor(single["loc"]), rtol=1e-10, atol=1e-12
    )
    for key in ("val_nll", "train_nll"):
        assert first[key] == pytest.approx(single[key], rel=1e-10)
