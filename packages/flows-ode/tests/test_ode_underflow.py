"""The ODE solver's step underflowing: SolverUnderflowError naming the likely cause."""

from __future__ import annotations

import math
import re

import pytest
import torch

import flows.ode
from flows.core.training import FitDivergedError, fit
from flows.ode import CNF, FreeFormJacobianTransform, SolverUnderflowError

PREFIX = "the ODE solver's step size underflowed to zero"


def cnf(dtype: torch.dtype, device: torch.device) -> CNF:
    torch.manual_seed(0)
    return CNF(2, hidden_features=(16, 16)).to(dtype=dtype, device=device)


def test_inputs_far_outside_the_training_range_are_named(dtype, device):
    # Far enough to overflow the dynamics in either dtype (float64 integrates 1e30 fine).
    huge = 1e30 if dtype == torch.float32 else 1e200
    x = torch.tensor([[huge, 0.0]], dtype=dtype, device=device)
    with pytest.raises(SolverUnderflowError) as info:
        cnf(dtype, device)().log_prob(x)
    assert str(info.value).startswith(
        f"{PREFIX} while integrating: the input is likely far outside the range the flow was "
        f"trained on (largest |x| = {huge:.3g}, largest |weight| = "
    )


def test_weights_holding_nan_are_named(dtype, device):
    flow = cnf(dtype, device)
    with torch.no_grad():
        next(flow.parameters()).fill_(math.nan)
    with pytest.raises(SolverUnderflowError) as info:
        flow().log_prob(torch.zeros(3, 2, dtype=dtype, device=device))
    assert str(info.value) == (
        f"{PREFIX} while integrating: the weights (or context) hold NaN or inf, likely from a "
        "diverged fit"
    )


def test_huge_weights_are_named(dtype, device):
    flow = cnf(dtype, device)
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(1e10)
    with pytest.raises(
        SolverUnderflowError, match=r"while integrating: the weights likely diverged"
    ):
        flow().log_prob(torch.zeros(3, 2, dtype=dtype, device=device))


def test_an_underflow_while_computing_gradients_is_named_too(dtype, device):
    rate = torch.ones((), dtype=dtype, device=device, requires_grad=True)
    stiffness = [1.0]  # outside autograd: changed between the forward and the backward solve
    transform = FreeFormJacobianTransform(lambda t, x: -stiffness[0] * rate * x, phi=(rate,))
    x = torch.tensor([1.0, 2.0], dtype=dtype, device=device, requires_grad=True)
    y, ladj = transform.call_and_ladj(x)
    stiffness[0] = 1e200 if dtype == torch.float64 else 1e30
    with pytest.raises(SolverUnderflowError) as info:
        (y.sum() + ladj).backward()
    assert str(info.value).startswith(f"{PREFIX} while computing gradients (the adjoint solve): ")


def test_a_diverging_fit_of_a_cnf_is_a_fit_diverged_error(dtype, device):
    torch.manual_seed(0)
    flow = CNF(2, hidden_features=(16, 16), atol=1e-4, rtol=1e-4).to(dtype=dtype, device=device)
    initial = {k: v.clone() for k, v in flow.state_dict().items()}
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(0), dtype=dtype).to(device)
    # Adam's first step moves every weight by about lr: the next solve overflows at once. (A
    # smaller lr can leave the dynamics finite but so stiff that the solver crawls instead.)
    lr = torch.finfo(dtype).max / 100
    with pytest.raises(FitDivergedError) as info:
        fit(flow, x, lr=lr, steps=8, batch_size=50, seed=0)
    assert info.value.step == 2 and math.isnan(info.value.loss)
    assert isinstance(info.value.__cause__, SolverUnderflowError)
    assert re.search(
        r"the weights (likely diverged|\(or context\) hold NaN)", str(info.value.__cause__)
    )
    # The divergence came before the first evaluation: the initial weights are back.
    for key, value in flow.state_dict().items():
        torch.testing.assert_close(value, initial[key], rtol=0, atol=0)


def test_solver_underflow_error_is_public():
    assert flows.ode.SolverUnderflowError is SolverUnderflowError
    assert "SolverUnderflowError" in flows.ode.__all__
    assert issubclass(SolverUnderflowError, RuntimeError)
    assert issubclass(SolverUnderflowError, FloatingPointError)
