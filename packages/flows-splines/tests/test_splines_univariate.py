"""Univariate transforms of flows-splines: the contract kit, numerics at extremes, inverses."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.core.plugins import list_transforms
from flows.core.testing import check_univariate
from flows.splines import (
    BernsteinTransform,
    BoundedBernsteinTransform,
    CircularRQSTransform,
    MonotonicRQSTransform,
    MonotonicTransform,
    SOSPolynomialTransform,
    UnconstrainedMonotonicTransform,
    bisection_inverse,
)

OURS = sorted(p.spec.name for p in list_transforms() if p.distribution == "flows-splines")
ITERATIVE = {"sos", "bernstein", "bounded-bernstein", "monotonic", "umnn"}


def test_plugin_registers_every_family():
    assert {"rqs", "circular-rqs", "monotonic", "umnn", "sos", "bernstein"} <= set(OURS)


@pytest.mark.parametrize("name", OURS)
def test_registered_transform_honours_contract(name, dtype, device):
    check_univariate(name, dtype=dtype, device=device, iterative=name in ITERATIVE)


@pytest.mark.parametrize("hyper", [{"bins": 2}, {"bins": 3}, {"bins": 32, "bound": 2.0}])
def test_rqs_contract_over_hyper_parameters(hyper, dtype, device):
    check_univariate("rqs", hyper=hyper, dtype=dtype, device=device)


def test_rqs_bins_below_one_is_refused():
    from flows.core.plugins import transform_spec

    with pytest.raises(ValueError, match="bins"):
        transform_spec("rqs").spec.resolve(bins=0)


def test_rqs_bad_shapes_and_options_are_refused():
    with pytest.raises(ValueError, match="derivatives"):
        MonotonicRQSTransform(torch.zeros(8), torch.zeros(8), torch.zeros(8))
    with pytest.raises(ValueError, match="bound"):
        MonotonicRQSTransform(torch.zeros(8), torch.zeros(8), torch.zeros(7), bound=-1.0)
    with pytest.raises(ValueError, match="slope"):
        MonotonicRQSTransform(torch.zeros(8), torch.zeros(8), torch.zeros(7), slope=0.5)


def _random_rqs(dtype, device, batch=(16,), bins=8, scale=3.0, **kwargs):
    g = torch.Generator().manual_seed(1)
    params = [scale * torch.randn(*batch, n, generator=g) for n in (bins, bins, bins - 1)]
    return MonotonicRQSTransform(*(p.to(dtype=dtype, device=device) for p in params), **kwargs)


def test_rqs_identity_outside_bound(dtype, device):
    t = _random_rqs(dtype, device, bound=3.0)
    x = torch.tensor([-1e4, -7.0, -3.01, 3.01, 50.0, 1e4], dtype=dtype, device=device)
    x = x.expand(16, -1).T
    y, ladj = t.call_and_ladj(x)
    assert torch.equal(y, x)
    assert torch.equal(ladj, torch.zeros_like(x))
    assert torch.equal(t.inv(x), x)


def test_rqs_maps_bound_onto_itself_and_null_parameters_give_identity(dtype, device):
    t = _random_rqs(dtype, device, bound=2.0)
    ends = torch.tensor([-2.0, 2.0], dtype=dtype, device=device).expand(16, -1).T
    torch.testing.assert_close(t(ends), ends)
    zero = MonotonicRQSTransform(*(torch.zeros(n, dtype=dtype, device=device) for n in (8, 8, 7)))
    x = torch.linspace(-6, 6, 25, dtype=dtype, device=device)
    y, ladj = zero.call_and_ladj(x)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(ladj, torch.zeros_like(x))


@pytest.mark.parametrize("scale", [1e2, 1e3])
def test_rqs_extreme_inputs_and_parameters_stay_finite(scale, dtype, device):
    g = torch.Generator().manual_seed(2)
    params = [
        (scale * torch.randn(64, n, generator=g)).to(dtype=dtype, device=device).requires_grad_()
        for n in (8, 8, 7)
    ]
    x = torch.cat([torch.logspace(-3, 4, 32), -torch.logspace(-3, 4, 32)])
    x = x.to(dtype=dtype, device=device).requires_grad_()
    t = MonotonicRQSTransform(*params)
    y, ladj = t.call_and_ladj(x)
    z, ladj_inv = t.inverse_and_ladj(y)
    (y.sum() + ladj.sum() + z.sum() + ladj_inv.sum()).backward()
    for tensor in (y, ladj, z, ladj_inv, x.grad, *(p.grad for p in params)):
        assert torch.isfinite(tensor).all()


@settings(max_examples=40, deadline=None)
@given(
    bins=st.integers(1, 16),
    scale=st.floats(0.0, 5.0),
    bound=st.floats(0.5, 10.0),
    seed=st.integers(0, 2**16),
)
def test_rqs_properties_over_random_parameters(bins, scale, bound, seed):
    g = torch.Generator().manual_seed(seed)
    params = [
        scale * torch.randn(32, n, generator=g, dtype=torch.float64)
        for n in (bins, bins, bins - 1)
    ]
    t = MonotonicRQSTransform(*params, bound=bound)
    x = torch.sort(1.5 * bound * (2 * torch.rand(32, generator=g, dtype=torch.float64) - 1))[0]
    x = x.requires_grad_()
    y, ladj = t.call_and_ladj(x)
    # Monotonic: each element is a different spline, so compare f(x) and f(x + h).
    assert (t(x.detach() + 1e-3) > y.detach()).all()
    (dydx,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(ladj.detach(), dydx.log(), atol=1e-8, rtol=1e-8)
    xx, ladj_inv = t.inverse_and_ladj(y.detach())
    torch.testing.assert_close(xx, x.detach(), atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(ladj_inv, -ladj.detach(), atol=1e-8, rtol=1e-8)


def test_rqs_parameters_broadcast_against_inputs(dtype, device):
    t = _random_rqs(dtype, device, batch=(3,), scale=1.0)
    x = torch.randn(5, 3, dtype=dtype, device=device)
    y, ladj = t.call_and_ladj(x)
    assert y.shape == ladj.shape == (5, 3)
    torch.testing.assert_close(t.inv(y), x)


def test_circular_rqs_is_periodic_equivariant_and_fixes_ends(dtype, device):
    g = torch.Generator().manual_seed(3)
    params = [torch.randn(10, 8, generator=g).to(dtype=dtype, device=device) for _ in range(3)]
    t = CircularRQSTransform(*params)
    x = (2 * torch.rand(10, generator=g) - 1).to(dtype=dtype, device=device) * math.pi
    y, ladj = t.call_and_ladj(x)
    y2, ladj2 = t.call_and_ladj(x + 4 * math.pi)
    torch.testing.assert_close(y2, y + 4 * math.pi)
    torch.testing.assert_close(ladj2, ladj)
    ends = torch.full((10,), math.pi, dtype=dtype, device=device)
    torch.testing.assert_close(t(ends) - t(-ends), 2 * ends)
    # The derivative is the same at both ends of the circle: smooth across the cut.
    _, l_low = t.call_and_ladj(-ends + 1e-9)
    _, l_high = t.call_and_ladj(ends - 1e-9)
    torch.testing.assert_close(l_low, l_high, atol=1e-4, rtol=1e-4)


def test_bisection_inverse_meets_stated_tolerance():
    y = torch.linspace(-900.0, 900.0, 101, dtype=torch.float64)
    for eps in (1e-3, 1e-6, 1e-10):
        x = bisection_inverse(lambda v: v**3 + v, y, -10.0, 10.0, eps)
        exact = y.sign() * y.abs().pow(1 / 3)  # near the root
        # Newton polish of the reference: exact root of v^3 + v = y.
        for _ in range(50):
            exact = exact - (exact**3 + exact - y) / (3 * exact**2 + 1)
        assert (x - exact).abs().max() <= eps


def _fd_check(make, params, y, h=1e-6):
    """Gradient of sum(f^{-1}(y)) w.r.t. every parameter entry, autograd vs central differences."""
    leaves = [p.clone().requires_grad_() for p in params]
    grads = torch.autograd.grad(make(*leaves).inv(y).sum(), leaves)
    for i, (p, grad) in enumerate(zip(params, grads, strict=True)):
        fd = torch.zeros(p.numel(), dtype=p.dtype)
        for j in range(p.numel()):
            plus, minus = [q.clone() for q in params], [q.clone() for q in params]
            plus[i].view(-1)[j] += h
            minus[i].view(-1)[j] -= h
            fd[j] = (make(*plus).inv(y).sum() - make(*minus).inv(y).sum()) / (2 * h)
        torch.testing.assert_close(grad.reshape(-1), fd, atol=1e-5, rtol=1e-5)


def test_monotonic_inverse_gradient_matches_finite_differences():
    def make(w, b):
        return MonotonicTransform(lambda v: v + 2 * torch.tanh(v * w.exp() + b), (w, b), eps=1e-12)

    g = torch.Generator().manual_seed(4)
    params = [torch.randn(3, generator=g, dtype=torch.float64) for _ in range(2)]
    y = torch.tensor([-4.0, 0.3, 2.5], dtype=torch.float64, requires_grad=True)
    _fd_check(make, params, y.detach())
    # d x / d y = 1 / f'(x)
    t = make(*params)
    x = t.inv(y)
    (dxdy,) = torch.autograd.grad(x.sum(), y)
    torch.testing.assert_close(dxdy, (-t.call_and_ladj(x.detach())[1]).exp())


def test_monotonic_inverse_accuracy_and_ladj(dtype):
    t = MonotonicTransform(lambda v: v**3 + 0.5 * v, bound=10.0, eps=1e-6)
    x = torch.linspace(-3, 3, 13, dtype=dtype)
    y, ladj = t.call_and_ladj(x)
    torch.testing.assert_close(ladj, torch.log(3 * x**2 + 0.5))
    assert (t.inv(y) - x).abs().max() <= 1e-6 + 4 * torch.finfo(dtype).eps * 10


def test_monotonic_derivative_ignores_parameters_that_depend_on_x():
    # An autoregressive parameter computed from x itself must not leak into f'(x).
    x = torch.tensor([0.5, 1.5], dtype=torch.float64, requires_grad=True)
    shift = x.flip(0) * 3
    t = MonotonicTransform(lambda v: 2 * v + shift)
    _, ladj = t.call_and_ladj(x)
    torch.testing.assert_close(ladj, torch.full_like(x, math.log(2.0)))


def test_monotonic_transforms_broadcast_x_against_batched_parameters(dtype, device):
    # f(x) = x + x^3 w / 3 + C, f'(x) = 1 + x^2 w: parameters for 4 contexts and 3 features,
    # one x of 3 features. Each element gets its own derivative, not their sum over contexts.
    w = torch.rand(4, 3, dtype=dtype, device=device)
    C = torch.randn(4, 3, dtype=dtype, device=device)
    x = torch.randn(3, dtype=dtype, device=device)
    expected_y, expected_ladj = x + x**3 * w / 3 + C, torch.log1p(x**2 * w)
    monotonic = MonotonicTransform(lambda v: v + v**3 * w / 3 + C, (w, C))
    unconstrained = UnconstrainedMonotonicTransform(lambda v: 1 + v**2 * w, C, (w,), nodes=4)
    for t in (monotonic, unconstrained):
        y, ladj = t.call_and_ladj(x)
        torch.testing.assert_close(y, expected_y)
        torch.testing.assert_close(ladj, expected_ladj)
        torch.testing.assert_close(t.inv(y), x.expand(4, 3), atol=1e-5, rtol=1e-5)


def test_unconstrained_monotonic_integral_inverse_and_gradients():
    def make(w, c):
        return UnconstrainedMonotonicTransform(
            lambda v: torch.exp(torch.sin(v * w)), c, (w,), eps=1e-12, nodes=64
        )

    g = torch.Generator().manual_seed(5)
    params = [torch.randn(3, generator=g, dtype=torch.float64) for _ in range(2)]
    x = torch.tensor([-2.0, 0.4, 3.0], dtype=torch.float64, requires_grad=True)
    t = make(*params)
    y, ladj = t.call_and_ladj(x)
    (dydx,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(ladj.detach(), dydx.log())
    # A closed form: with w = 0, g = 1 and f(x) = x + C.
    flat = UnconstrainedMonotonicTransform(lambda v: torch.ones_like(v), torch.tensor(2.0))
    torch.testing.assert_close(flat(x.detach()), x.detach() + 2)
    assert (t.inv(y.detach()) - x.detach()).abs().max() <= 1e-10
    _fd_check(make, params, y.detach())


@pytest.mark.parametrize(
    "make, shapes",
    [
        (lambda a, c: SOSPolynomialTransform(a, c, eps=1e-12), [(2, 3, 2, 4), (2, 3)]),
        (lambda t: BernsteinTransform(t, eps=1e-12), [(2, 3, 9)]),
        (lambda t: BoundedBernsteinTransform(t, eps=1e-12), [(2, 3, 7)]),
    ],
)
def test_polynomial_inverse_gradient_matches_finite_differences(make, shapes):
    g = torch.Generator().manual_seed(6)
    params = [torch.randn(*s, generator=g, dtype=torch.float64) for s in shapes]
    y = 3 * torch.randn(2, 3, generator=g, dtype=torch.float64)
    y[0, 0] = 40.0  # beyond the bound: the closed-form tail
    x = make(*params).inv(y)
    torch.testing.assert_close(make(*params)(x), y, atol=1e-9, rtol=1e-9)
    _fd_check(make, params, y)


def test_polynomials_are_linear_outside_the_bound(dtype):
    g = torch.Generator().manual_seed(7)
    t = BernsteinTransform(torch.randn(5, 11, generator=g).to(dtype), bound=2.0)
    x = torch.tensor([3.0, 5.0, 9.0], dtype=dtype)[:, None].expand(3, 5)
    y, ladj = t.call_and_ladj(x)
    torch.testing.assert_close(y[2] - y[1], 2 * (y[1] - y[0]))  # equally spaced: linear
    torch.testing.assert_close(ladj[0], ladj[2])
    bounded = BoundedBernsteinTransform(torch.randn(5, 8, generator=g).to(dtype), bound=2.0)
    torch.testing.assert_close(bounded(x), x)
    zero = BernsteinTransform(torch.zeros(17, dtype=dtype))
    grid = torch.linspace(-8, 8, 9, dtype=dtype)
    torch.testing.assert_close(zero(grid), grid)


def test_polynomial_options_are_validated():
    with pytest.raises(ValueError, match="degree"):
        BernsteinTransform(torch.zeros(1))
    with pytest.raises(ValueError, match="slope"):
        BernsteinTransform(torch.zeros(5), slope=2.0)
    with pytest.raises(ValueError, match="eps"):
        SOSPolynomialTransform(torch.zeros(2, 3), torch.zeros(()), eps=0.0)
    with pytest.raises(TypeError, match="callable"):
        MonotonicTransform(3.0)


@pytest.mark.parametrize(
    "cls, sizes", [(MonotonicRQSTransform, (5, 5, 4)), (CircularRQSTransform, (5, 5, 5))]
)
def test_spline_gradients_pass_gradcheck(cls, sizes):
    g = torch.Generator().manual_seed(8)
    params = [
        torch.randn(4, n, generator=g, dtype=torch.float64, requires_grad=True) for n in sizes
    ]
    x = torch.tensor([-2.5, -0.3, 0.7, 2.9], dtype=torch.float64, requires_grad=True)

    def forward(x, *params):
        y, ladj = cls(*params).call_and_ladj(x)
        return y, ladj

    def inverse(x, *params):
        return cls(*params).inverse_and_ladj(x)

    assert torch.autograd.gradcheck(forward, (x, *params))
    assert torch.autograd.gradcheck(inverse, (x, *params))
