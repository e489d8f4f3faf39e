"""NSF's ``norm``: ActNorm or BatchNorm between its spline layers, rebuilt from checkpoints."""

from __future__ import annotations

import pytest
import torch

from flows.core import ActNorm, BatchNorm, load, save
from flows.splines import NSF


@pytest.mark.parametrize(("norm", "kind"), [("act", ActNorm), ("batch", BatchNorm)])
def test_nsf_norm_sits_between_layers_and_round_trips(norm, kind, tmp_path, dtype, device):
    torch.manual_seed(0)
    flow = NSF(3, 2, transforms=2, hidden_features=[8], norm=norm).to(dtype=dtype, device=device)
    layers = list(flow.transform.transforms)
    assert [isinstance(layer, kind) for layer in layers] == [False, True, False]
    assert flow.arguments["norm"] == norm
    x = torch.randn(32, 3, dtype=dtype, device=device) * 2.0
    c = torch.randn(32, 2, dtype=dtype, device=device)
    log_prob = flow(c).log_prob(x)  # training mode: initialises, or takes batch statistics
    assert torch.isfinite(log_prob).all()
    assert flow(c).sample().shape == (32, 3)

    flow = flow.float().to(dtype)  # load builds in float32: weights it holds exactly
    save(flow, tmp_path / "nsf.ckpt")
    loaded = load(tmp_path / "nsf.ckpt").flow.to(dtype=dtype, device=device)
    for key, tensor in flow.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    flow.eval(), loaded.eval()
    torch.testing.assert_close(loaded(c).log_prob(x), flow(c).log_prob(x), atol=0.0, rtol=0.0)


def test_nsf_without_norm_records_no_norm():
    assert "norm" not in NSF(3, transforms=2).arguments
    assert [type(layer).__name__ for layer in NSF(3, transforms=2).transform.transforms] == [
        "MaskedAutoregressiveTransform",
        "MaskedAutoregressiveTransform",
    ]


def test_nsf_refuses_an_unknown_norm_listing_the_choices():
    with pytest.raises(
        ValueError, match=r"^NSF: norm must be one of None, 'act', 'batch', got 'layer'$"
    ):
        NSF(3, norm="layer")
