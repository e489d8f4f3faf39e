"""Multivariate distributions: flows, bases, joints, mixtures and order statistics."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal, Uniform

from flows.core.distributions import (
    BoxUniform,
    DiagNormal,
    Joint,
    Mixture,
    NormalizingFlow,
    Sort,
    TopK,
)
from flows.core.transforms import (
    AutoregressiveTransform,
    MonotonicAffineTransform,
    RotationTransform,
    SigmoidTransform,
    SoftclipTransform,
)


def meta(x):
    # Feature 1 depends on feature 0: a genuinely autoregressive 2-D transform.
    context = torch.stack([torch.zeros_like(x[..., 0]), x[..., 0]], dim=-1)
    return MonotonicAffineTransform(0.5 * context.sin(), 0.3 * context.cos())


def bivariate(name, dtype, device):
    def t(values):
        return torch.tensor(values, dtype=dtype, device=device)

    normal = Normal(t(0.0), t(1.0))
    return {
        "diag-normal": (DiagNormal(t([0.5, -0.5]), t([1.0, 0.7])), 8.0),
        "box-uniform": (BoxUniform(t([-1.0, 0.0]), t([1.0, 2.0])), 2.5),
        "joint": (
            Joint(Uniform(t(-1.0), t(2.0), validate_args=False), Normal(t(0.5), t(0.8))),
            6.0,
        ),
        "mixture": (
            Mixture(
                DiagNormal(t([[-1.0, 0.0], [1.0, 1.0]]), t([[0.5, 1.0], [1.0, 0.5]])),
                t([0.0, 1.0]),
            ),
            7.0,
        ),
        "sort": (Sort(normal, 2), 7.0),
        "sort-descending": (Sort(normal, 2, descending=True), 7.0),
        "topk": (TopK(normal, 2, 4), 7.0),
        "flow": (
            NormalizingFlow(
                AutoregressiveTransform(meta, 2), DiagNormal(t([0.0, 0.0]), t([1.0, 1.0]))
            ),
            9.0,
        ),
        "flow-box": (
            NormalizingFlow(SoftclipTransform(2.0), BoxUniform(t([-1.0, -1.0]), t([1.0, 1.0]))),
            4.0,
        ),
    }[name]


NAMES = [
    "diag-normal",
    "box-uniform",
    "joint",
    "mixture",
    "sort",
    "sort-descending",
    "topk",
    "flow",
    "flow-box",
]


@pytest.mark.parametrize("name", NAMES)
def test_log_prob_refuses_values_that_do_not_end_in_the_event_shape(name, device):
    # A (5, 1) value broadcast silently against the bases' parameters: five densities of nothing.
    d, _ = bivariate(name, torch.float64, device)
    assert d.log_prob(torch.zeros(5, 2, dtype=torch.float64, device=device)).shape == (5,)
    for shape in [(5, 1), (2, 3), ()]:
        with pytest.raises(ValueError, match=r"^x must have shape \(\*, 2\), the distribution's"):
            d.log_prob(torch.zeros(shape, dtype=torch.float64, device=device))


@pytest.mark.parametrize("name", NAMES)
def test_density_integrates_to_one(name, device):
    # Midpoint quadrature on a 2-D grid covering the support, in float64: tolerance 2e-3.
    d, half = bivariate(name, torch.float64, device)
    n = 600
    edges = torch.linspace(-half, half, n + 1, dtype=torch.float64, device=device)
    mid = (edges[1:] + edges[:-1]) / 2
    x = torch.cartesian_prod(mid, mid)
    log_p = d.log_prob(x)
    assert not log_p.isnan().any()
    if name.startswith(("sort", "topk")):
        # The support ends on the diagonal, which halves the cells centred on it.
        log_p = torch.where(x[:, 0] == x[:, 1], log_p - math.log(2), log_p)
    mass = log_p.exp().sum() * (2 * half / n) ** 2
    assert abs(mass.item() - 1) < 2e-3, mass


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("sample_shape", [(), (5,), (2, 3)])
def test_sample_and_log_prob_shapes(name, sample_shape, dtype, device):
    d, _ = bivariate(name, dtype, device)
    assert d.event_shape == (2,) and d.batch_shape == ()
    x = d.sample(sample_shape)
    assert x.shape == (*sample_shape, 2) and x.dtype == dtype
    log_p = d.log_prob(x)
    assert log_p.shape == sample_shape and torch.isfinite(log_p).all()


@pytest.mark.parametrize("name", NAMES)
def test_expand_adds_batch_dimensions_and_keeps_log_prob(name, dtype, device):
    d, _ = bivariate(name, dtype, device)
    e = d.expand((3,))
    assert e.batch_shape == (3,) and e.event_shape == (2,)
    assert e.sample((4,)).shape == (4, 3, 2)
    x = d.sample((3,))
    torch.testing.assert_close(e.log_prob(x), d.log_prob(x))


@pytest.mark.parametrize(
    ("name", "outside"),
    [
        ("box-uniform", [[2.0, 1.0], [0.0, -0.1], [0.0, 2.0]]),
        ("joint", [[-2.0, 0.0], [3.0, 0.0]]),
        ("sort", [[1.0, 0.0]]),
        ("sort-descending", [[0.0, 1.0]]),
        ("topk", [[-1.0, 0.5]]),
        ("flow-box", [[3.0, 0.0], [-1e9, 0.0]]),
    ],
)
def test_log_prob_outside_support_is_minus_inf(name, outside, dtype, device):
    d, _ = bivariate(name, dtype, device)
    log_p = d.log_prob(torch.tensor(outside, dtype=dtype, device=device))
    assert (log_p == -math.inf).all(), log_p


def test_sort_samples_are_sorted(dtype, device):
    d = Sort(Normal(torch.tensor(0.0, dtype=dtype), torch.tensor(1.0, dtype=dtype)), 5)
    x = d.sample((100,))
    assert (x.diff(dim=-1) >= 0).all()
    x = TopK(Normal(torch.tensor(0.0, dtype=dtype), torch.tensor(1.0, dtype=dtype)), 3, 10).sample(
        (100,)
    )
    assert (x.diff(dim=-1) <= 0).all()


def test_mixture_sample_mean_is_the_weighted_mean_of_its_components(device):
    torch.manual_seed(0)
    d, _ = bivariate("mixture", torch.float64, device)
    x = d.sample((20_000,))
    weights = torch.softmax(torch.tensor([0.0, 1.0], dtype=torch.float64, device=device), 0)
    means = torch.tensor([[-1.0, 0.0], [1.0, 1.0]], dtype=torch.float64, device=device)
    expected = weights @ means
    torch.testing.assert_close(x.mean(0), expected, atol=0.05, rtol=0)


def test_mixture_rejects_mismatched_logits():
    with pytest.raises(ValueError, match="logits"):
        Mixture(DiagNormal(torch.zeros(3, 2), torch.ones(3, 2)), torch.zeros(2))
    with pytest.raises(ValueError, match="batch dimension"):
        Mixture(DiagNormal(torch.zeros(2), torch.ones(2)), torch.zeros(2))


def test_joint_concatenates_vector_marginals(dtype):
    d = Joint(
        DiagNormal(torch.zeros(3, dtype=dtype), torch.ones(3, dtype=dtype)),
        Normal(torch.tensor(1.0, dtype=dtype), 1.0),
    )
    x = d.sample((4,))
    assert x.shape == (4, 4)
    expected = Normal(0.0, 1.0).log_prob(x[:, :3]).sum(-1) + Normal(1.0, 1.0).log_prob(x[:, 3])
    torch.testing.assert_close(d.log_prob(x), expected.to(dtype))


def test_diag_normal_repr_and_validation():
    assert repr(DiagNormal(torch.zeros(3), torch.ones(3))) == (
        "DiagNormal(loc: torch.Size([3]), scale: torch.Size([3]))"
    )
    with pytest.raises(ValueError, match="loc must have at least one dimension"):
        DiagNormal(torch.tensor(0.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match="ndims"):
        BoxUniform(torch.zeros(2), torch.ones(2), ndims=2)


def test_flow_log_prob_matches_change_of_variables(dtype, device):
    d, _ = bivariate("flow", dtype, device)
    x = torch.randn(7, 2, dtype=dtype, device=device)
    z, ladj = d.transform.call_and_ladj(x)
    torch.testing.assert_close(d.log_prob(x), d.base.log_prob(z) + ladj)
    J = torch.autograd.functional.jacobian(d.transform, x[0])
    expected = d.base.log_prob(z[0]) + torch.linalg.slogdet(J).logabsdet
    torch.testing.assert_close(d.log_prob(x[0]), expected)


def test_flow_rsample_and_log_prob_equals_rsample_then_log_prob(dtype, device):
    d, _ = bivariate("flow", dtype, device)
    torch.manual_seed(3)
    x, log_p = d.rsample_and_log_prob((6,))
    torch.manual_seed(3)
    x_again = d.rsample((6,))
    torch.testing.assert_close(x, x_again)
    torch.testing.assert_close(log_p, d.log_prob(x))
    assert x.shape == (6, 2) and log_p.shape == (6,)


def test_flow_rsample_gradients_reach_transform_parameters(dtype, device):
    A = torch.randn(2, 2, dtype=dtype, device=device, requires_grad=True)
    d = NormalizingFlow(
        RotationTransform(A),
        DiagNormal(
            torch.tensor([1.0, 0.0], dtype=dtype, device=device),
            torch.ones(2, dtype=dtype, device=device),
        ),
    )
    x = d.rsample((10,))
    (grad,) = torch.autograd.grad(x.sum(), A)
    assert torch.isfinite(grad).all() and (grad != 0).any()
    assert not d.sample((10,)).requires_grad


def test_flow_with_batched_transform_and_expanded_base(dtype, device):
    # A conditional transform evaluated at 3 contexts: the base carries the batch shape.
    shift = torch.randn(3, 2, dtype=dtype, device=device)
    transform = MonotonicAffineTransform(shift, torch.zeros_like(shift))
    base = DiagNormal(
        torch.zeros(2, dtype=dtype, device=device), torch.ones(2, dtype=dtype, device=device)
    )
    d = NormalizingFlow(transform, base.expand((3,)))
    assert d.batch_shape == (3,) and d.event_shape == (2,)
    assert d.sample().shape == (3, 2)
    assert d.sample((5,)).shape == (5, 3, 2)
    assert d.log_prob(torch.randn(5, 3, 2, dtype=dtype, device=device)).shape == (5, 3)


def test_flow_reinterprets_base_batch_dimensions(dtype, device):
    # A vector transform over a scalar base: the base's batch dimension becomes the event.
    d = NormalizingFlow(
        RotationTransform(torch.randn(2, 2, dtype=dtype, device=device)),
        Normal(
            torch.zeros(2, dtype=dtype, device=device), torch.ones(2, dtype=dtype, device=device)
        ),
    )
    assert d.batch_shape == () and d.event_shape == (2,)
    # An element-wise transform over a vector base: its log-determinant is summed.
    d = NormalizingFlow(
        SigmoidTransform().inv,
        BoxUniform(torch.full((2,), -3.0, dtype=dtype), torch.full((2,), 3.0, dtype=dtype)),
    )
    assert d.event_shape == (2,)
    assert d.log_prob(torch.full((4, 2), 0.5, dtype=dtype)).shape == (4,)


def test_flow_rejects_bad_arguments():
    with pytest.raises(TypeError, match="transform"):
        NormalizingFlow(lambda x: x, Normal(0.0, 1.0))
    with pytest.raises(TypeError, match="base"):
        NormalizingFlow(SigmoidTransform(), "normal")
