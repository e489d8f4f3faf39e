"""The lean training path: DiagNormal's fused log-density, affine ladj shapes, compile-clean."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Independent, Normal

from flows.core import MAF
from flows.core.distributions import DiagNormal
from flows.core.transforms import MonotonicAffineTransform


@pytest.mark.parametrize("ndims", [1, 2])
@pytest.mark.parametrize("x_shape", [(4,), (3, 4), (5, 3, 4)])
def test_diag_normal_log_prob_equals_torch(ndims, x_shape, dtype, device):
    torch.manual_seed(0)
    loc = torch.randn(3, 4, dtype=dtype, device=device)
    scale = torch.rand(3, 4, dtype=dtype, device=device) + 0.5
    x = torch.randn(*x_shape, dtype=dtype, device=device)
    ours, reference = DiagNormal(loc, scale, ndims), Independent(Normal(loc, scale), ndims)
    if x_shape[len(x_shape) - ndims :] == loc.shape[2 - ndims :]:
        torch.testing.assert_close(ours.log_prob(x), reference.log_prob(x))
    else:  # torch broadcasts a row over the event's rows; ours refuses an x not ending in it
        with pytest.raises(ValueError, match=r"^x must have shape \(\*, 3, 4\)"):
            ours.log_prob(x)


def test_diag_normal_inherited_methods_equal_torch(dtype, device):
    """Its Normal is built without torch's constructor: everything it inherits still agrees."""
    torch.manual_seed(2)
    loc = torch.randn(2, 3, dtype=dtype, device=device, requires_grad=True)
    scale = (torch.rand(2, 3, dtype=dtype, device=device) + 0.5).requires_grad_()
    ours, reference = DiagNormal(loc, scale), Independent(Normal(loc, scale), 1)
    assert (ours.batch_shape, ours.event_shape) == (reference.batch_shape, reference.event_shape)
    for name in ("mean", "mode", "stddev", "variance"):
        torch.testing.assert_close(getattr(ours, name), getattr(reference, name))
    torch.testing.assert_close(ours.entropy(), reference.entropy())
    torch.manual_seed(3)
    sample = ours.rsample((4,))
    torch.manual_seed(3)
    torch.testing.assert_close(sample, reference.rsample((4,)))
    assert sample.shape == (4, 2, 3)
    # Reparameterized: the gradient of a sample reaches loc and scale.
    loc_grad, scale_grad = torch.autograd.grad(sample.sum(), (loc, scale))
    torch.testing.assert_close(loc_grad, torch.full_like(loc, 4.0))
    assert scale_grad.abs().sum() > 0


def test_expanded_diag_normal_log_prob_equals_torch(dtype, device):
    torch.manual_seed(1)
    loc = torch.randn(4, dtype=dtype, device=device)
    scale = torch.rand(4, dtype=dtype, device=device) + 0.5
    ours = DiagNormal(loc, scale).expand((6,))
    reference = Independent(Normal(loc, scale), 1).expand((6,))
    assert type(ours) is DiagNormal
    assert ours.batch_shape == (6,) and ours.loc.shape == (6, 4)
    for x in (torch.randn(6, 4, dtype=dtype, device=device), torch.randn(4, dtype=dtype)):
        x = x.to(device)
        assert ours.log_prob(x).shape == (6,)
        torch.testing.assert_close(ours.log_prob(x), reference.log_prob(x))
    assert ours.expand((2, 6)).log_prob(torch.zeros(4, dtype=dtype, device=device)).shape == (2, 6)


def test_diag_normal_log_prob_gradients_reach_loc_and_scale(dtype, device):
    loc = torch.zeros(3, dtype=dtype, device=device, requires_grad=True)
    scale = torch.ones(3, dtype=dtype, device=device, requires_grad=True)
    x = torch.tensor([1.0, -2.0, 0.5], dtype=dtype, device=device)
    DiagNormal(loc, scale).expand((2,)).log_prob(x).sum().backward()
    # d/dmu = (x - mu) / sigma^2 and d/dsigma = ((x - mu)^2 - sigma^2) / sigma^3, twice.
    torch.testing.assert_close(loc.grad, 2 * x)
    torch.testing.assert_close(scale.grad, 2 * (x.square() - 1))


def test_affine_ladj_broadcasts_to_the_input(dtype, device):
    t = MonotonicAffineTransform(
        torch.tensor(1.0, dtype=dtype, device=device),
        torch.tensor(0.5, dtype=dtype, device=device),
    )
    x = torch.zeros(3, 2, dtype=dtype, device=device)
    y, ladj = t.call_and_ladj(x)
    assert ladj.shape == x.shape
    x_back, inverse_ladj = t.inverse_and_ladj(y)
    torch.testing.assert_close(x_back, x)
    torch.testing.assert_close(inverse_ladj, -ladj)
    assert t.log_abs_det_jacobian(x, y).shape == x.shape


@pytest.mark.parametrize("context", [0, 2])
def test_training_step_gradients_are_finite(context, dtype, device):
    torch.manual_seed(2)
    flow = MAF(3, context, transforms=2, hidden_features=[8, 8]).to(dtype=dtype, device=device)
    x = torch.randn(16, 3, dtype=dtype, device=device)
    c = torch.randn(16, context, dtype=dtype, device=device) if context else None
    loss = -flow(c).log_prob(x).mean()
    loss.backward()
    for p in flow.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


class _VectorShift(MonotonicAffineTransform):
    """A univariate with a vector parameter: the shift is the weighted sum of three values."""

    def __init__(self, values: torch.Tensor, scale: torch.Tensor) -> None:
        weights = torch.tensor([1.0, -2.0, 0.5], dtype=values.dtype, device=values.device)
        super().__init__((values * weights).sum(dim=-1), scale)


@pytest.mark.parametrize("batch", [(), (5,), (2, 3)])
@pytest.mark.parametrize("context", [0, 2])
def test_parameters_first_output_equals_the_plain_network_output(batch, context, dtype, device):
    # Vector parameters come out of the network transposed (parameters, features, samples);
    # the transform, its log-determinant and every gradient must not notice.
    from flows.core.layers import MaskedAutoregressiveTransform

    torch.manual_seed(0)
    layer = MaskedAutoregressiveTransform(
        4, context, univariate=_VectorShift, shapes=[(3,), ()], hidden_features=[16, 16]
    ).to(dtype=dtype, device=device)
    torch.nn.init.normal_(layer.hyper[-1].weight)  # away from the identity
    assert layer._parameters_first
    x = torch.randn(*batch, 4, dtype=dtype, device=device)
    c = torch.randn(*batch, context, dtype=dtype, device=device) if context else None

    results = []
    for parameters_first in (True, False):
        layer._parameters_first = parameters_first
        layer.zero_grad()
        y, ladj = layer(c).call_and_ladj(x)
        (y.square().sum() + ladj.sum()).backward()
        results.append((y, ladj, [p.grad.clone() for p in layer.parameters()]))
    (y1, ladj1, grads1), (y2, ladj2, grads2) = results
    assert y1.shape == x.shape and ladj1.shape == batch
    torch.testing.assert_close(y1, y2)
    torch.testing.assert_close(ladj1, ladj2)
    for g1, g2 in zip(grads1, grads2, strict=True):
        torch.testing.assert_close(g1, g2)
