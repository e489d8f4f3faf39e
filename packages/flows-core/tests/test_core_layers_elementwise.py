"""ElementWiseTransform: diagonal Jacobian, free or context-predicted parameters."""

from __future__ import annotations

import pytest
import torch

from flows.core.layers import ElementWiseTransform
from flows.core.transforms import DependentTransform, MonotonicAffineTransform


def test_unconditional_parameters_are_free():
    t = ElementWiseTransform(3)
    assert [name for name, _ in t.named_parameters()] == ["phi"]
    assert t.phi.shape == (3, 2)


@pytest.mark.parametrize("context", [0, 2])
def test_jacobian_is_diagonal(context, dtype, device):
    t = ElementWiseTransform(4, context, hidden_features=[16])
    with torch.no_grad():
        for p in t.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    t = t.to(dtype=dtype, device=device)
    c = torch.randn(context, dtype=dtype, device=device) if context else None
    f = t(c)
    assert isinstance(f, DependentTransform)
    x = torch.randn(4, dtype=dtype, device=device)
    jacobian = torch.autograd.functional.jacobian(f, x)
    assert torch.equal(jacobian.abs() > 0, torch.eye(4, dtype=torch.bool, device=device))


def test_parameters_lay_out_per_feature(dtype, device):
    t = ElementWiseTransform(3, univariate=MonotonicAffineTransform, shapes=[(), ()])
    with torch.no_grad():
        t.phi.copy_(torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]]))
    t = t.to(dtype=dtype, device=device)
    y = t()(torch.zeros(3, dtype=dtype, device=device))
    torch.testing.assert_close(y, torch.tensor([1.0, 2.0, 3.0], dtype=dtype, device=device))


def test_conditional_parameters_follow_the_context(dtype, device):
    t = ElementWiseTransform(2, 3, hidden_features=[8]).to(dtype=dtype, device=device)
    with torch.no_grad():
        for p in t.parameters():
            p.add_(torch.randn_like(p))
    x = torch.zeros(2, dtype=dtype, device=device)
    c1, c2 = torch.randn(2, 3, dtype=dtype, device=device)
    assert not torch.equal(t(c1)(x), t(c2)(x))


def test_bad_features_are_refused():
    with pytest.raises(ValueError, match="features must be an int >= 1, got 0"):
        ElementWiseTransform(0)
