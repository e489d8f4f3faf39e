"""FlowEstimator against sbi's ConditionalDensityEstimator contract: shapes, values, devices."""

from __future__ import annotations

import math

import pytest
import torch
from sbi.neural_nets.estimators.base import ConditionalDensityEstimator
from sbi.utils import MultipleIndependent
from torch import nn
from torch.distributions import Gamma, Independent, LogNormal, Uniform, constraints

from flows.sbi import likelihood_nn, posterior_nn


def build(device, dtype, **kwargs):
    """A small MAF posterior estimator for 2-D theta and 3-D x, built on the CPU as sbi does."""
    torch.manual_seed(0)
    theta = 3.0 + 2.0 * torch.randn(200, 2)
    x = torch.randn(200, 3) - 1.0
    options = {"transforms": 2, "hidden_features": (16, 16), **kwargs}
    estimator = posterior_nn("maf", **options)(theta, x)
    return estimator.to(device=device, dtype=dtype)


def test_estimator_is_sbi_conditional_density_estimator(device, dtype):
    estimator = build(device, dtype)
    assert isinstance(estimator, ConditionalDensityEstimator)
    assert estimator.input_shape == torch.Size([2])
    assert estimator.condition_shape == torch.Size([3])


@pytest.mark.parametrize("batch", [1, 4])
def test_sample_shape_is_sample_shape_by_condition_batch(device, dtype, batch):
    estimator = build(device, dtype)
    condition = torch.randn(batch, 3, device=device, dtype=dtype)
    samples = estimator.sample((5, 2), condition)
    assert samples.shape == (5, 2, batch, 2)
    assert samples.device == condition.device and samples.dtype == dtype
    samples, log_p = estimator.sample_and_log_prob((7,), condition)
    assert samples.shape == (7, batch, 2) and log_p.shape == (7, batch)


def test_log_prob_shapes_follow_sbi_broadcasting(device, dtype):
    estimator = build(device, dtype)
    c4 = torch.randn(4, 3, device=device, dtype=dtype)
    c1 = c4[:1]
    cases = [
        (torch.randn(4, 2), c4, (1, 4)),  # (batch, *input)
        (torch.randn(6, 4, 2), c4, (6, 4)),  # (sample, batch, *input)
        (torch.randn(6, 1, 2), c4, (6, 4)),  # one input per sample, every condition
        (torch.randn(6, 4, 2), c1, (6, 4)),  # one condition, as sbi's posterior passes x_o
        (torch.randn(6, 4, 2), torch.randn(6, 4, 3), (6, 4)),  # a condition per sample
    ]
    for input, condition, shape in cases:
        input = input.to(device=device, dtype=dtype)
        condition = condition.to(device=device, dtype=dtype)
        log_p = estimator.log_prob(input, condition)
        assert log_p.shape == shape
        assert log_p.device == condition.device and bool(log_p.isfinite().all())


def test_log_prob_pairs_each_input_with_its_condition(device, dtype):
    estimator = build(device, dtype)
    theta = torch.randn(6, 4, 2, device=device, dtype=dtype)
    x = torch.randn(4, 3, device=device, dtype=dtype)
    batched = estimator.log_prob(theta, x)
    one = estimator.log_prob(theta[:, 2:3], x[2:3])
    torch.testing.assert_close(batched[:, 2:3], one)


def test_sample_and_log_prob_agree_with_log_prob(device, dtype):
    estimator = build(device, dtype)
    x = torch.randn(3, 3, device=device, dtype=dtype)
    samples, log_p = estimator.sample_and_log_prob((5,), x)
    tolerance = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {}
    torch.testing.assert_close(log_p, estimator.log_prob(samples, x), **tolerance)


def test_loss_is_negative_log_prob_per_row(device, dtype):
    estimator = build(device, dtype)
    theta = torch.randn(5, 2, device=device, dtype=dtype)
    x = torch.randn(5, 3, device=device, dtype=dtype)
    loss = estimator.loss(theta, x)
    assert loss.shape == (5,)
    torch.testing.assert_close(loss, -estimator.log_prob(theta, x)[0])
    loss.mean().backward()
    assert all(p.grad is not None for p in estimator.net.parameters())


def test_standardization_changes_log_prob_by_its_log_determinant(device, dtype):
    # "independent" standardizes theta by its simulations' mean m and deviation s: the same
    # flow on pre-standardized theta gives the density of (theta - m) / s, log s_i apart.
    torch.manual_seed(0)
    theta, x = 3.0 + 2.0 * torch.randn(200, 2), torch.randn(200, 3)
    m, s = theta.mean(0), theta.std(0)
    options = {"transforms": 2, "hidden_features": (16, 16)}
    scaled = posterior_nn("maf", **options)(theta, x)
    plain = posterior_nn("maf", z_score_theta="none", **options)((theta - m) / s, x)
    plain.net.load_state_dict(scaled.net.state_dict())
    scaled, plain = (e.to(device=device, dtype=dtype) for e in (scaled, plain))
    m, s = m.to(device=device, dtype=dtype), s.to(device=device, dtype=dtype)
    probe = torch.randn(4, 2, device=device, dtype=dtype)
    condition = torch.randn(4, 3, device=device, dtype=dtype)
    expected = plain.log_prob((probe - m) / s, condition) - s.log().sum()
    torch.testing.assert_close(scaled.log_prob(probe, condition), expected)


def test_density_integrates_to_one_in_original_units(device):
    # A 1-D posterior over theta with a large standardization scale: the density must be
    # normalized in theta's units, not in the standardized ones.
    torch.manual_seed(1)
    theta = 50.0 + 20.0 * torch.randn(300, 1)
    estimator = posterior_nn("maf", transforms=1, hidden_features=(8,))(theta, torch.randn(300, 2))
    estimator = estimator.to(device=device, dtype=torch.float64)
    grid = torch.linspace(-150.0, 250.0, 20001, dtype=torch.float64, device=device)
    x = torch.randn(1, 2, dtype=torch.float64, device=device)
    density = estimator.log_prob(grid[:, None, None], x)[:, 0].exp()
    assert torch.trapezoid(density, grid).item() == pytest.approx(1.0, abs=1e-3)


def test_embedding_net_and_structured_z_score_shape_the_context(device, dtype):
    torch.manual_seed(0)
    embedding = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    theta, x = torch.randn(100, 2), torch.randn(100, 3, 4)
    build_ = posterior_nn(
        "maf", embedding_net=embedding, z_score_x="structured", transforms=1, hidden_features=(8,)
    )
    estimator = build_(theta, x).to(device=device, dtype=dtype)
    assert estimator.condition_shape == (3, 4)
    assert estimator.embedding_net[-1] is embedding
    condition = torch.randn(4, 3, 4, device=device, dtype=dtype)
    assert estimator.sample((6,), condition).shape == (6, 4, 2)
    assert estimator.log_prob(
        torch.randn(6, 4, 2, device=device, dtype=dtype), condition
    ).shape == (6, 4)


def test_likelihood_estimator_swaps_the_roles(device, dtype):
    torch.manual_seed(0)
    theta, x = torch.randn(100, 2), 10.0 + torch.randn(100, 5)
    estimator = likelihood_nn("maf", transforms=1, hidden_features=(8,))(theta, x)
    estimator = estimator.to(device=device, dtype=dtype)
    assert estimator.input_shape == (5,) and estimator.condition_shape == (2,)
    # Standardized x: its shift is the mean of the simulations.
    assert estimator._input_shift.mean().item() == pytest.approx(10.0, abs=0.3)
    samples = estimator.sample((3,), torch.randn(4, 2, device=device, dtype=dtype))
    assert samples.shape == (3, 4, 5)


def test_sbi_option_spellings_reach_the_preset():
    build_ = posterior_nn("maf", num_transforms=4, hidden_features=12)
    estimator = build_(torch.randn(20, 2), torch.randn(20, 3))
    assert estimator.net.arguments["transforms"] == 4
    assert estimator.net.arguments["hidden_features"] == (12, 12)
    with pytest.raises(ValueError, match="pass transforms= or num_transforms=, not both"):
        posterior_nn("maf", num_transforms=4, transforms=3)


def test_sbi_tail_bound_is_the_spline_interval(device):
    theta, x = torch.randn(20, 2, device=device), torch.randn(20, 3, device=device)
    estimator = posterior_nn("nsf", num_bins=4, tail_bound=3.0)(theta, x)
    assert estimator.net.arguments["bound"] == 3.0
    assert estimator.net.arguments["bins"] == 4
    # Outside [-3, 3] every spline is the identity: the flow's first layer leaves 4.0 alone.
    first = estimator.net(torch.zeros(3, device=device)).transform.transforms[0]
    outside = torch.tensor([4.0, -4.0], device=device)
    inside = torch.tensor([2.0, -2.0], device=device)
    assert torch.equal(first(outside), outside)
    assert not torch.equal(first(inside), inside)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: posterior_nn(42), "model must be a preset name or a constructor"),
        (
            lambda: posterior_nn("maf", z_score_theta="bogus"),
            "z_score_theta must be 'independent', 'structured' or 'none', got 'bogus'",
        ),
        (
            lambda: likelihood_nn("maf", z_score_x="transform_to_unconstrained"),
            "z_score_x='transform_to_unconstrained' is not needed here",
        ),
        (lambda: posterior_nn("maf", embedding_net=3), "embedding_net must be a torch.nn.Module"),
    ],
)
def test_bad_arguments_name_the_argument(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call()


@pytest.mark.parametrize("role", ["batch_theta", "batch_x"])
def test_simulations_holding_nan_or_inf_are_refused_by_name(role, device):
    theta, x = torch.randn(20, 2, device=device), torch.randn(20, 3, device=device)
    bad = theta if role == "batch_theta" else x
    bad[3, 1], bad[7, 0] = float("nan"), float("inf")
    with pytest.raises(ValueError, match=f"{role} holds NaN or inf in 2 of 20 simulations"):
        posterior_nn("maf", transforms=1)(theta, x)


def test_wrong_shapes_are_refused():
    estimator = build("cpu", torch.float32)
    with pytest.raises(ValueError, match="Shape of condition"):
        estimator.sample((2,), torch.randn(4, 5))
    with pytest.raises(ValueError, match="do not broadcast"):
        estimator.log_prob(torch.randn(3, 2, 2), torch.randn(4, 3))


def test_to_moves_every_tensor_to_the_requested_device(device):
    estimator = build("cpu", torch.float32).to(device)
    tensors = [*estimator.parameters(), *estimator.buffers()]
    assert tensors and all(t.device.type == device.type for t in tensors)
    log_p = estimator.log_prob(torch.zeros(1, 2, device=device), torch.zeros(1, 3, device=device))
    assert log_p.device.type == device.type and math.isfinite(log_p.item())


@pytest.mark.parametrize("z_score", ["independent", "structured"])
@pytest.mark.parametrize("bounded", [False, True], ids=["unbounded", "box"])
def test_state_dict_loads_into_an_estimator_rebuilt_from_other_simulations(
    device, dtype, z_score, bounded
):
    # Save the weights, rebuild from any batch (its own statistics), load: the same estimator.
    torch.manual_seed(0)
    box = (
        torch.zeros(2, device=device, dtype=dtype),
        torch.full((2,), 10.0, device=device, dtype=dtype),
    )
    theta = 1.0 + 2.0 * torch.rand(200, 2, device=device, dtype=dtype)
    x = theta + 0.3 * torch.randn_like(theta)
    support = {"support": box} if bounded else {}
    build_ = posterior_nn(
        "maf",
        z_score_theta=z_score,
        z_score_x=z_score,
        transforms=2,
        hidden_features=(16,),
        **support,
    )
    trained = build_(theta, x).to(device=device, dtype=dtype)
    with torch.no_grad():  # as a few training steps would, away from the initial weights
        for parameter in trained.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    rebuilt = build_(2.0 * theta + 3.0, 2.0 * x + 3.0).to(device=device, dtype=dtype)
    rebuilt.load_state_dict(trained.state_dict())
    probe = torch.tensor([[2.0, 2.5], [4.0, 1.5], [1.2, 8.0]], device=device, dtype=dtype)
    condition = torch.tensor([[2.0, 2.5], [4.0, 1.5], [1.0, 3.0]], device=device, dtype=dtype)
    expected = trained.log_prob(probe, condition)
    assert bool(expected.isfinite().all())
    torch.testing.assert_close(rebuilt.log_prob(probe, condition), expected)
    torch.manual_seed(1)
    expected = trained.sample((200,), condition)
    torch.manual_seed(1)
    torch.testing.assert_close(rebuilt.sample((200,), condition), expected)


class _NanToZero(nn.Module):
    """An embedding of x that reads a missing (NaN) element as 0, as sbi's NaN-aware ones do."""

    def __init__(self, device, dtype):
        super().__init__()
        self.linear = nn.Linear(3, 4, device=device, dtype=dtype)

    def forward(self, x):
        return self.linear(torch.nan_to_num(x))


def test_nan_padded_x_builds_when_x_is_not_standardized(device, dtype):
    # sbi's pattern for a varying number of iid trials: the missing ones are NaN, the embedding
    # net handles them, z_score_x="none" and append_simulations(..., exclude_invalid_x=False).
    torch.manual_seed(0)
    theta = torch.randn(200, 2, device=device, dtype=dtype)
    x = theta.repeat(1, 2)[:, :3] + 0.1 * torch.randn(200, 3, device=device, dtype=dtype)
    x[::3, 2] = float("nan")
    embedding = _NanToZero(device, dtype)
    options = {"embedding_net": embedding, "transforms": 1, "hidden_features": (8,)}
    estimator = posterior_nn("maf", z_score_x="none", **options)(theta, x)
    estimator = estimator.to(device=device, dtype=dtype)
    log_p = estimator.log_prob(theta[:9], x[:9])
    assert log_p.shape == (1, 9) and bool(log_p.isfinite().all())
    with pytest.raises(ValueError, match="batch_x holds NaN or inf in 67 of 200 simulations"):
        posterior_nn("maf", z_score_x="independent", **options)(theta, x)


def _half_line(device, dtype):
    location = torch.zeros(2, device=device, dtype=dtype)
    return Independent(LogNormal(location, torch.ones_like(location)), 1)


def _two_uniforms(device, dtype):
    one = torch.ones(1, device=device, dtype=dtype)
    return MultipleIndependent([Uniform(0.0 * one, one), Uniform(2.0 * one, 5.0 * one)])


def _uniform_and_gamma(device, dtype):
    one = torch.ones(1, device=device, dtype=dtype)
    return MultipleIndependent([Uniform(0.0 * one, one), Gamma(2.0 * one, one)])


@pytest.mark.parametrize("prior", [_half_line, _two_uniforms, _uniform_and_gamma])
def test_a_prior_support_beyond_a_box_bounds_the_estimator(device, dtype, prior):
    # LogNormal's support is a half-line; sbi's MultipleIndependent (what process_prior makes of
    # a list of priors) concatenates its parts' supports.
    torch.manual_seed(0)
    prior = prior(device, dtype)
    theta = prior.sample((200,))
    x = theta + 0.1 * torch.randn_like(theta)
    build_ = posterior_nn("maf", support=prior.support, transforms=1, hidden_features=(8,))
    estimator = build_(theta, x).to(device=device, dtype=dtype)
    samples = estimator.sample((500,), x[:2])
    assert bool(prior.support.check(samples).all())
    outside = torch.tensor([[[-0.5, 3.0]], [[0.5, -1.0]]], device=device, dtype=dtype)
    assert estimator.log_prob(outside, x[:1]).isneginf().all()
    assert bool(estimator.log_prob(samples[:5], x[:2]).isfinite().all())


@pytest.mark.parametrize(
    "support",
    [constraints.simplex, constraints.cat([constraints.unit_interval, constraints.simplex])],
    ids=["simplex", "cat-with-simplex"],
)
def test_an_unsupported_support_constraint_is_refused_by_name(support, device):
    build_ = posterior_nn("maf", support=support, transforms=1)
    theta, x = torch.rand(20, 2, device=device), torch.randn(20, 3, device=device)
    with pytest.raises(ValueError, match=r"support must be .* half-line .* MultipleIndependent"):
        build_(theta, x)
