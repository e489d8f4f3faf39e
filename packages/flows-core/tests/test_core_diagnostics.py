"""Tests of flows.core.diagnostics: ESS per sample, the Pareto k-hat and PSIS smoothing."""

from __future__ import annotations

import math

import pytest
import torch

from flows.core import importance_diagnostics, psis
from flows.core.diagnostics import gpd_fit, tail_length


def uniform(shape: tuple[int, ...], seed: int, device: torch.device) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator, dtype=torch.float64).to(device)


def profile_mle(x: torch.Tensor) -> float:
    """The maximum-likelihood GPD shape by a grid search over theta = k / sigma, refined
    twice, written independently of gpd_fit: k(theta) = mean log(1 + theta x), and theta
    maximizes log theta - log k(theta) - k(theta)."""
    x = x.cpu()
    low, high = math.log(1e-4 / float(x.mean())), math.log(1e4 / float(x.mean()))
    for _ in range(3):
        theta = torch.linspace(low, high, 2001, dtype=torch.float64).exp()
        k = torch.log1p(theta[:, None] * x).mean(dim=1)
        best = int((torch.log(theta) - torch.log(k) - k).argmax())
        width = (high - low) / 2000
        low, high = math.log(theta[best]) - 2 * width, math.log(theta[best]) + 2 * width
    return float(k[best])


@pytest.mark.parametrize("shape", [0.3, 0.5, 0.7, 0.9])
def test_khat_recovers_the_shape_of_pareto_tailed_weights(shape, dtype, device):
    # w = U^-shape is Pareto with tail index 1 / shape: its excesses are exactly GPD(shape).
    log_weights = (-shape * uniform((10000, 16), seed=int(10 * shape), device=device).log()).to(
        dtype
    )
    ess, khat = importance_diagnostics(log_weights)
    assert khat.shape == (16,) and ess.shape == (16,)
    # One estimate from 300 tail draws has a standard error near 0.08; 16 of them, 0.02.
    assert abs(float(khat.mean()) - shape) < 0.06


def test_light_tailed_weights_have_a_small_khat(device):
    # Log-normal weights with sigma 0.3 have every moment: k-hat far below 0.5.
    generator = torch.Generator().manual_seed(0)
    log_weights = 0.3 * torch.randn(4000, generator=generator, dtype=torch.float64).to(device)
    _, khat = importance_diagnostics(log_weights)
    assert khat < 0.3


def test_gpd_fit_matches_the_maximum_likelihood_estimate(device):
    n, shape, scale = 2000, 0.4, 2.0
    x = scale / shape * (uniform((n,), seed=1, device=device) ** -shape - 1)
    k, sigma = gpd_fit(x.sort().values)
    # Undo the prior's pull toward 1/2, (n k + 5) / (n + 10), to compare the fits themselves.
    raw = ((n + 10) * k - 5) / n
    assert abs(raw - profile_mle(x)) < 0.01
    assert abs(k - shape) < 0.08 and abs(sigma - scale) < 0.2


def test_gpd_fit_of_exponential_draws_has_shape_zero(device):
    x = -0.5 * torch.log(uniform((5000,), seed=2, device=device))  # exponential, rate 2
    k, sigma = gpd_fit(x.sort().values)
    assert abs(k) < 0.05 and abs(sigma - 0.5) < 0.03


def test_ess_per_sample_of_known_weights(dtype, device):
    def ess(values):
        return importance_diagnostics(torch.tensor(values, dtype=dtype, device=device))[0]

    assert ess([0.0] * 50) == 1.0  # equal weights: every draw counts
    assert ess([0.0, 0.0, -math.inf, -math.inf]) == pytest.approx(0.5, abs=1e-12)
    assert ess([0.0] + [-1e4] * 99) == pytest.approx(0.01, abs=1e-12)  # one draw holds it all
    # Log-weights N(0, s^2): E[w]^2 / E[w^2] = exp(-s^2).
    generator = torch.Generator().manual_seed(3)
    log_weights = 0.5 * torch.randn(200000, generator=generator, dtype=torch.float64)
    value = importance_diagnostics(log_weights.to(dtype=dtype, device=device))[0]
    assert value == pytest.approx(math.exp(-0.25), abs=0.01)


def test_psis_smooths_only_the_largest_weights_and_normalizes(dtype, device):
    log_weights = (-0.8 * uniform((2000,), seed=4, device=device).log()).to(dtype)
    smoothed, khat = psis(log_weights)
    assert smoothed.shape == log_weights.shape and smoothed.dtype == dtype
    assert float(smoothed.double().logsumexp(0)) == pytest.approx(0.0, abs=1e-5)
    tail = tail_length(2000)
    assert tail == 135
    # The body keeps its relative weights; the tail is replaced, its order kept, and no
    # smoothed weight exceeds the largest raw one.
    shift = log_weights - smoothed
    order = torch.argsort(log_weights)
    body, top = order[:-tail], order[-tail:]
    torch.testing.assert_close(shift[body], shift[body][0].expand(body.numel()))
    assert not torch.allclose(shift[top], shift[body][0].expand(tail))
    assert bool((smoothed[top].diff() >= 0).all())
    assert float((smoothed + shift[body][0]).max()) <= float(log_weights.max()) + 1e-6
    assert khat == importance_diagnostics(log_weights)[1]


def test_psis_over_a_batch_is_psis_of_each_column(device):
    log_weights = -0.6 * uniform((500, 3), seed=5, device=device).log()
    smoothed, khat = psis(log_weights)
    assert khat.shape == (3,)
    for i in range(3):
        column, k = psis(log_weights[:, i])
        torch.testing.assert_close(smoothed[:, i], column)
        assert float(khat[i]) == k


def test_degenerate_weights_give_infinite_or_minus_infinite_khat(device):
    assert importance_diagnostics(torch.zeros(20, device=device))[1] == math.inf  # tail of 4
    assert importance_diagnostics(torch.zeros(21, device=device))[1] == -math.inf  # flat tail
    one_infinite = torch.tensor([0.0] * 30 + [math.inf], device=device)
    smoothed, khat = psis(one_infinite)
    assert khat == math.inf and float(smoothed[-1]) == 0.0
    assert importance_diagnostics(one_infinite)[0] == 0.0
    # Log weights 800 apart: the others' weights underflow beside the largest, no tail to fit
    # (an improper target's fit gets there); the heaviest tail, not NaN.
    dwarfed = torch.cat([torch.zeros(1), torch.rand(999) - 800.0]).to(device)
    smoothed, khat = psis(dwarfed)
    assert khat == math.inf and float(smoothed[0]) == 0.0
    assert importance_diagnostics(dwarfed)[1] == math.inf


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (
            [0.0, float("nan")],
            ValueError,
            "log_weights holds NaN; a log weight is a number or -inf",
        ),
        (0.0, ValueError, r"log_weights must have shape \(S,\) or \(S, \*batch\) with S >= 1 "),
    ],
)
def test_bad_log_weights_are_refused(value, error, message, device):
    with pytest.raises(error, match=message):
        importance_diagnostics(torch.tensor(value, device=device))
    with pytest.raises(TypeError, match="log_weights must be a tensor, got list"):
        psis([0.0, 1.0])


# arviz 0.21.0's psislw(log_weights, reff=1.0) on the log weights -scale * log(U), U uniform
# from the seeded generator below: k-hat, the first smoothed log weight and the largest. arviz
# is no dependency of flows-core: these values, computed once with it, are an independent
# implementation's answers to agree with.
ARVIZ_PSISLW = [
    (6, 0.7, 0.6552507937660433, -8.745517935469927, -3.5446659765157946),
    (7, 0.3, 0.35392342820703543, -7.988099010709796, -6.000128493452177),
    (8, 1.2, 1.14326501932263, -10.550798530664323, -1.214589287360348),
]


@pytest.mark.parametrize(("seed", "scale", "their_k", "their_first", "their_max"), ARVIZ_PSISLW)
def test_psis_agrees_with_arviz(seed, scale, their_k, their_first, their_max, device):
    log_weights = -scale * uniform((3000,), seed=seed, device=device).log()
    smoothed, khat = psis(log_weights)
    assert khat == pytest.approx(their_k, abs=1e-9)
    assert smoothed[0].item() == pytest.approx(their_first, abs=1e-9)
    assert smoothed.max().item() == pytest.approx(their_max, abs=1e-9)
