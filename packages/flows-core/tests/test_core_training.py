"""Tests of flows.core.training.fit: splits, Adam steps, early stopping, clipping, processes."""

from __future__ import annotations

import json
import math
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

from flows.core.training import FitProgress, FitResult, fit


class Gaussian(nn.Module):
    """A diagonal Gaussian with a learned location and log-scale, optionally linear in c."""

    def __init__(self, features: int, context: int = 0) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(features))
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.slope = nn.Parameter(torch.zeros(context, features)) if context else None

    def forward(self, c: torch.Tensor | None = None) -> Independent:
        loc = self.loc if c is None else self.loc + c @ self.slope
        return Independent(Normal(loc, self.log_scale.exp()), 1)


def gaussian_data(dtype: torch.dtype, rows: int = 2000) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(rows, 2, generator=generator, dtype=dtype) * torch.tensor(
        [0.5, 2.0], dtype=dtype
    ) + torch.tensor([1.0, -3.0], dtype=dtype)


def test_fit_recovers_gaussian_parameters(dtype, device):
    x = gaussian_data(dtype).to(device)
    flow = Gaussian(2).to(device=device, dtype=dtype)
    result = fit(flow, x, epochs=200, batch_size=1000, lr=0.1, validation=0, seed=0)
    assert isinstance(result, FitResult) and result.flow is flow
    # Maximum likelihood: the sample mean and the (biased) sample standard deviation.
    torch.testing.assert_close(flow.loc, x.mean(0), atol=0.01, rtol=0)
    torch.testing.assert_close(flow.log_scale.exp(), x.std(0, correction=0), atol=0, rtol=0.01)
    # The NLL of a fitted Gaussian is its entropy: sum(log(sigma sqrt(2 pi e))).
    entropy = float(torch.log(x.std(0) * math.sqrt(2 * math.pi * math.e)).sum())
    assert result.train_nll == pytest.approx(entropy, abs=0.01)


def test_fit_measures_held_out_nll(dtype):
    x = gaussian_data(dtype)
    result = fit(Gaussian(2).to(dtype), x, epochs=100, batch_size=500, lr=0.05, seed=0)
    entropy = float(torch.log(x.std(0) * math.sqrt(2 * math.pi * math.e)).sum())
    assert result.val_nll == pytest.approx(entropy, abs=0.15)
    assert result.val_nll == pytest.approx(min(h["val_nll"] for h in result.history))


def test_fit_counts_steps_and_epochs():
    x = gaussian_data(torch.float64, rows=100)
    result = fit(Gaussian(2).double(), x, epochs=3, batch_size=32, validation=0.1, patience=None)
    # 90 training rows in batches of 32: 3 steps per epoch, one evaluation per epoch.
    assert result.steps == 9
    assert [h["step"] for h in result.history] == [3, 6, 9]
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.best_step in (3, 6, 9)
    assert result.seconds > 0


def test_fit_takes_a_number_of_steps_and_evaluates_when_asked():
    x = gaussian_data(torch.float64, rows=100)
    result = fit(Gaussian(2).double(), x, steps=7, batch_size=50, eval_every=2, patience=None)
    assert result.steps == 7
    assert [h["step"] for h in result.history] == [2, 4, 6, 7]


def test_fit_stops_early_and_restores_the_best_weights():
    x = gaussian_data(torch.float64, rows=200)
    flow = Gaussian(2).double()
    kept = {}

    def sabotage(progress: FitProgress) -> None:
        # After step 5 the weights are thrown far off: held-out NLL can only get worse.
        if progress.step == 5:
            kept["loc"] = flow.loc.detach().clone()
            with torch.no_grad():
                flow.loc += 100.0

    result = fit(
        flow, x, steps=1000, batch_size=20, lr=1e-3, eval_every=1, patience=4, callback=sabotage
    )
    assert result.best_step == 5
    assert result.steps == 5 + 4
    torch.testing.assert_close(flow.loc, kept["loc"])
    assert result.val_nll == pytest.approx(min(h["val_nll"] for h in result.history))


def test_fit_clips_the_gradient_norm():
    x = gaussian_data(torch.float64, rows=200) * 100
    flow = Gaussian(2).double()
    norms = []

    def record(progress: FitProgress) -> None:
        norms.append(float(torch.cat([p.grad.reshape(-1) for p in flow.parameters()]).norm()))

    fit(flow, x, steps=5, batch_size=50, clip_grad=0.25, callback=record)
    assert len(norms) == 5
    assert max(norms) <= 0.25 + 1e-9


def test_fit_is_deterministic_given_the_seed():
    x = gaussian_data(torch.float64, rows=300)
    runs = []
    for seed in (3, 3, 4):
        flow = Gaussian(2).double()
        fit(flow, x, epochs=2, batch_size=37, lr=0.01, seed=seed)
        runs.append(torch.cat([flow.loc, flow.log_scale]))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
    assert not torch.equal(runs[0], runs[2])


def test_fit_without_validation_keeps_the_last_weights():
    x = gaussian_data(torch.float64, rows=64)
    result = fit(Gaussian(2).double(), x, epochs=2, batch_size=16, validation=0)
    assert result.val_nll is None
    assert result.best_step == result.steps == 8
    assert all(math.isnan(h["val_nll"]) for h in result.history)


def test_fit_with_context_learns_the_dependence(dtype):
    generator = torch.Generator().manual_seed(1)
    c = torch.randn(2000, 1, generator=generator, dtype=dtype)
    x = 3.0 * c + 0.1 * torch.randn(2000, 1, generator=generator, dtype=dtype)
    flow = Gaussian(1, context=1).to(dtype)
    fit(flow, x, c, epochs=100, batch_size=250, lr=0.05, patience=None, seed=0)
    assert float(flow.slope.detach()) == pytest.approx(3.0, abs=0.05)
    assert float(flow.log_scale.detach().exp()) == pytest.approx(0.1, rel=0.1)


def test_fit_stops_when_the_callback_says_so():
    x = gaussian_data(torch.float64, rows=100)
    result = fit(Gaussian(2).double(), x, steps=50, batch_size=10, callback=lambda p: p.step == 4)
    assert result.steps == 4


@pytest.mark.together("numpy")
def test_fit_accepts_arrays_and_moves_them_to_the_flow_dtype():
    # numpy is not a dependency of flows-core; the arrays path matters where it is installed.
    x = gaussian_data(torch.float64, rows=50).numpy()
    flow = Gaussian(2).float()
    result = fit(flow, x, steps=2, batch_size=10)
    assert flow.loc.dtype == torch.float32 and result.steps == 2


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"epochs": 0}, ValueError, "epochs must be an int >= 1 or None, got 0"),
        ({"epochs": -1}, ValueError, "epochs must be an int >= 1 or None, got -1"),
        ({"steps": 2.5}, TypeError, "steps must be an int >= 1 or None, got 2.5"),
        ({"epochs": 2, "steps": 3}, ValueError, "give epochs or steps, not both"),
        ({"batch_size": 0}, ValueError, "batch_size must be an int >= 1, got 0"),
        ({"lr": 0.0}, ValueError, "lr must be a finite positive number, got 0.0"),
        ({"lr": float("nan")}, ValueError, "lr must be a finite positive number, got nan"),
        ({"validation": 1.0}, ValueError, r"validation must be a fraction in \[0, 1\), got 1.0"),
        ({"validation": -0.1}, ValueError, r"validation must be a fraction in \[0, 1\)"),
        ({"patience": 0}, ValueError, "patience must be an int >= 1 or None, got 0"),
        ({"lr_patience": -1}, ValueError, "lr_patience must be an int >= 0 or None, got -1"),
        ({"clip_grad": -1.0}, ValueError, "clip_grad must be a positive number or None"),
    ],
)
def test_fit_refuses_bad_arguments(options, error, message):
    x = gaussian_data(torch.float64, rows=20)
    with pytest.raises(error, match=message):
        fit(Gaussian(2).double(), x, **options)


def test_fit_refuses_badly_shaped_data():
    with pytest.raises(ValueError, match="x must have shape"):
        fit(Gaussian(2), torch.zeros(5))
    with pytest.raises(ValueError, match="context must have shape"):
        fit(Gaussian(2, 1), torch.zeros(5, 2), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="too few"):
        fit(Gaussian(2), torch.zeros(1, 2), validation=0.5)


def test_fit_halves_the_learning_rate_after_lr_patience_stale_measures(device):
    x = gaussian_data(torch.float64, rows=400).to(device)
    flow = Gaussian(2).double().to(device)
    # A large rate keeps the held-out NLL bouncing, so measures without a new best come.
    result = fit(flow, x, epochs=40, batch_size=32, lr=0.3, patience=None, lr_patience=1, seed=0)
    rates = [entry["lr"] for entry in result.history]
    # ReduceLROnPlateau's rule: after more than lr_patience measures without a strictly new
    # best, halve and count afresh; each entry holds the rate of the steps before it.
    best, stale, expected = math.inf, 0, [0.3]
    for entry in result.history[:-1]:
        rate = expected[-1]
        if entry["val_nll"] < best:
            best, stale = entry["val_nll"], 0
        else:
            stale += 1
        if stale > 1:
            rate, stale = rate / 2, 0
        expected.append(rate)
    assert rates == pytest.approx(expected, rel=1e-12)
    assert min(rates) <= 0.3 / 4  # it did halve, more than once
    constant = fit(Gaussian(2).double().to(device), x, epochs=5, lr=0.3, seed=0)
    assert {entry["lr"] for entry in constant.history} == {0.3}  # lr_patience=None


def test_fit_steps_with_fused_adam_where_torch_has_it(dtype, device):
    from flows.core.optimizer import make_adam

    torch.manual_seed(0)
    params = [torch.randn(5, 3, dtype=dtype, device=device, requires_grad=True) for _ in range(3)]
    twins = [p.detach().clone().requires_grad_() for p in params]
    fused = make_adam(params, lr=0.01, weight_decay=0.1)
    plain = torch.optim.Adam(twins, lr=0.01, weight_decay=0.1)
    assert bool(fused.defaults["fused"]) == (device.type in ("cpu", "cuda"))
    for step in range(5):  # the same update as torch's default Adam, to round-off
        for p, q in zip(params, twins, strict=True):
            p.grad = torch.full_like(p, float(step + 1)) * p.detach().sin()
            q.grad = torch.full_like(q, float(step + 1)) * q.detach().sin()
        fused.step()
        plain.step()
    for p, q in zip(params, twins, strict=True):
        torch.testing.assert_close(p, q)


def test_fit_refuses_rows_that_do_not_fit_the_preset(device):
    from flows.core import MAF

    x = torch.randn(40, 2, device=device)
    with pytest.raises(ValueError, match=r"x has 3 features .* MAF was built for features=2"):
        fit(MAF(2).to(device), torch.randn(40, 3, device=device), steps=1)
    # An unconditional flow would silently ignore the context: a fit of the wrong model.
    with pytest.raises(ValueError, match=r"context was given but .* without one \(context=0\)"):
        fit(MAF(2).to(device), x, torch.randn(40, 3, device=device), steps=1)
    with pytest.raises(ValueError, match=r"context has 4 features .* built for context=3"):
        fit(MAF(2, context=3).to(device), x, torch.randn(40, 4, device=device), steps=1)
    assert fit(MAF(2, context=3).to(device), x, torch.randn(40, 3, device=device), steps=1)


def test_fit_refuses_rows_outside_the_preset_s_support(device):
    # The density is 0 there: the loss would be infinite, reported as a diverged fit.
    from flows.core import MAF

    x = torch.rand(40, 2, device=device) + 0.01
    x[[7, 9], 1] = torch.tensor([0.0, -2.0], device=device)  # on the bound, and beyond
    flow = MAF(2, support=(0.0, float("inf"))).to(device)
    with pytest.raises(
        ValueError, match=r"x has 2 of 40 rows outside the support \(0.0, inf\) of the flow MAF"
    ):
        fit(flow, x, steps=1)
    assert fit(flow, x.abs() + 0.01, steps=1, validation=0.0)


SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    import torch.multiprocessing as mp
    from torch import nn
    from torch.distributions import Independent, Normal
    from flows.core.training import fit

    class Counted(Independent):
        def log_prob(self, x):
            SEEN.append(x.shape[0])
            return super().log_prob(x)

    SEEN = []  # rows each log_prob call received in this process

    class Gaussian(nn.Module):
        def __init__(self):
            super().__init__()
            self.loc = nn.Parameter(torch.zeros(2, dtype=torch.float64))
            self.log_scale = nn.Parameter(torch.zeros(2, dtype=torch.float64))
        def forward(self, c=None):
            return Counted(Normal(self.loc, self.log_scale.exp()), 1)

    def data():
        g = torch.Generator().manual_seed(0)
        return torch.randn(90, 2, generator=g, dtype=torch.float64) * 3 + 1

    def run(rank, world, port, out):
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("gloo", rank=rank, world_size=world)
        torch.manual_seed(rank)  # different initial weights: fit must broadcast rank 0's
        flow = Gaussian()
        with torch.no_grad():
            flow.loc.normal_()
        result = fit(flow, data(), epochs=2, batch_size=16, lr=0.1, clip_grad=1.0, seed=5)
        with open(f"{out}.{rank}", "w") as f:
            json.dump({"loc": flow.loc.tolist(), "log_scale": flow.log_scale.tolist(),
                       "steps": result.steps, "val_nll": result.val_nll, "seen": sum(SEEN)}, f)
        dist.barrier()  # no rank tears gloo down while another still uses it
        dist.destroy_process_group()

    if __name__ == "__main__":
        world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
        mp.spawn(run, args=(world, port, out), nprocs=world)
    """
)


def test_fit_on_two_processes_takes_the_steps_of_one(tmp_path: Path, free_port: int):
    script = tmp_path / "ddp_fit.py"
    script.write_text(SCRIPT)
    out = tmp_path / "world2.json"
    subprocess.run(
        [sys.executable, str(script), "2", str(free_port), str(out)],
        check=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    double, other = (json.loads(Path(f"{out}.{rank}").read_text()) for rank in (0, 1))
    # The same run in this process, on the same global batches.
    code = runpy.run_path(str(script))
    torch.manual_seed(0)
    flow = code["Gaussian"]()
    with torch.no_grad():
        flow.loc.normal_()
    result = fit(flow, code["data"](), epochs=2, batch_size=16, lr=0.1, clip_grad=1.0, seed=5)
    single = {
        "loc": flow.loc.tolist(),
        "log_scale": flow.log_scale.tolist(),
        "steps": result.steps,
        "val_nll": result.val_nll,
        "seen": sum(code["SEEN"]),
    }
    # Each process saw its share of every batch and of the held-out rows, no more.
    assert double["seen"] + other["seen"] == single["seen"]
    assert abs(double["seen"] - other["seen"]) <= single["steps"] + 4
    assert other["loc"] == double["loc"]
    assert single["steps"] == double["steps"] == 12  # 81 training rows, batches of 16
    for key in ("loc", "log_scale"):
        torch.testing.assert_close(
            torch.tensor(double[key]), torch.tensor(single[key]), rtol=1e-10, atol=1e-12
        )
    assert double["val_nll"] == pytest.approx(single["val_nll"], rel=1e-10)
