"""FreeFormJacobianTransform: values, inverse, log-determinant, Hutchinson trace, adjoint."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn
from torchdiffeq import odeint

from flows.core.transforms.base import inverse_and_ladj
from flows.ode import FreeFormJacobianTransform
from flows.ode.ffj import trace_exact, trace_hutchinson

# Solver tolerances per dtype: tight enough for the checks, loose enough to stay fast.
TOLERANCES = {torch.float64: (1e-9, 1e-8), torch.float32: (1e-6, 1e-5)}


def tolerances(dtype: torch.dtype) -> dict[str, float]:
    atol, rtol = TOLERANCES[dtype]
    return {"atol": atol, "rtol": rtol}


def error_bound(dtype: torch.dtype, scale: float) -> float:
    """What a solve may be off by: the local tolerances, times a margin for accumulation."""
    atol, rtol = TOLERANCES[dtype]
    return 20 * (atol + rtol * scale)


class Field(nn.Module):
    """A small time-dependent neural vector field f(t, x)."""

    def __init__(self, features: int, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(features + 1, hidden), nn.Tanh(), nn.Linear(hidden, features)
        )

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return self.net(torch.cat((x, t.expand(*x.shape[:-1], 1)), dim=-1))


def neural_transform(
    features: int, dtype: torch.dtype, device: torch.device, **kwargs
) -> tuple[FreeFormJacobianTransform, Field]:
    field = Field(features).to(dtype=dtype, device=device)
    kwargs = {**tolerances(dtype), **kwargs}
    return FreeFormJacobianTransform(field, phi=tuple(field.parameters()), **kwargs), field


@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
def test_linear_field_matches_matrix_exponential(batch, dtype, device):
    torch.manual_seed(0)
    A = 0.5 * torch.randn(3, 3, dtype=dtype, device=device)
    t = FreeFormJacobianTransform(lambda t, x: x @ A.T, t0=0.5, t1=2.0, **tolerances(dtype))
    x = torch.randn(*batch, 3, dtype=dtype, device=device)

    y, ladj = t.call_and_ladj(x)

    expected = x @ torch.linalg.matrix_exp(1.5 * A).T
    assert y.shape == x.shape and y.dtype == dtype
    assert ladj.shape == batch and ladj.dtype == dtype
    torch.testing.assert_close(y, expected, atol=error_bound(dtype, 3), rtol=0)
    torch.testing.assert_close(
        ladj, (1.5 * A.trace()).expand(batch), atol=error_bound(dtype, 3), rtol=0
    )


@settings(max_examples=15, deadline=None)
@given(
    batch=st.lists(st.integers(1, 3), max_size=2).map(tuple),
    features=st.integers(1, 3),
    t0=st.floats(-1.0, 1.0),
    duration=st.floats(-1.0, 1.0).filter(lambda d: abs(d) > 0.1),
    seed=st.integers(0, 2**16),
)
def test_linear_field_maps_by_matrix_exponential_both_ways(batch, features, t0, duration, seed):
    # Any batch shape, forwards or backwards in time: y = exp((t1 - t0) A) x, and the inverse.
    generator = torch.Generator().manual_seed(seed)
    A = 0.5 * torch.randn(features, features, dtype=torch.float64, generator=generator)
    x = torch.randn(*batch, features, dtype=torch.float64, generator=generator)
    t = FreeFormJacobianTransform(
        lambda t, z: z @ A.T, t0=t0, t1=t0 + duration, **tolerances(torch.float64)
    )

    y, ladj = t.call_and_ladj(x)
    x_back, inverse_ladj = t.inverse_and_ladj(y)

    bound = error_bound(torch.float64, 10)
    torch.testing.assert_close(y, x @ torch.linalg.matrix_exp(duration * A).T, atol=bound, rtol=0)
    torch.testing.assert_close(ladj, (duration * A.trace()).expand(batch), atol=bound, rtol=0)
    torch.testing.assert_close(x_back, x, atol=bound, rtol=0)
    torch.testing.assert_close(inverse_ladj, -ladj, atol=bound, rtol=0)


@pytest.mark.parametrize("exact", [True, False])
def test_inverse_recovers_input(exact, dtype, device):
    torch.manual_seed(1)
    t, _ = neural_transform(3, dtype, device, exact=exact)
    x = torch.randn(8, 3, dtype=dtype, device=device)

    with torch.no_grad():
        y = t(x)
        x_back = t.inv(y)
        x_back_ladj, _ = t.inverse_and_ladj(y)

    bound = error_bound(dtype, x.abs().max().item())
    assert (y - x).abs().max() > 100 * bound  # the transform does move the points
    torch.testing.assert_close(x_back, x, atol=bound, rtol=0)
    torch.testing.assert_close(x_back_ladj, x, atol=bound, rtol=0)


def test_call_and_ladj_agrees_with_call(dtype, device):
    torch.manual_seed(2)
    t, _ = neural_transform(2, dtype, device)
    x = torch.randn(6, 2, dtype=dtype, device=device)

    with torch.no_grad():
        y, ladj = t.call_and_ladj(x)
        torch.testing.assert_close(y, t(x), atol=error_bound(dtype, 3), rtol=0)
        torch.testing.assert_close(
            ladj, t.log_abs_det_jacobian(x, y), atol=error_bound(dtype, 3), rtol=0
        )


@pytest.mark.parametrize("features", [1, 2, 4])
def test_ladj_matches_autograd_jacobian(features, dtype, device):
    torch.manual_seed(3)
    t, _ = neural_transform(features, dtype, device)
    x = torch.randn(4, features, dtype=dtype, device=device)

    with torch.no_grad():
        _, ladj = t.call_and_ladj(x)
    jacobians = torch.stack([torch.autograd.functional.jacobian(t, xi) for xi in x])
    expected = torch.linalg.slogdet(jacobians).logabsdet

    torch.testing.assert_close(ladj, expected, atol=error_bound(dtype, 3), rtol=0)


def test_inverse_ladj_is_minus_forward_ladj(dtype, device):
    torch.manual_seed(4)
    t, _ = neural_transform(3, dtype, device)
    x = torch.randn(5, 3, dtype=dtype, device=device)

    with torch.no_grad():
        y, ladj = t.call_and_ladj(x)
        x_back, inverse_ladj = inverse_and_ladj(t, y)
        inv_y, inv_ladj = t.inv.call_and_ladj(y)

    bound = error_bound(dtype, 3)
    torch.testing.assert_close(inverse_ladj, -ladj, atol=bound, rtol=0)
    torch.testing.assert_close(inv_ladj, -ladj, atol=bound, rtol=0)
    torch.testing.assert_close(inv_y, x_back, atol=bound, rtol=0)


@pytest.mark.parametrize("noise", ["rademacher", "gaussian"])
def test_hutchinson_estimate_is_unbiased(noise, dtype, device):
    torch.manual_seed(5)
    t, field = neural_transform(3, dtype, device)
    estimator = FreeFormJacobianTransform(
        field, phi=tuple(field.parameters()), exact=False, noise=noise, **tolerances(dtype)
    )
    # One solve of many copies of one point: every copy draws its own noise.
    samples = 4000
    x = torch.randn(3, dtype=dtype, device=device).expand(samples, 3)

    with torch.no_grad():
        _, exact = t.call_and_ladj(x[:1])
        _, estimates = estimator.call_and_ladj(x)

    # The mean is within 5 standard errors of the exact trace (false alarm ~ 6e-7).
    standard_error = estimates.std() / samples**0.5
    assert estimates.std() > 0  # the estimates are random
    assert (estimates.mean() - exact[0]).abs() < 5 * standard_error + error_bound(dtype, 3)


def test_hutchinson_noise_is_fixed_within_one_solve(dtype, device):
    # For f(x) = A x the estimate integrates e^T A e over [0, 1]: with one Rademacher e per
    # solve it is exactly tr(A) + (A_01 + A_10) e_0 e_1, one of two values, never in between.
    A = torch.tensor([[0.3, 0.8], [0.4, -0.1]], dtype=dtype, device=device)
    t = FreeFormJacobianTransform(lambda t, x: x @ A.T, exact=False, **tolerances(dtype))
    x = torch.randn(500, 2, dtype=dtype, device=device)

    with torch.no_grad():
        _, estimates = t.call_and_ladj(x)

    off_diagonal = A[0, 1] + A[1, 0]
    distance = torch.minimum(
        (estimates - (A.trace() + off_diagonal)).abs(),
        (estimates - (A.trace() - off_diagonal)).abs(),
    )
    assert distance.max() < error_bound(dtype, 3)
    assert (estimates > A.trace()).any() and (estimates < A.trace()).any()


def test_adjoint_gradients_match_closed_form(dtype, device):
    torch.manual_seed(6)
    A0 = 0.5 * torch.randn(3, 3, dtype=dtype, device=device)
    x0 = torch.randn(4, 3, dtype=dtype, device=device)
    w = torch.randn(4, 3, dtype=dtype, device=device)

    def loss(A: Tensor, x: Tensor) -> Tensor:
        t = FreeFormJacobianTransform(lambda t, z: z @ A.T, phi=(A,), **tolerances(dtype))
        y, ladj = t.call_and_ladj(x)
        return (w * y).sum() + ladj.sum()

    def closed_form(A: Tensor, x: Tensor) -> Tensor:
        return (w * (x @ torch.linalg.matrix_exp(A).T)).sum() + 4 * A.trace()

    A, x = A0.clone().requires_grad_(), x0.clone().requires_grad_()
    grad_A, grad_x = torch.autograd.grad(loss(A, x), (A, x))
    A, x = A0.clone().requires_grad_(), x0.clone().requires_grad_()
    expected_A, expected_x = torch.autograd.grad(closed_form(A, x), (A, x))

    bound = error_bound(dtype, 100)
    torch.testing.assert_close(grad_A, expected_A, atol=bound, rtol=0)
    torch.testing.assert_close(grad_x, expected_x, atol=bound, rtol=0)


def test_adjoint_gradients_match_backpropagation_through_the_solver(dtype, device):
    # The reference differentiates through every solver step (torchdiffeq.odeint), with the
    # trace from one autograd.grad per feature: no adjoint, no vectorized products.
    torch.manual_seed(10)
    t, field = neural_transform(2, dtype, device)
    x = torch.randn(5, 2, dtype=dtype, device=device, requires_grad=True)
    w = torch.randn(5, 2, dtype=dtype, device=device)
    parameters = (x, *field.parameters())

    def reference_dynamics(time: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        z = state[0]
        dz = field(time, z)
        columns = [
            torch.autograd.grad(dz[..., i].sum(), z, create_graph=True)[0][..., i]
            for i in range(z.shape[-1])
        ]
        return dz, sum(columns)

    times = torch.tensor([0.0, 1.0], dtype=dtype, device=device)
    ys, ladjs = odeint(reference_dynamics, (x, x.new_zeros(5)), times, **tolerances(dtype))
    expected = torch.autograd.grad((w * ys[-1]).sum() + ladjs[-1].sum(), parameters)

    y, ladj = t.call_and_ladj(x)
    gradients = torch.autograd.grad((w * y).sum() + ladj.sum(), parameters)

    for gradient, reference in zip(gradients, expected, strict=True):
        torch.testing.assert_close(gradient, reference, atol=error_bound(dtype, 10), rtol=0)


@pytest.mark.parametrize("exact", [True, False])
def test_gradients_reach_every_parameter(exact, dtype, device):
    torch.manual_seed(7)
    t, field = neural_transform(2, dtype, device, exact=exact)
    x = torch.randn(16, 2, dtype=dtype, device=device)

    y, ladj = t.call_and_ladj(x)
    (y.square().sum() - ladj.sum()).backward()

    for name, parameter in field.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_gradients_reach_the_input_through_the_inverse(dtype, device):
    torch.manual_seed(8)
    t, field = neural_transform(2, dtype, device)
    y = torch.randn(3, 2, dtype=dtype, device=device, requires_grad=True)

    x, ladj = t.inv.call_and_ladj(y)
    (x.sum() + ladj.sum()).backward()

    assert y.grad is not None and torch.isfinite(y.grad).all()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in field.parameters())


def test_batch_shape_broadcasts_the_input(dtype, device):
    shift = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]], dtype=dtype, device=device)
    t = FreeFormJacobianTransform(lambda t, x: shift.expand_as(x), batch_shape=(3,))
    x = torch.tensor([0.5, -0.5], dtype=dtype, device=device)

    y, ladj = t.call_and_ladj(x)

    torch.testing.assert_close(y, x + shift)
    torch.testing.assert_close(ladj, torch.zeros(3, dtype=dtype, device=device))


def test_trace_helpers_match_jacobian(dtype, device):
    torch.manual_seed(9)
    W = torch.randn(3, 3, dtype=dtype, device=device)
    x = torch.randn(2, 5, 3, dtype=dtype, device=device, requires_grad=True)
    dx = torch.tanh(x @ W.T)

    exact = trace_exact(dx, x, create_graph=False)
    jacobian = (1 - dx.detach().square()).unsqueeze(-1) * W  # d tanh(Wx) / dx
    torch.testing.assert_close(exact, jacobian.diagonal(dim1=-2, dim2=-1).sum(-1))

    noise = torch.randn_like(x)
    estimate = trace_hutchinson(torch.tanh(x @ W.T), x, noise, create_graph=False)
    expected = torch.einsum("...i,...ij,...j->...", noise, jacobian, noise)
    torch.testing.assert_close(estimate, expected)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"f": 3}, TypeError, "f must be a callable"),
        ({"t1": 0.0}, ValueError, "t1 must differ from t0"),
        ({"t0": "0"}, TypeError, "t0 must be a real number, got '0'"),
        ({"atol": 0.0}, ValueError, "atol must be a positive number, got 0.0"),
        ({"rtol": -1e-3}, ValueError, "rtol must be a positive number, got -0.001"),
        ({"noise": "uniform"}, ValueError, "noise must be one of 'rademacher', 'gaussian'"),
        ({"phi": [1.0]}, TypeError, r"phi\[0\] must be a tensor, got float"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, match):
    arguments = {"f": lambda t, x: x, **kwargs}
    with pytest.raises(error, match=match):
        FreeFormJacobianTransform(**arguments)


def test_scalar_input_is_refused():
    t = FreeFormJacobianTransform(lambda t, x: x)
    with pytest.raises(ValueError, match=r"x must have at least one dimension .* shape \(\)"):
        t(torch.tensor(1.0))


def test_repr_names_the_trace_estimator():
    t = FreeFormJacobianTransform(lambda t, x: x, exact=False, noise="gaussian")
    assert repr(t) == (
        "FreeFormJacobianTransform(t0=0.0, t1=1.0, atol=1e-06, rtol=1e-05, "
        "trace=hutchinson-gaussian)"
    )
