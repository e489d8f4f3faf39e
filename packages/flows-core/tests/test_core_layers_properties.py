"""Properties every lazy transform with a hyper-network has, over many configurations.

Inverse, log-determinant against the autograd Jacobian, gradients reaching every parameter,
eval equal to train, state_dict round trip, deepcopy, batched contexts, dtype and device.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch

from flows.core.distributions import DiagNormal
from flows.core.layers import (
    ElementWiseTransform,
    GeneralCouplingTransform,
    MaskedAutoregressiveTransform,
)
from flows.core.lazy import Flow, LazyTransform, UnconditionalDistribution
from flows.core.transforms import MonotonicAffineTransform

H = {"hidden_features": [16, 16]}

CASES: dict[str, tuple[Callable[[], LazyTransform], int, int]] = {
    "mat": (lambda: MaskedAutoregressiveTransform(4, **H), 4, 0),
    "mat-context": (lambda: MaskedAutoregressiveTransform(4, 2, **H), 4, 2),
    "mat-passes-2": (lambda: MaskedAutoregressiveTransform(5, 2, passes=2, **H), 5, 2),
    "mat-order": (lambda: MaskedAutoregressiveTransform(4, order=[2, 0, 3, 1], **H), 4, 0),
    "mat-one-feature": (lambda: MaskedAutoregressiveTransform(1, **H), 1, 0),
    "mat-one-feature-context": (lambda: MaskedAutoregressiveTransform(1, 3, **H), 1, 3),
    "mat-additive": (lambda: MaskedAutoregressiveTransform(3, univariate="additive", **H), 3, 0),
    "mat-constructor": (
        lambda: MaskedAutoregressiveTransform(
            3, 1, univariate=MonotonicAffineTransform, shapes=[(), ()], **H
        ),
        3,
        1,
    ),
    "mat-adjacency": (
        lambda: MaskedAutoregressiveTransform(
            3,
            adjacency=torch.tensor([[0, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=torch.bool),
            **H,
        ),
        3,
        0,
    ),
    "mat-inverse": (lambda: MaskedAutoregressiveTransform(4, 2, **H).inv, 4, 2),
    "coupling": (lambda: GeneralCouplingTransform(4, **H), 4, 0),
    "coupling-context": (lambda: GeneralCouplingTransform(5, 3, **H), 5, 3),
    "coupling-additive": (
        lambda: GeneralCouplingTransform(4, univariate="additive", **H),
        4,
        0,
    ),
    "coupling-inverse": (lambda: GeneralCouplingTransform(4, 2, **H).inv, 4, 2),
    "elementwise": (lambda: ElementWiseTransform(3), 3, 0),
    "elementwise-context": (lambda: ElementWiseTransform(3, 2, **H), 3, 2),
}


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-8, "rtol": 1e-6}


def perturb(module: torch.nn.Module) -> None:
    """Move the parameters away from the near-identity start, so structure shows."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.3)


def build(name: str, dtype: torch.dtype, device: torch.device):
    factory, features, context = CASES[name]
    torch.manual_seed(0)
    t = factory()
    perturb(t)
    t = t.to(dtype=dtype, device=device)
    c = torch.randn(context, dtype=dtype, device=device) if context else None
    return t, features, context, c


CONDITIONAL = sorted(name for name, (_, _, context) in CASES.items() if context > 0)
UNCONDITIONAL = sorted(name for name, (_, _, context) in CASES.items() if context == 0)


@pytest.fixture(params=sorted(CASES))
def case(request, dtype, device):
    return build(request.param, dtype, device)


def test_inverse_recovers_input(case, dtype, device):
    t, features, _, c = case
    f = t(c)
    x = torch.randn(8, features, dtype=dtype, device=device)
    y = f(x)
    assert y.shape == x.shape
    torch.testing.assert_close(f.inv(y), x, **tolerance(dtype))
    x_back, ladj_inv = f.inv.call_and_ladj(y)
    torch.testing.assert_close(x_back, x, **tolerance(dtype))
    torch.testing.assert_close(ladj_inv, -f.call_and_ladj(x)[1], **tolerance(dtype))


def test_ladj_matches_autograd_jacobian(case, dtype, device):
    t, features, _, c = case
    f = t(c)
    x = torch.randn(features, dtype=dtype, device=device)
    jacobian = torch.autograd.functional.jacobian(f, x)
    _, ladj = f.call_and_ladj(x)
    assert ladj.shape == ()
    torch.testing.assert_close(ladj, torch.linalg.slogdet(jacobian).logabsdet, **tolerance(dtype))


@pytest.mark.parametrize("name", CONDITIONAL)
def test_batched_context_gives_batched_transform(name, dtype, device):
    t, features, context, _ = build(name, dtype, device)
    c = torch.randn(5, context, dtype=dtype, device=device)
    f = t(c)
    x = torch.randn(5, features, dtype=dtype, device=device)
    y, ladj = f.call_and_ladj(x)
    assert y.shape == (5, features) and ladj.shape == (5,)
    # Each row equals the transform built from its own context.
    for i in range(5):
        torch.testing.assert_close(t(c[i])(x[i]), y[i], **tolerance(dtype))
    # One x broadcast against a batch of contexts.
    assert f(x[0]).shape == (5, features)


@pytest.mark.parametrize("name", CONDITIONAL)
def test_conditional_requires_context(name, dtype, device):
    t, _, _, _ = build(name, dtype, device)
    with pytest.raises(ValueError, match="context"):
        t(None)


@pytest.mark.parametrize("name", UNCONDITIONAL)
def test_unconditional_ignores_context(name, dtype, device):
    t, features, _, _ = build(name, dtype, device)
    x = torch.randn(4, features, dtype=dtype, device=device)
    c = torch.randn(4, 7, dtype=dtype, device=device)
    torch.testing.assert_close(t(c)(x), t()(x))


def test_gradients_reach_every_parameter(case, dtype, device):
    t, features, _, c = case
    base = UnconditionalDistribution(
        DiagNormal, torch.zeros(features), torch.ones(features), buffer=True
    ).to(dtype=dtype, device=device)
    flow = Flow(t, base)
    x = torch.randn(32, features, dtype=dtype, device=device)
    flow(c).log_prob(x).mean().backward()
    for name, p in t.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
        assert torch.isfinite(p.grad).all(), name


def test_eval_equals_train(case, dtype, device):
    t, features, _, c = case
    x = torch.randn(6, features, dtype=dtype, device=device)
    t.train()
    y_train = t(c).call_and_ladj(x)
    t.eval()
    y_eval = t(c).call_and_ladj(x)
    torch.testing.assert_close(y_train, y_eval, atol=0.0, rtol=0.0)


def test_state_dict_round_trip(case, dtype, device):
    t, features, _, c = case
    x = torch.randn(6, features, dtype=dtype, device=device)
    expected = t(c).call_and_ladj(x)
    twin = copy.deepcopy(t)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1.0)
    assert not torch.equal(twin(c)(x), expected[0])
    twin.load_state_dict(t.state_dict())
    torch.testing.assert_close(twin(c).call_and_ladj(x), expected, atol=0.0, rtol=0.0)


def test_deepcopy_is_independent(case, dtype, device):
    t, features, _, c = case
    x = torch.randn(6, features, dtype=dtype, device=device)
    twin = copy.deepcopy(t)
    torch.testing.assert_close(twin(c)(x), t(c)(x), atol=0.0, rtol=0.0)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(1.0)
    assert not torch.equal(twin(c)(x), t(c)(x))


def test_outputs_follow_dtype_and_device(case, dtype, device):
    t, features, _, c = case
    x = torch.randn(2, features, dtype=dtype, device=device)
    y, ladj = t(c).call_and_ladj(x)
    assert y.dtype == dtype and ladj.dtype == dtype
    assert y.device.type == device.type
