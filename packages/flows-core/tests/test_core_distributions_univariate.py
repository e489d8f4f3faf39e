"""Univariate distributions: normalization by quadrature, sampling against the density."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Exponential, Normal

from flows.core.distributions import (
    GeneralizedNormal,
    Maximum,
    Minimum,
    Mixture,
    NormalizingFlow,
    Sort,
    TopK,
    TransformedUniform,
    Truncated,
)
from flows.core.transforms import ExpTransform, GaussianizationTransform


def univariate(name, dtype, device):
    def t(*values):
        values = values[0] if len(values) == 1 else values
        return torch.tensor(values, dtype=dtype, device=device)

    normal = Normal(t(0.5), t(1.5))
    log = ExpTransform().inv
    return {
        "generalized-normal-0.7": (GeneralizedNormal(t(0.7)), (-60.0, 60.0)),
        "generalized-normal-2": (GeneralizedNormal(t(2.0)), (-10.0, 10.0)),
        "generalized-normal-8": (GeneralizedNormal(t(8.0)), (-2.0, 2.0)),
        "truncated": (Truncated(normal, t(-1.0), t(2.0)), (-1.0, 2.0)),
        "truncated-half": (Truncated(normal, t(1.0), math.inf), (1.0, 15.0)),
        "transformed-uniform": (TransformedUniform(log, t(1.0), t(100.0)), (1.0, 100.0)),
        "minimum": (Minimum(normal, 3), (-10.0, 10.0)),
        "maximum": (Maximum(normal, 4), (-10.0, 10.0)),
        "mixture": (Mixture(Normal(t(-2.0, 1.0), t(0.5, 1.0)), t(0.3, -0.2)), (-10.0, 10.0)),
        "flow": (
            NormalizingFlow(
                GaussianizationTransform(t(-1.0, 1.0, 2.0), t(0.5, -0.5, 0.0)),
                Normal(t(0.0), t(1.0)),
            ),
            (-25.0, 25.0),
        ),
    }[name]


NAMES = [
    "generalized-normal-0.7",
    "generalized-normal-2",
    "generalized-normal-8",
    "truncated",
    "truncated-half",
    "transformed-uniform",
    "minimum",
    "maximum",
    "mixture",
    "flow",
]


def grid(interval, dtype, device, points=20_001):
    low, high = interval
    return torch.linspace(low, high, points, dtype=dtype, device=device)


@pytest.mark.parametrize("name", NAMES)
def test_density_integrates_to_one(name, device):
    # Trapezoidal quadrature in float64 over the support (or far into the tails).
    d, interval = univariate(name, torch.float64, device)
    x = grid(interval, torch.float64, device)
    mass = torch.trapezoid(d.log_prob(x).exp(), x)
    assert abs(mass.item() - 1) < 1e-4, mass


@pytest.mark.parametrize("name", NAMES)
def test_samples_follow_the_density(name, device):
    # The sample mean agrees with the quadrature mean within 5 standard errors.
    torch.manual_seed(0)
    d, interval = univariate(name, torch.float64, device)
    x = grid(interval, torch.float64, device)
    p = d.log_prob(x).exp()
    mean = torch.trapezoid(p * x, x)
    std = torch.trapezoid(p * (x - mean) ** 2, x).sqrt()
    samples = d.sample((5_000,))
    assert samples.shape == (5_000,)
    error = (samples.mean() - mean).abs() / (std / math.sqrt(5_000))
    assert error < 5, (samples.mean(), mean)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sample_shape", [(), (5,), (2, 3)])
def test_sample_and_log_prob_shapes(name, sample_shape, dtype, device):
    d, _ = univariate(name, dtype, device)
    x = d.sample(sample_shape)
    assert x.shape == sample_shape and x.dtype == dtype and x.device.type == device.type
    log_p = d.log_prob(x)
    assert log_p.shape == sample_shape and torch.isfinite(log_p).all()


@pytest.mark.parametrize("name", NAMES)
def test_expand_adds_batch_dimensions_and_keeps_log_prob(name, dtype, device):
    d, _ = univariate(name, dtype, device)
    e = d.expand((4, 2))
    assert e.batch_shape == (4, 2) and e.event_shape == d.event_shape
    assert e.sample((3,)).shape == (3, 4, 2)
    x = d.sample((4, 2))
    torch.testing.assert_close(e.log_prob(x), d.log_prob(x))


@pytest.mark.parametrize(
    ("name", "outside"),
    [
        ("truncated", [-1.5, 2.5, -1e30]),
        ("truncated-half", [0.0, -5.0]),
        ("transformed-uniform", [0.5, -1.0, 0.0, 101.0]),
    ],
)
def test_log_prob_outside_support_is_minus_inf(name, outside, dtype, device):
    d, _ = univariate(name, dtype, device)
    x = torch.tensor(outside, dtype=dtype, device=device, requires_grad=True)
    log_p = d.log_prob(x)
    assert (log_p == -math.inf).all()
    (grad,) = torch.autograd.grad(log_p.clamp(min=-1e3).sum(), x, allow_unused=True)
    assert grad is None or not grad.isnan().any()


def test_transformed_uniform_rsample_gradient(dtype, device):
    upper = torch.tensor(100.0, dtype=dtype, device=device, requires_grad=True)
    d = TransformedUniform(
        ExpTransform().inv, torch.tensor(1.0, dtype=dtype, device=device), upper
    )
    x = d.rsample((1000,))
    assert ((x >= 1.0) & (x <= 100.0)).all()
    (grad,) = torch.autograd.grad(x.mean(), upper)
    assert grad > 0


def test_generalized_normal_rsample_gradient(dtype, device):
    beta = torch.tensor(1.5, dtype=dtype, device=device, requires_grad=True)
    x = GeneralizedNormal(beta).rsample((1000,))
    (grad,) = torch.autograd.grad(x.abs().mean(), beta)
    assert torch.isfinite(grad)


def test_truncated_rsample_gradient_moves_with_bounds(dtype, device):
    lower = torch.tensor(-1.0, dtype=dtype, device=device, requires_grad=True)
    d = Truncated(
        Normal(torch.tensor(0.0, dtype=dtype), torch.tensor(1.0, dtype=dtype)), lower, 1.0
    )
    x = d.rsample((1000,))
    assert ((x >= -1.0) & (x <= 1.0)).all()
    (grad,) = torch.autograd.grad(x.mean(), lower)
    assert grad > 0  # raising the lower bound raises every sample


def test_minimum_and_maximum_of_two_normals(dtype, device):
    # E[min(X1, X2)] = -1 / sqrt(pi) for standard normals: check through the density.
    normal = Normal(torch.tensor(0.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    x = torch.linspace(-12, 12, 100_001, dtype=torch.float64)
    for d, expected in (
        (Minimum(normal, 2), -1 / math.sqrt(math.pi)),
        (Maximum(normal, 2), 1 / math.sqrt(math.pi)),
    ):
        mean = torch.trapezoid(d.log_prob(x).exp() * x, x)
        assert abs(mean.item() - expected) < 1e-8


def test_order_statistics_of_exponentials():
    # The minimum of n Exp(1) is Exp(n).
    base = Exponential(torch.tensor(1.0, dtype=torch.float64))
    x = torch.tensor([0.1, 1.0, 3.0], dtype=torch.float64)
    expected = Exponential(torch.tensor(4.0, dtype=torch.float64)).log_prob(x)
    torch.testing.assert_close(Minimum(base, 4).log_prob(x), expected)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda n: Minimum(Normal(0.0, 1.0), 0), "n must"),
        (lambda n: Maximum(Normal(0.0, 1.0), 2.0), "n must"),
        (lambda n: TopK(Normal(0.0, 1.0), 3, 2), "n must be at least k"),
        (
            lambda n: Sort(
                torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2)), 2
            ),
            "univariate",
        ),
        (
            lambda n: Truncated(
                torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2)), 0, 1
            ),
            "univariate",
        ),
    ],
)
def test_bad_arguments_raise(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make(None)
