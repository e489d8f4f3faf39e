"""Element-wise transforms: the contract kit, plus what the kit cannot see."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.core.testing import check_univariate
from flows.core.transforms import (
    AdditiveTransform,
    CircularShiftTransform,
    CosTransform,
    GaussianizationTransform,
    MonotonicAffineTransform,
    SignedPowerTransform,
    SinTransform,
    SoftclipTransform,
)

UNIVARIATE = [
    pytest.param(MonotonicAffineTransform, [(), ()], {}, False, id="affine"),
    pytest.param(MonotonicAffineTransform, [(), ()], {"slope": 1e-2}, False, id="affine-slope"),
    pytest.param(AdditiveTransform, [()], {}, False, id="additive"),
    pytest.param(GaussianizationTransform, [(5,), (5,)], {}, True, id="gaussianization"),
    pytest.param(SoftclipTransform, [], {"bound": 3.0}, False, id="softclip"),
    pytest.param(CircularShiftTransform, [], {"bound": 2.0}, False, id="circular-shift"),
    pytest.param(CosTransform, [], {}, False, id="cos"),
    pytest.param(SinTransform, [], {}, False, id="sin"),
]


@pytest.mark.parametrize(("constructor", "shapes", "hyper", "iterative"), UNIVARIATE)
@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
def test_univariate_contract(constructor, shapes, hyper, iterative, batch, dtype, device):
    check_univariate(
        constructor, shapes, hyper=hyper, batch=batch, dtype=dtype, device=device,
        iterative=iterative,
    )  # fmt: skip


@pytest.mark.parametrize("name", ["affine", "additive"])
def test_registered_univariate_contract(name, dtype, device):
    check_univariate(name, dtype=dtype, device=device)


def test_monotonic_affine_slope_stays_within_bounds(dtype):
    scale = torch.tensor([-1e6, -10.0, 0.0, 10.0, 1e6], dtype=dtype)
    t = MonotonicAffineTransform(torch.zeros((), dtype=dtype), scale, slope=1e-2)
    _, ladj = t.call_and_ladj(torch.ones(5, dtype=dtype))
    slopes = ladj.exp()
    assert (slopes >= 1e-2 * (1 - 1e-4)).all() and (slopes <= 1e2 * (1 + 1e-4)).all()
    assert slopes[2] == 1.0
    assert slopes[0] < slopes[1] < slopes[2] < slopes[3] < slopes[4]


def test_monotonic_affine_is_near_identity_for_small_scale(dtype):
    t = MonotonicAffineTransform(torch.tensor(0.5, dtype=dtype), torch.tensor(1e-3, dtype=dtype))
    x = torch.tensor([1.0, 2.0], dtype=dtype)
    torch.testing.assert_close(t(x), x * math.exp(1e-3) + 0.5, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("slope", [0.0, 1.0, -1e-3, "1e-3"])
def test_monotonic_affine_rejects_bad_slope(slope):
    with pytest.raises(ValueError, match="slope"):
        MonotonicAffineTransform(0.0, 0.0, slope=slope)


def test_monotonic_affine_broadcasts_parameters_over_inputs(dtype):
    t = MonotonicAffineTransform(torch.zeros(4, 1, dtype=dtype), torch.ones(4, 1, dtype=dtype))
    y, ladj = t.call_and_ladj(torch.randn(3, dtype=dtype))
    assert y.shape == ladj.shape == (4, 3)


def test_monotonic_affine_first_built_in_inference_mode_still_trains(device):
    # Its constants are cached per slope, dtype and device: built in inference mode first
    # (a slope no other test uses), they must still serve transforms that autograd records.
    shift = torch.zeros(4, dtype=torch.float64, device=device)
    with torch.inference_mode():
        MonotonicAffineTransform(shift, torch.zeros_like(shift), slope=0.0123)
    scale = torch.randn(4, dtype=torch.float64, device=device, requires_grad=True)
    y, ladj = MonotonicAffineTransform(shift, scale, slope=0.0123).call_and_ladj(shift + 1)
    (y.sum() + ladj.sum()).backward()
    bound = -math.log(0.0123)
    expected = torch.cosh(scale.detach() / bound) ** -2 * (torch.exp(ladj.detach()) + 1)
    torch.testing.assert_close(scale.grad, expected)


def test_monotonic_affine_accepts_integer_parameters():
    t = MonotonicAffineTransform(torch.tensor(1), torch.tensor(1))
    bound = -math.log(1e-3)
    torch.testing.assert_close(t.log_scale, torch.tensor(math.tanh(1 / bound) * bound))


def test_softclip_maps_into_bound(dtype):
    t = SoftclipTransform(bound=2.0)
    x = torch.tensor([-1e8, -3.0, 0.0, 3.0, 1e8], dtype=dtype)
    y = t(x)
    assert (y.abs() < 2.0).all() or dtype == torch.float32
    assert (y.abs() <= 2.0).all()
    torch.testing.assert_close(y[2], x[2])
    assert t.codomain.check(torch.tensor(1.99, dtype=dtype))


def test_circular_shift_is_half_turn_involution(dtype):
    t = CircularShiftTransform(bound=math.pi)
    x = torch.linspace(-math.pi, math.pi - 1e-3, 17, dtype=dtype)
    y = t(x)
    assert ((y >= -math.pi) & (y < math.pi)).all()
    # Half a turn: the distance on the circle between x and y is pi.
    torch.testing.assert_close(torch.cos(y), -torch.cos(x))
    torch.testing.assert_close(torch.sin(y), -torch.sin(x))
    torch.testing.assert_close(t(y), x)


def test_cos_and_sin_domains():
    assert CosTransform().domain.check(torch.tensor(3.0))
    assert not CosTransform().domain.check(torch.tensor(-0.5))
    assert SinTransform().domain.check(torch.tensor(-1.5))
    assert not SinTransform().domain.check(torch.tensor(2.0))
    assert CosTransform().sign == -1 and SinTransform().sign == 1


@pytest.mark.parametrize("bound", [0.0, -1.0, "pi", True])
def test_bounded_transforms_reject_bad_bound(bound):
    with pytest.raises(ValueError, match="bound"):
        SoftclipTransform(bound=bound)
    with pytest.raises(ValueError, match="bound"):
        CircularShiftTransform(bound=bound)


@settings(max_examples=50, deadline=None)
@given(
    alpha=st.floats(-1.5, 1.5),
    x=st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=8),
    negative=st.booleans(),
)
def test_signed_power_inverse_and_ladj(alpha, x, negative):
    # Away from 0, where the derivative is 0 or infinite: the contract kit's extreme
    # check (which includes x = 0) does not apply.
    x = torch.tensor(x, dtype=torch.float64) * (-1 if negative else 1)
    x.requires_grad_()
    t = SignedPowerTransform(torch.tensor(alpha, dtype=torch.float64))
    y, ladj = t.call_and_ladj(x)
    torch.testing.assert_close(y, torch.sign(x) * x.abs() ** math.exp(alpha))
    (dy,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(ladj, dy.abs().log())
    x_back, ladj_back = t.inverse_and_ladj(y)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(ladj_back, -ladj)
    torch.testing.assert_close(t.inv(y), x)


def test_gaussianization_is_finite_far_in_the_tails(dtype):
    t = GaussianizationTransform(
        torch.tensor([0.0, 1.0], dtype=dtype), torch.zeros(2, dtype=dtype)
    )
    x = torch.tensor([-1e6, -100.0, 100.0, 1e6], dtype=dtype)
    y, ladj = t.call_and_ladj(x)
    assert torch.isfinite(y).all() and torch.isfinite(ladj).all()
    assert (y.diff() > 0).all()


def test_gaussianization_of_one_standard_component_is_identity(dtype):
    t = GaussianizationTransform(torch.zeros(1, dtype=dtype), torch.zeros(1, dtype=dtype))
    x = torch.linspace(-30, 30, 13, dtype=dtype)
    y, ladj = t.call_and_ladj(x)
    tol = 1e-10 if dtype == torch.float64 else 1e-4
    torch.testing.assert_close(y, x, rtol=tol, atol=tol)
    torch.testing.assert_close(ladj, torch.zeros_like(x), rtol=tol, atol=tol)


def test_gaussianization_rejects_scalar_parameters():
    with pytest.raises(ValueError, match="shift and scale"):
        GaussianizationTransform(torch.tensor(0.0), torch.tensor(0.0))


@pytest.mark.parametrize(
    ("transform", "text"),
    [
        (MonotonicAffineTransform(0.0, 0.0, slope=0.01), "MonotonicAffineTransform(slope=0.01)"),
        (AdditiveTransform(0.0), "AdditiveTransform()"),
        (SoftclipTransform(2.0), "SoftclipTransform(bound=2)"),
        (GaussianizationTransform(torch.zeros(3), torch.zeros(3)), "components=3"),
        (SoftclipTransform(2.0).inv, "SoftclipTransform(bound=2).inv"),
    ],
)
def test_univariate_repr(transform, text):
    assert text in repr(transform)
