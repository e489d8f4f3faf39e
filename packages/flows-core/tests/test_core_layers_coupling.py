"""GeneralCouplingTransform: block structure, masks, errors."""

from __future__ import annotations

import pytest
import torch

from flows.core.layers import GeneralCouplingTransform
from flows.core.transforms import CouplingTransform

H = {"hidden_features": [32, 32]}


def perturbed(t: torch.nn.Module, dtype, device) -> torch.nn.Module:
    with torch.no_grad():
        for p in t.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return t.to(dtype=dtype, device=device)


def test_default_mask_keeps_the_first_half():
    assert GeneralCouplingTransform(5).mask.tolist() == [True, True, False, False, False]
    assert GeneralCouplingTransform(2).mask.tolist() == [True, False]


@pytest.mark.parametrize(
    "mask", [None, torch.tensor([False, True, False, True, True])], ids=["default", "custom"]
)
def test_jacobian_has_coupling_block_structure(mask, dtype, device):
    t = perturbed(GeneralCouplingTransform(5, 2, mask=mask, **H), dtype, device)
    f = t(torch.randn(2, dtype=dtype, device=device))
    assert isinstance(f, CouplingTransform)
    kept = t.mask.cpu()
    x = torch.randn(5, dtype=dtype, device=device)
    jacobian = torch.autograd.functional.jacobian(f, x).cpu()
    # Kept features pass through unchanged.
    assert torch.equal(f(x)[kept.to(x.device)], x[kept.to(x.device)])
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[kept, :] = False
    expected[~kept] = kept  # transformed features depend on all kept ones ...
    expected |= torch.eye(5, dtype=torch.bool)  # ... and on themselves only
    assert torch.equal(jacobian.abs() > 0, expected)
    assert torch.equal(jacobian[kept][:, kept], torch.eye(int(kept.sum()), dtype=dtype))


def test_inverse_is_exact_in_one_pass(dtype, device):
    t = perturbed(GeneralCouplingTransform(6, **H), dtype, device)
    f = t()
    x = torch.randn(10, 6, dtype=dtype, device=device)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert (f.inv(f(x)) - x).abs().max() < tol


@pytest.mark.parametrize(
    "mask",
    [
        torch.tensor([True, True, True]),
        torch.tensor([False, False, False]),
        torch.tensor([1, 0, 1]),
        torch.tensor([True, False]),
    ],
    ids=["all-kept", "none-kept", "not-bool", "wrong-shape"],
)
def test_bad_mask_is_refused(mask):
    with pytest.raises(ValueError, match=r"mask must be a boolean tensor of shape \(3,\)"):
        GeneralCouplingTransform(3, mask=mask)


def test_one_feature_is_refused():
    with pytest.raises(ValueError, match="features must be an int >= 2, got 1"):
        GeneralCouplingTransform(1)


def test_network_arguments_reach_the_mlp():
    t = GeneralCouplingTransform(4, 1, hidden_features=[7], activation=torch.nn.ELU)
    linears = [m for m in t.hyper.modules() if hasattr(m, "in_features") and m is not t.hyper]
    assert [m.out_features for m in linears] == [7, 2 * 2]
    assert linears[0].in_features == 2 + 1
    assert any(isinstance(m, torch.nn.ELU) for m in t.hyper.modules())
