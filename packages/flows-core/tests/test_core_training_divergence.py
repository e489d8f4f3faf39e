"""Tests of flows.core.training.fit on data or runs that are not finite: FitDivergedError."""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal

import flows.core
from flows.core import MAF
from flows.core.training import FitDivergedError, FitProgress, fit


class Poisoned(nn.Module):
    """A diagonal Gaussian whose log-density is ``value`` where told: at chosen training steps
    (counted in calls made in training mode), or everywhere in evaluation mode."""

    def __init__(self, poison_steps=(), value: float = math.nan, in_eval: bool = False) -> None:
        super().__init__()
        self.loc = nn.Parameter(torch.zeros(2))
        self.log_scale = nn.Parameter(torch.zeros(2))
        self.poison_steps = set(poison_steps)
        self.value = value
        self.in_eval = in_eval
        self.training_calls = 0

    def forward(self, c: torch.Tensor | None = None) -> Independent:
        poisoned = self.in_eval and not self.training
        if self.training:
            self.training_calls += 1
            poisoned = self.training_calls in self.poison_steps
        loc = self.loc + self.value if poisoned else self.loc
        return Independent(Normal(loc, self.log_scale.exp(), validate_args=False), 1)


def data(dtype: torch.dtype, device: torch.device, rows: int = 100) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(rows, 2, generator=generator, dtype=dtype).to(device)


def state(flow: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in flow.state_dict().items()}


def assert_same_state(flow: nn.Module, expected: dict[str, torch.Tensor]) -> None:
    for key, value in flow.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=0, atol=0)


def test_a_huge_learning_rate_stops_with_the_initial_weights(dtype, device):
    torch.manual_seed(0)
    flow = MAF(2, transforms=2).to(dtype=dtype, device=device)
    initial = state(flow)
    with pytest.raises(FitDivergedError) as info:
        # Far too large in float32 and float64 alike (float64 survives 1e10 with huge losses).
        fit(flow, data(dtype, device, rows=500), lr=1e30, steps=50, seed=0)
    error = info.value
    assert isinstance(error.step, int) and 1 <= error.step <= 50
    assert isinstance(error.loss, float) and not math.isfinite(error.loss)
    assert str(error) == (
        f"training diverged at step {error.step} (loss {error.loss}): lower lr or set clip_grad"
    )
    # The first evaluation saw the divergence: there were no better finite weights.
    assert_same_state(flow, initial)
    assert flow.training  # the mode it was given in


def test_the_first_non_finite_step_is_named_and_the_best_weights_restored(dtype, device):
    x = data(dtype, device)
    # Evaluations at steps 5 and 10; the loss of step 7 is NaN, seen at step 10's evaluation.
    flow = Poisoned(poison_steps={7}).to(dtype=dtype, device=device)
    start = state(flow)
    with pytest.raises(FitDivergedError, match=r"^training diverged at step 7 \(loss nan\)"):
        fit(flow, x, steps=20, batch_size=25, eval_every=5, validation=0.5, seed=3)
    # The same run stopped after its first evaluation: the weights of step 5.
    reference = Poisoned().to(dtype=dtype, device=device)
    reference.load_state_dict(start)
    fit(reference, x, steps=5, batch_size=25, eval_every=5, validation=0.5, seed=3)
    assert_same_state(flow, state(reference))
    assert all(bool(torch.isfinite(p).all()) for p in flow.parameters())


@pytest.mark.parametrize("value", [math.inf, -math.inf])
def test_an_infinite_loss_diverges_too(value, dtype, device):
    flow = Poisoned(poison_steps={2}, value=value).to(dtype=dtype, device=device)
    with pytest.raises(FitDivergedError) as info:
        fit(flow, data(dtype, device), steps=4, batch_size=50, validation=0, seed=0)
    assert info.value.step == 2 and not math.isfinite(info.value.loss)


def test_without_a_held_out_split_the_initial_weights_come_back(dtype, device):
    flow = Poisoned(poison_steps={3}).to(dtype=dtype, device=device)
    initial = state(flow)
    with pytest.raises(FitDivergedError) as info:
        fit(flow, data(dtype, device), steps=8, batch_size=10, validation=0, seed=0)
    assert info.value.step == 3 and math.isnan(info.value.loss)
    assert_same_state(flow, initial)


def test_without_a_held_out_split_the_last_finite_evaluation_comes_back(dtype, device):
    x = data(dtype, device)
    flow = Poisoned(poison_steps={6}).to(dtype=dtype, device=device)
    start = state(flow)
    with pytest.raises(FitDivergedError, match="at step 6"):
        fit(flow, x, steps=12, batch_size=25, eval_every=4, validation=0, lr=1e-2, seed=0)
    reference = Poisoned().to(dtype=dtype, device=device)
    reference.load_state_dict(start)
    fit(reference, x, steps=4, batch_size=25, eval_every=4, validation=0, lr=1e-2, seed=0)
    assert_same_state(flow, state(reference))


def test_a_callback_sees_no_diverged_step(dtype, device):
    seen: list[FitProgress] = []
    flow = Poisoned(poison_steps={3}).to(dtype=dtype, device=device)
    with pytest.raises(FitDivergedError, match="at step 3"):
        fit(flow, data(dtype, device), steps=10, batch_size=10, callback=seen.append, seed=0)
    assert [p.step for p in seen] == [1, 2]
    assert all(math.isfinite(p.loss) for p in seen)


def test_a_non_finite_held_out_nll_is_an_error(dtype, device):
    flow = Poisoned(value=math.inf, in_eval=True).to(dtype=dtype, device=device)
    with pytest.raises(FitDivergedError) as info:
        fit(flow, data(dtype, device), steps=6, batch_size=30, eval_every=3, seed=0)
    assert info.value.step == 3 and info.value.loss == math.inf
    assert str(info.value).startswith("training diverged at step 3 (held-out NLL inf)")


def test_a_non_finite_final_training_nll_is_an_error(dtype, device):
    # Without a held-out split the final training NLL is the only evaluation-mode measure.
    flow = Poisoned(value=math.nan, in_eval=True).to(dtype=dtype, device=device)
    with pytest.raises(FitDivergedError) as info:
        fit(flow, data(dtype, device), steps=4, batch_size=50, validation=0, seed=0)
    assert info.value.step == 4 and math.isnan(info.value.loss)
    assert "(train NLL nan)" in str(info.value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_data_holding_nan_or_inf_is_refused_before_training(bad, dtype, device):
    x = data(dtype, device, rows=20)
    x[3, 1] = bad
    x[11, 0] = bad
    flow = Poisoned().to(dtype=dtype, device=device)
    initial = state(flow)
    with pytest.raises(ValueError) as info:
        fit(flow, x, steps=2, batch_size=5)
    assert str(info.value) == (
        "x holds NaN or inf in row(s) 3, 11 of 20; remove or fix those rows before fitting"
    )
    assert_same_state(flow, initial)


def test_context_holding_nan_is_refused_naming_context_and_the_first_rows(dtype, device):
    x = data(dtype, device, rows=40)
    context = torch.zeros(40, 1, dtype=dtype, device=device)
    context[[0, 2, 4, 6, 8, 10, 12], 0] = math.nan
    with pytest.raises(ValueError) as info:
        fit(Poisoned().to(dtype=dtype, device=device), x, context, steps=2)
    assert str(info.value) == (
        "context holds NaN or inf in row(s) 0, 2, 4, 6, 8 and 2 more of 40; "
        "remove or fix those rows before fitting"
    )


def test_data_too_large_for_the_flow_dtype_is_refused_as_such():
    x = torch.zeros(10, 2, dtype=torch.float64)
    x[4, 0] = 1e300
    with pytest.raises(ValueError, match=r"^x holds values too large for torch.float32 in row"):
        fit(Poisoned(), x, steps=1)


class Failing(Poisoned):
    """A Gaussian whose ``fail``-th training call raises FloatingPointError, as an ODE solver's
    step underflowing does."""

    def __init__(self, fail: int) -> None:
        super().__init__()
        self.fail = fail

    def forward(self, c: torch.Tensor | None = None) -> Independent:
        if self.training and self.training_calls + 1 == self.fail:
            raise FloatingPointError("the solver's step underflowed")
        return super().forward(c)


def test_a_floating_point_error_after_the_first_step_is_a_divergence(dtype, device):
    x = data(dtype, device)
    flow = Failing(fail=4).to(dtype=dtype, device=device)
    start = state(flow)
    with pytest.raises(FitDivergedError) as info:
        fit(flow, x, steps=8, batch_size=30, eval_every=2, seed=0)
    assert info.value.step == 4 and math.isnan(info.value.loss)
    assert isinstance(info.value.__cause__, FloatingPointError)
    reference = Poisoned().to(dtype=dtype, device=device)
    reference.load_state_dict(start)
    fit(reference, x, steps=2, batch_size=30, eval_every=2, seed=0)
    assert_same_state(flow, state(reference))  # the best weights, of step 2


def test_a_floating_point_error_in_the_first_step_is_left_as_it_is(dtype, device):
    flow = Failing(fail=1).to(dtype=dtype, device=device)
    with pytest.raises(FloatingPointError, match="underflowed"):
        fit(flow, data(dtype, device), steps=8, batch_size=30, seed=0)


def test_fit_diverged_error_is_public_and_keeps_its_attributes():
    assert flows.core.FitDivergedError is FitDivergedError
    assert "FitDivergedError" in flows.core.__all__
    assert issubclass(FitDivergedError, RuntimeError)
    again = pickle.loads(pickle.dumps(FitDivergedError(4, math.inf, "held-out NLL")))
    assert (again.step, again.loss, again.what, str(again)) == (
        4,
        math.inf,
        "held-out NLL",
        "training diverged at step 4 (held-out NLL inf): lower lr or set clip_grad",
    )
