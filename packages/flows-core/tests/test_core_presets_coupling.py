"""NICE and RealNVP: alternating masks, volume preservation, errors."""

from __future__ import annotations

import pytest
import torch

from flows.core.presets import NICE, RealNVP
from flows.core.presets.coupling import coupling_masks


@pytest.mark.parametrize("preset", [NICE, RealNVP])
def test_masks_alternate_between_complementary_halves(preset):
    flow = preset(5, transforms=3)
    masks = [t.mask for t in flow.transform.transforms]
    assert masks[0].tolist() == [True, False, True, False, True]
    assert torch.equal(masks[1], ~masks[0]) and torch.equal(masks[2], masks[0])


@pytest.mark.parametrize("features", [2, 5, 8])
def test_random_masks_keep_half_and_alternate(features):
    torch.manual_seed(0)
    masks = coupling_masks(features, 4, randmask=True)
    assert int(masks[0].sum()) == features // 2
    assert torch.equal(masks[1], ~masks[0]) and torch.equal(masks[3], ~masks[2])


def test_nice_preserves_volume(dtype, device):
    flow = NICE(4, transforms=3, hidden_features=[16]).to(dtype=dtype, device=device)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    x = torch.randn(10, 4, dtype=dtype, device=device)
    z, ladj = flow().transform.call_and_ladj(x)
    assert torch.equal(ladj, torch.zeros_like(ladj))
    assert not torch.allclose(z, x)


def test_realnvp_is_affine_coupling(dtype, device):
    flow = RealNVP(4, transforms=1, hidden_features=[16]).to(dtype=dtype, device=device)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    f = flow().transform
    x = torch.randn(4, dtype=dtype, device=device)
    # Transformed features are affine in themselves: the second derivative vanishes.
    hessian = torch.autograd.functional.hessian(lambda x: f(x)[1], x)
    assert hessian[1, 1].abs() < 1e-6


@pytest.mark.parametrize("preset", [NICE, RealNVP])
def test_one_feature_is_refused(preset):
    with pytest.raises(ValueError, match="features must be an int >= 2, got 1"):
        preset(1)
