"""Supports: every preset samples inside ``support=``, with exact densities and -inf outside.

The densities are checked against the unbounded flow (the same weights, without a support)
plus the change of variables, written out here independently of the transform.
"""

from __future__ import annotations

import inspect
import math
import os
import tempfile

import pytest
import torch
from torch import nn
from torch.distributions import Independent, Normal, constraints

import flows.core
from flows.core import GMM, MAF, LazyDistribution, with_support
from flows.core.plugins import get_preset, list_presets
from flows.core.support import normalize_support
from flows.core.testing import check_elementwise, check_univariate
from flows.core.transforms import SupportTransform
from flows.core.transforms.support import INTERVAL_GAIN

INF = math.inf
# One feature of each kind: an interval, a lower bound, an upper bound, none.
LOW = [-1.0, 0.5, -INF, -INF]
HIGH = [2.0, INF, 3.0, INF]
FIRST_PARTY = ("flows-core", "flows-splines", "flows-ode")
PRESETS = sorted(p.spec.name for p in list_presets() if p.distribution in FIRST_PARTY)


def bounds(dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        torch.tensor(LOW, dtype=dtype, device=device),
        torch.tensor(HIGH, dtype=dtype, device=device),
    )


def small(name: str, **kwargs):
    """Preset ``name`` with one small transform, where it takes those options."""
    constructor = get_preset(name)
    parameters = inspect.signature(constructor).parameters
    options = {"transforms": 1} if "transforms" in parameters else {}
    try:
        return constructor(**kwargs, **options, hidden_features=[8])
    except TypeError:  # a preset without a network for these options (GMM, planar, ...)
        return constructor(**kwargs, **options)


def inside(x: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> bool:
    return bool(((x > low) & (x < high)).all())


def change_of_variables(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = g^{-1}(x)`` and ``log |dy/dx|`` summed over features, for LOW and HIGH, in float64:
    logit of the interval's fraction over the gain, inverse softplus of the distance to a
    half-line's bound."""
    x = x.double()
    a, b = -1.0, 2.0
    u = (x[..., 0] - a) / (b - a)
    gain = math.pi / math.sqrt(3.0)  # a uniform u maps to a y of unit variance
    y0 = torch.logit(u) / gain
    l0 = -torch.log(u * (1 - u)) - math.log((b - a) * gain)
    d1 = x[..., 1] - 0.5
    y1 = torch.log(torch.expm1(d1))
    l1 = d1 - torch.log(torch.expm1(d1))
    d2 = 3.0 - x[..., 2]
    y2 = -torch.log(torch.expm1(d2))
    l2 = d2 - torch.log(torch.expm1(d2))
    y = torch.stack([y0, y1, y2, x[..., 3]], dim=-1)
    return y, l0 + l1 + l2


def trained_like(flow: nn.Module, dtype: torch.dtype, device: torch.device) -> nn.Module:
    """``flow`` moved away from its near-identity start, on ``device`` in ``dtype``."""
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return flow.to(dtype=dtype, device=device)


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_samples_inside_its_support_with_finite_densities(name, dtype, device):
    torch.manual_seed(0)
    flow = trained_like(small(name, features=4, support=(LOW, HIGH)), dtype, device)
    x = flow().sample((16,))
    low, high = bounds(dtype, device)
    assert x.shape == (16, 4) and x.dtype == dtype and x.device.type == device.type
    assert inside(x, low, high)
    log_p = flow().log_prob(x)
    assert log_p.shape == (16,) and torch.isfinite(log_p).all()


@pytest.mark.parametrize("name", ["maf", "realnvp", "gf", "gmm"])
def test_log_prob_is_the_unbounded_density_plus_the_change_of_variables(name, dtype, device):
    torch.manual_seed(0)
    bounded = trained_like(small(name, features=4, context=2, support=(LOW, HIGH)), dtype, device)
    torch.manual_seed(1)
    unbounded = small(name, features=4, context=2).to(dtype=dtype, device=device)
    # Without a support, a preset has the same weights (keys and shapes) as with one.
    unbounded.load_state_dict(bounded.state_dict())
    c = torch.randn(5, 2, dtype=dtype, device=device)
    x = bounded(c).sample((3,))  # (3, 5, 4): three samples for each of five contexts
    y, ladj = change_of_variables(x)
    expected = unbounded(c).log_prob(y.to(dtype)).double() + ladj
    tolerance = 1e-3 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(bounded(c).log_prob(x).double(), expected, atol=tolerance, rtol=0)


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_rsample_and_log_prob_agrees_with_log_prob_and_differentiates(name, dtype, device):
    torch.manual_seed(0)
    flow = trained_like(small(name, features=4, support=(LOW, HIGH)), dtype, device)
    x, log_q = flow().rsample_and_log_prob((8,))
    assert inside(x, *bounds(dtype, device))
    tolerance = 1e-4 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(log_q, flow().log_prob(x), atol=tolerance, rtol=tolerance)
    grads = torch.autograd.grad((x.sum() + log_q.sum()), list(flow.parameters()))
    assert all(torch.isfinite(g).all() for g in grads) and any((g != 0).any() for g in grads)


def test_log_prob_is_minus_inf_outside_and_on_the_bounds_nan_for_nan(dtype, device):
    torch.manual_seed(0)
    flow = trained_like(MAF(4, transforms=2, support=(LOW, HIGH)), dtype, device)
    good = [0.0, 1.0, 0.0, 5.0]
    points = [good]
    for feature, bad in [(0, -1.0), (0, 2.0), (0, 7.0), (1, 0.5), (1, -3.0), (2, 3.0), (2, INF)]:
        point = list(good)
        point[feature] = bad
        points.append(point)
    x = torch.tensor(points, dtype=dtype, device=device, requires_grad=True)
    log_p = flow().log_prob(x)
    assert torch.isfinite(log_p[0]) and (log_p[1:] == -INF).all()
    # The points outside make no gradient NaN, for x or the weights: the flow never sees them.
    loss = torch.where(torch.isfinite(log_p), log_p, torch.zeros_like(log_p)).sum()
    grads = torch.autograd.grad(loss, [x, *flow.parameters()])
    assert all(torch.isfinite(g).all() for g in grads)
    assert (grads[0][1:] == 0).all() and (grads[0][0] != 0).all()
    nan = torch.tensor([math.nan, 1.0, 0.0, 5.0], dtype=dtype, device=device)
    assert torch.isnan(flow().log_prob(nan))


def test_float32_densities_and_gradients_stay_finite_at_the_edges(device):
    torch.manual_seed(0)
    flow = MAF(4, transforms=2, support=([0.0, 0.0, -INF, -1e-3], [1.0, INF, 0.0, 1e-3]))
    flow = trained_like(flow, torch.float32, device)
    low, high = flow._support.low, flow._support.high
    margin = math.sqrt(torch.finfo(torch.float32).tiny)  # 1e-19: how close samples may get
    near_low = torch.maximum(torch.nextafter(low, high), low + margin)
    near_high = torch.minimum(torch.nextafter(high, low), high - margin)
    # The closest floats inside every finite bound; 5 away from 0 on the open sides.
    near_low = torch.where(torch.isfinite(low), near_low, torch.full_like(low, -5.0))
    near_high = torch.where(torch.isfinite(high), near_high, torch.full_like(high, 5.0))
    x = torch.stack([near_low, near_high]).requires_grad_()
    log_p = flow().log_prob(x)
    assert torch.isfinite(log_p).all()
    grads = torch.autograd.grad(log_p.sum(), [x, *flow.parameters()])
    assert all(torch.isfinite(g).all() for g in grads)
    # Base noise far out in the tails still lands strictly inside.
    z = torch.tensor([[-60.0] * 4, [60.0] * 4], device=device)
    samples = flow().transform.inv(z)
    assert inside(samples, low, high)


def test_presets_without_support_are_built_as_before(dtype, device):
    torch.manual_seed(0)
    plain = MAF(3, transforms=2).to(dtype=dtype, device=device)
    torch.manual_seed(0)
    given_none = MAF(3, transforms=2, support=None).to(dtype=dtype, device=device)
    assert "support" not in plain.arguments and given_none.arguments == plain.arguments
    assert not plain._forward_hooks  # nothing runs after forward: log_prob as fast as before
    x = torch.randn(4, 3, dtype=dtype, device=device)
    torch.testing.assert_close(plain().log_prob(x), given_none().log_prob(x), atol=0, rtol=0)
    bounded = MAF(3, transforms=2, support=(-INF, INF))
    assert list(bounded.state_dict()) == list(plain.state_dict())


def test_checkpoint_records_the_support_in_plain_floats(dtype, device):
    torch.manual_seed(0)
    box = constraints.independent(constraints.interval(torch.zeros(3), torch.ones(3) * 2), 1)
    flow = trained_like(GMM(3, components=2, support=box), dtype, device)
    assert flow.arguments["support"] == ([0.0] * 3, [2.0] * 3)
    x = flow().sample((5,))
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "gmm.pt")
        flows.core.save(flow, path)
        loaded = flows.core.load(path, map_location=device).flow.to(dtype)
    assert loaded.arguments == flow.arguments
    torch.testing.assert_close(loaded().log_prob(x), flow().log_prob(x))
    assert inside(loaded().sample((50,)), torch.zeros((), device=device), 2)


@pytest.mark.parametrize(
    "support, expected",
    [
        (constraints.real, (-INF, INF)),
        (constraints.real_vector, (-INF, INF)),
        (constraints.positive, (0.0, INF)),
        (constraints.greater_than(-2.0), (-2.0, INF)),
        (constraints.greater_than_eq(1.0), (1.0, INF)),
        (constraints.less_than(3.0), (-INF, 3.0)),
        (constraints.unit_interval, (0.0, 1.0)),
        (constraints.half_open_interval(-1.0, 1.0), (-1.0, 1.0)),
        (
            constraints.independent(
                constraints.interval(torch.tensor([0.0, -1.0]), torch.tensor([1.0, 4.0])), 1
            ),
            ([0.0, -1.0], [1.0, 4.0]),
        ),
        ((0, 1), (0.0, 1.0)),
        ((torch.tensor(0.0), [1, INF]), ([0.0, 0.0], [1.0, INF])),
    ],
)
def test_supports_are_normalized_to_plain_floats(support, expected):
    assert normalize_support(support) == expected


@pytest.mark.parametrize(
    "support, error, message",
    [
        ((1.0, 1.0), ValueError, "support: the lower bound 1.0 must be below the upper bound 1.0"),
        (
            ([0.0, 2.0, 0.0], [1.0, 1.0, 1.0]),
            ValueError,
            "support: feature 1: the lower bound 2.0 must be below the upper bound 1.0",
        ),
        (([0.0] * 2, [1.0] * 2), ValueError, "support has bounds for 2 features, but the flow"),
        (([0.0] * 3, [1.0] * 2), ValueError, r"support: the lower bounds \(3\) and upper bounds"),
        ((math.nan, 1.0), ValueError, "support: bounds must be numbers, got NaN"),
        ((INF, INF), ValueError, "support: the lower bound inf must be below"),
        ("0:1", TypeError, "support must be"),
        ((0.0, "1"), TypeError, "support's upper bound must be a number"),
        (constraints.simplex, TypeError, "support must be .* got the constraint"),
        (constraints.nonnegative_integer, TypeError, "support must be continuous"),
    ],
)
def test_bad_supports_are_refused_naming_support(support, error, message):
    with pytest.raises(error, match=message):
        MAF(3, support=support)


def test_with_support_wraps_any_lazy_distribution(dtype, device):
    class Gaussian(LazyDistribution):  # a third party's flow: no Preset, no arguments
        def __init__(self) -> None:
            super().__init__()
            self.loc = nn.Parameter(torch.tensor([0.3, -0.2, 1.0, 0.0]))

        def forward(self, c=None):
            return Independent(Normal(self.loc, torch.ones_like(self.loc)), 1)

    gaussian = Gaussian().to(dtype=dtype, device=device)
    flow = with_support(gaussian, (LOW, HIGH), features=4).to(dtype=dtype, device=device)
    assert list(flow.parameters()) == [gaussian.loc]
    torch.manual_seed(0)
    x = flow().sample((64,))
    assert inside(x, *bounds(dtype, device))
    y, ladj = change_of_variables(x)
    expected = gaussian().log_prob(y.to(dtype)).double() + ladj
    tolerance = 1e-3 if dtype == torch.float32 else 1e-9
    torch.testing.assert_close(flow().log_prob(x).double(), expected, atol=tolerance, rtol=0)
    with pytest.raises(ValueError, match="support has bounds for 4 features, but the flow has 3"):
        with_support(gaussian, (LOW, HIGH), features=3)
    with pytest.raises(TypeError, match="flow must be a LazyDistribution, got Linear"):
        with_support(nn.Linear(2, 2), (0, 1))


@pytest.mark.parametrize("low, high", [(0.0, 1.0), (-3.0, 5.0), (2.0, INF), (-INF, 1.0)])
def test_support_transform_honours_the_univariate_contract(low, high, dtype, device):
    check_univariate(
        SupportTransform, [], hyper={"low": low, "high": high}, dtype=dtype, device=device
    )


def test_support_transform_honours_the_elementwise_contract(dtype, device):
    low = torch.tensor([*LOW, 0.0, -1e-3, 100.0], dtype=dtype, device=device)
    high = torch.tensor([*HIGH, 1e-6, 1e-3, 101.0], dtype=dtype, device=device)
    check_elementwise(SupportTransform(low, high), features=7, dtype=dtype, device=device)


@pytest.mark.parametrize(
    "kind, low, high",
    [
        ("interval", [-1.0, 0.0, 100.0], [2.0, 1e-6, 101.0]),
        ("lower", [0.5, -3.0, 0.0], [INF, INF, INF]),
        ("upper", [-INF, -INF, -INF], [3.0, 0.0, -1e-3]),
        ("real", [-INF] * 3, [INF] * 3),
    ],
)
def test_each_kind_alone_honours_the_contract_and_equals_the_mixed_map(
    kind, low, high, dtype, device
):
    low_t = torch.tensor(low, dtype=dtype, device=device)
    high_t = torch.tensor(high, dtype=dtype, device=device)
    alone = SupportTransform(low_t, high_t, kind)
    check_elementwise(alone, features=3, dtype=dtype, device=device)
    mixed = SupportTransform(low_t, high_t)
    assert mixed.kind == "mixed" and SupportTransform(low, high).kind == kind
    y = 5 * torch.randn(32, 3, dtype=dtype, device=device)
    for got, expected in zip(alone.call_and_ladj(y), mixed.call_and_ladj(y), strict=True):
        torch.testing.assert_close(got, expected)
    x = alone(y)
    for got, expected in zip(alone.inv.call_and_ladj(x), mixed.inv.call_and_ladj(x), strict=True):
        torch.testing.assert_close(got, expected)


def test_mixed_kinds_computed_by_groups_equal_the_masked_map(dtype, device):
    from flows.core.support import Support

    grouped = Support(LOW, HIGH).to(dtype=dtype, device=device).transform()
    assert [kind for kind, _ in grouped.groups] == ["interval", "lower", "upper", "real"]
    check_elementwise(grouped, features=4, dtype=dtype, device=device)
    masked = SupportTransform(*bounds(dtype, device))
    y = 5 * torch.randn(32, 4, dtype=dtype, device=device)
    for got, expected in zip(grouped.call_and_ladj(y), masked.call_and_ladj(y), strict=True):
        torch.testing.assert_close(got, expected)
    x = masked(y)
    for got, expected in zip(
        grouped.inv.call_and_ladj(x), masked.inv.call_and_ladj(x), strict=True
    ):
        torch.testing.assert_close(got, expected)


def test_interior_points_lie_strictly_inside_for_every_kind(dtype, device):
    cases = {
        "interval": ([-1.0, 2.0], [3.0, 2.5]),
        "lower": ([0.5, -7.0], [INF, INF]),
        "upper": ([-INF, -INF], [3.0, -2.0]),
        "real": ([-INF, -INF], [INF, INF]),
        "mixed": ([-1.0, 0.5, -INF, -INF], [2.0, INF, 3.0, INF]),
    }
    like = torch.zeros((), dtype=dtype, device=device)
    for kind, (low, high) in cases.items():
        t = SupportTransform(low, high)
        assert t.kind == kind
        point = t.interior(like)
        assert point.dtype == dtype and point.device.type == device.type
        low_t, high_t = t.bounds(like)
        assert inside(point, low_t, high_t), kind
        # The kind's own formula gives the point the masked formula of a mixed support gives.
        masked = SupportTransform(torch.tensor(low), torch.tensor(high)).interior(like)
        torch.testing.assert_close(point, masked)


def test_check_elementwise_catches_a_sample_on_the_bound(device):
    # A sigmoid without clamping rounds to 1 in float32 for large inputs.
    class Naive(SupportTransform):
        def call_and_ladj(self, y):
            ky = INTERVAL_GAIN * y
            ladj = (
                math.log(INTERVAL_GAIN) - nn.functional.softplus(ky) - nn.functional.softplus(-ky)
            )
            return torch.sigmoid(ky), ladj

    with pytest.raises(
        AssertionError,
        match=r"check_elementwise\(Naive\(low=0, high=1\)\) failed the 'codomain' check: "
        "y = 0.0 at large",
    ):
        check_elementwise(Naive(0.0, 1.0), features=2, dtype=torch.float32, device=device)


def test_export_takes_the_support_along_or_refuses_a_mixture(device):
    from flows.core.export import ExportError, export, load

    torch.manual_seed(0)
    flow = MAF(2, transforms=1, support=(0.0, [1.0, INF])).to(device)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "sample.pt2")
        export(flow, path, what="sample")
        # The exported program runs on the CPU, whatever the flow's device.
        x = load(path)(torch.tensor([[-50.0, -50.0], [0.0, 0.0], [50.0, 50.0]]))
        assert inside(x, torch.tensor(0.0), torch.tensor([1.0, INF]))
        with pytest.raises(ExportError, match="cannot export sample of GMM: its distribution"):
            export(GMM(2, support=(0.0, 1.0)).to(device), path, what="sample")
