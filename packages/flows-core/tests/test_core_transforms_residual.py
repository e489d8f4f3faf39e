"""Planar, radial and Sylvester maps: constraints for any parameters, inverses, log-determinants.

The planar and Sylvester inverses are numerical: a round trip ``x -> z -> x`` must be within
their stated tolerance, 1e-5 in float32 and 1e-10 in float64 relative to ``1 + |x|``, plus the
round-off of evaluating the forward map at ``z`` itself (``forward_round_off``), which no inverse
can beat and which matters only where a map contracts a large ``z`` onto a small ``x``.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from flows.core.transforms import PlanarTransform, RadialTransform, SylvesterTransform
from flows.core.transforms.residual import solve_tanh_equation

D = 4


def stated(dtype: torch.dtype) -> float:
    return 1e-5 if dtype == torch.float32 else 1e-10


def close(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-9, "rtol": 1e-7}


def make(kind: str, batch: tuple[int, ...], dtype, device, scale: float = 1.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return (scale * torch.randn((*batch, *shape), generator=g)).to(dtype=dtype, device=device)

    if kind == "planar":
        return PlanarTransform(randn(D), randn(D), randn())
    if kind == "radial":
        return RadialTransform(randn(D), randn(), randn())
    if kind == "sylvester":
        return SylvesterTransform(randn(D, D), randn(D, D), randn(D, D), randn(D))
    return SylvesterTransform(randn(D, 2), randn(2, 2), randn(2, 2), randn(2))  # rank 2


def forward_round_off(t, z: torch.Tensor) -> torch.Tensor:
    """How far round-off alone moves ``t(z)``: ``ulps * eps * (|z| + |J| |z|)``, row by row.

    Evaluating ``x = z + residual(z)`` in floating point errs by a few machine epsilons of the
    terms it adds up, ``|z|`` and the residual's inputs propagated through the Jacobian ``J``.
    """
    rows = torch.autograd.functional.jacobian(lambda z: t(z).sum(0), z)  # (D, B, D)
    jacobian = rows.transpose(0, 1)  # (B, D, D): dx_b / dz_b, the rows being independent
    spread = z.abs() + (jacobian.abs() @ z.abs().unsqueeze(-1)).squeeze(-1)
    return 16 * torch.finfo(z.dtype).eps * spread


KINDS = ["planar", "radial", "sylvester", "sylvester-rank-2"]
FINITE = st.floats(-30, 30, allow_nan=False, allow_infinity=False)


def tensor(values: list[float], *shape: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).reshape(shape)


@settings(max_examples=60, deadline=None)
@given(st.lists(FINITE, min_size=2 * D + 1, max_size=2 * D + 1))
def test_planar_keeps_w_dot_u_hat_above_minus_one_for_any_parameters(values):
    w, u, b = tensor(values[:D], D), tensor(values[D : 2 * D], D), tensor(values[-1:])
    t = PlanarTransform(w, u, b)
    assert t.wu_hat > -1
    torch.testing.assert_close(
        (t.w * t.u_hat).sum(), t.wu_hat, atol=1e-9 * (1 + w @ u).abs(), rtol=0
    )
    z = torch.randn(8, D, dtype=torch.float64)
    _, ladj = t.call_and_ladj(z)
    assert torch.isfinite(ladj).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(FINITE, min_size=D + 2, max_size=D + 2))
def test_radial_keeps_beta_at_least_minus_alpha_for_any_parameters(values):
    t = RadialTransform(tensor(values[:D], D), tensor(values[D : D + 1]), tensor(values[-1:]))
    assert (t.alpha > 0).all() and (t.beta >= -t.alpha).all()


@settings(max_examples=25, deadline=None)
@given(st.lists(FINITE, min_size=3 * D * D + D, max_size=3 * D * D + D))
def test_sylvester_keeps_orthonormal_q_and_diagonals_above_minus_one_for_any_parameters(values):
    q, r, r_tilde, b = tensor(values, -1).split([D * D, D * D, D * D, D])
    t = SylvesterTransform(q.view(D, D), r.view(D, D), r_tilde.view(D, D), b)
    torch.testing.assert_close(t.Q.T @ t.Q, torch.eye(D, dtype=torch.float64))
    assert torch.equal(t.R, t.R.triu()) and torch.equal(t.R_tilde, t.R_tilde.triu())
    product = t.R.diagonal() * t.R_tilde.diagonal()
    assert (product > -1).all()
    torch.testing.assert_close(product, t.diagonal)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trips_within_the_stated_tolerance(kind, dtype, device):
    t = make(kind, (), dtype, device)
    x = 3 * torch.randn(64, D, dtype=dtype, device=device)
    z, ladj_inverse = t.inverse_and_ladj(x)
    x_again, ladj = t.call_and_ladj(z)
    assert ((x_again - x).abs() <= stated(dtype) * (1 + x.abs())).all()
    torch.testing.assert_close(ladj_inverse, -ladj, **close(dtype))
    torch.testing.assert_close(t.inv(t(z)), z, **close(dtype))


@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["planar", "sylvester", "sylvester-rank-2"]),
    seed=st.integers(0, 2**16),
    scale=st.floats(0.1, 4.0),
)
# A strongly contracting map: preimages reach |z| = 1251 for |x| < 8, and evaluating the
# forward there alone errs by up to 1e-9 (a round trip bounded by 1e-10 (1 + |x|) failed).
@example(kind="sylvester", seed=5588, scale=4.0)
def test_numerical_inverses_hold_their_tolerance_for_random_parameters(kind, seed, scale):
    # Float64 on the CPU here; the parametrized test above covers the requested dtype and device.
    t = make(kind, (), torch.float64, torch.device("cpu"), scale=scale, seed=seed)
    x = 5 * torch.randn(32, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    z = t.inv(x)
    assert ((t(z) - x).abs() <= 1e-10 * (1 + x.abs()) + forward_round_off(t, z)).all()


def test_planar_inverse_near_the_constraint_boundary(dtype, device):
    # w^T u_hat = -1 + 1e-6: the map nearly folds; the inverse still lands on x.
    w = torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=dtype, device=device)
    u = torch.tensor([math.log(math.expm1(1e-6)), 2.0, 0.0, 1.0], dtype=dtype, device=device)
    t = PlanarTransform(w, u, torch.tensor(0.3, dtype=dtype, device=device))
    x = torch.linspace(-2, 2, 41, dtype=dtype, device=device)[:, None] * w + 0.1
    assert ((t(t.inv(x)) - x).abs() <= stated(dtype) * (1 + x.abs())).all()


def test_radial_inverse_is_exact_at_and_around_the_centre(dtype, device):
    t = make("radial", (), dtype, device)
    x = t.z0 + torch.tensor([[0.0] * D, [1e-30] * D, [1e3] * D], dtype=dtype, device=device)
    z = t.inv(x)
    torch.testing.assert_close(t(z), x, **close(dtype))


@pytest.mark.parametrize("kind", KINDS)
def test_log_determinant_against_autograd(kind, dtype, device):
    t = make(kind, (), dtype, device)
    for z in torch.randn(3, D, dtype=dtype, device=device):
        jacobian = torch.autograd.functional.jacobian(t, z)
        expected = torch.linalg.slogdet(jacobian).logabsdet
        torch.testing.assert_close(t.call_and_ladj(z)[1], expected, **close(dtype))
        x = t(z)
        jacobian = torch.autograd.functional.jacobian(t.inv, x)
        expected = torch.linalg.slogdet(jacobian).logabsdet
        torch.testing.assert_close(t.inverse_and_ladj(x)[1], expected, **close(dtype))


@pytest.mark.parametrize("kind", KINDS)
def test_batched_parameters_broadcast_with_sample_dimensions(kind, dtype, device):
    t = make(kind, (5,), dtype, device)
    z = torch.randn(7, 5, D, dtype=dtype, device=device)
    x, ladj = t.call_and_ladj(z)
    assert x.shape == (7, 5, D) and ladj.shape == (7, 5)
    assert x.dtype == ladj.dtype == dtype and x.device.type == device.type
    z_again, ladj_inverse = t.inverse_and_ladj(x)
    torch.testing.assert_close(z_again, z, **close(dtype))
    torch.testing.assert_close(ladj_inverse, -ladj, **close(dtype))
    for i in (0, 4):  # each batch element is the map of its own parameters
        alone = _element(kind, i, dtype, device)
        torch.testing.assert_close(alone(z[:, i]), x[:, i], **close(dtype))


def _element(kind: str, i: int, dtype, device):
    g = torch.Generator().manual_seed(0)
    batch = (5,)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn((*batch, *shape), generator=g)[i].to(dtype=dtype, device=device)

    if kind == "planar":
        return PlanarTransform(randn(D), randn(D), randn())
    if kind == "radial":
        return RadialTransform(randn(D), randn(), randn())
    if kind == "sylvester":
        return SylvesterTransform(randn(D, D), randn(D, D), randn(D, D), randn(D))
    return SylvesterTransform(randn(D, 2), randn(2, 2), randn(2, 2), randn(2))


def test_solve_tanh_equation_residual_and_implicit_gradients():
    g = torch.Generator().manual_seed(0)
    p = torch.randn(50, dtype=torch.float64, generator=g) * 3
    q = (torch.rand(50, dtype=torch.float64, generator=g) * 2 - 0.99) / p  # pq in (-0.99, 1.01)
    c = torch.randn(50, dtype=torch.float64, generator=g)
    s = torch.randn(50, dtype=torch.float64, generator=g) * 4
    v = solve_tanh_equation(p, q, c, s)
    residual = v + p * torch.tanh(q * v + c) - s
    assert (residual.abs() <= 1e-12 * (1 + s.abs())).all()
    inputs = tuple(t[:5].clone().requires_grad_() for t in (p, q, c, s))
    assert torch.autograd.gradcheck(solve_tanh_equation, inputs)


def test_solve_tanh_equation_where_newton_alone_cycles(dtype, device):
    # pq = 4.8: from either tail, Newton's step lands in the other tail, so plain Newton inside
    # the bracket cycled for all its 100 iterations and returned v = -3.61 (residual -5.2); the
    # root is near -0.58. Seen as a planar inverse 5.8 off in x.
    p, q, c, s = (torch.tensor(a, dtype=dtype, device=device) for a in (4.8124, 1.0, 0.0, -3.1629))
    v = solve_tanh_equation(p, q, c, s)
    residual = v + p * torch.tanh(q * v + c) - s
    assert residual.abs() <= 16 * torch.finfo(dtype).eps * (1 + s.abs() + p.abs())


def test_solve_tanh_equation_converges_across_scales(dtype, device):
    # |p| and |q| over e^-9 to e^9, pq down to -0.999: every residual within round-off of
    # the equation's terms (the cycling solve missed on about 1 in 70,000 of these).
    g = torch.Generator().manual_seed(3)

    def spread(n: int) -> torch.Tensor:
        return (
            torch.randn(n, generator=g, dtype=torch.float64)
            * (3 * torch.randn(n, generator=g, dtype=torch.float64)).exp()
        )

    p, q = spread(200_000), spread(200_000)
    q = torch.where(p * q < -0.999, -0.999 / p, q)
    c = 5 * torch.randn(200_000, generator=g, dtype=torch.float64)
    s = 20 * torch.randn(200_000, generator=g, dtype=torch.float64)
    p, q, c, s = (a.to(dtype=dtype, device=device) for a in (p, q, c, s))
    v = solve_tanh_equation(p, q, c, s)
    residual = v + p * torch.tanh(q * v + c) - s
    assert (residual.abs() <= 64 * torch.finfo(dtype).eps * (1 + s.abs() + p.abs())).all()


def test_sylvester_refuses_a_wider_q():
    with pytest.raises(
        ValueError, match=r"q must have shape \(\*, D, M\) with M <= D, got \(2, 3\)"
    ):
        SylvesterTransform(torch.randn(2, 3), torch.randn(3, 3), torch.randn(3, 3), torch.randn(3))
