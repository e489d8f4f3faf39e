"""The examples of the reference document on the nn module (seed 000), with flows.nn imports."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from flows.nn import MLP, Linear, MaskedMLP, MonotonicMLP


def test_mlp_prints_its_layers_and_maps_64_to_1(capsys: pytest.CaptureFixture[str]) -> None:
    net = MLP(64, 1, [32, 16], activation=nn.ELU)
    print(net)
    assert capsys.readouterr().out == (
        "MLP(\n"
        "  (0): Linear(in_features=64, out_features=32, bias=True)\n"
        "  (1): ELU(alpha=1.0)\n"
        "  (2): Linear(in_features=32, out_features=16, bias=True)\n"
        "  (3): ELU(alpha=1.0)\n"
        "  (4): Linear(in_features=16, out_features=1, bias=True)\n"
        ")\n"
    )

    x = torch.randn(8, 64)
    y = net(x)
    assert y.shape == (8, 1)


def test_linear_standard_and_stacked_shapes() -> None:
    layer = Linear(64, 32)
    x = torch.randn(8, 64)
    y = layer(x)
    assert y.shape == (8, 32)

    stacked = Linear(64, 32, stack=5)
    x = torch.randn(8, 5, 64)
    y = stacked(x)
    assert y.shape == (8, 5, 32)


@pytest.mark.parametrize("seed", range(5))
def test_masked_mlp_jacobian_zeros_match_false_adjacency(seed: int) -> None:
    torch.manual_seed(seed)
    adjacency = torch.randn(4, 3) < 0
    if not adjacency.any():
        with pytest.raises(ValueError, match="null"):
            MaskedMLP(adjacency, [16, 32], activation=nn.ELU)
        return

    net = MaskedMLP(adjacency, [16, 32], activation=nn.ELU)

    x = torch.randn(3)
    y = net(x)
    assert y.shape == (4,)

    jac = torch.autograd.functional.jacobian(net, x)
    assert jac.shape == (4, 3)
    # Zeros exactly at the False entries; with ELU (derivative > 0) and layers wider than the
    # number of distinct rows, every allowed entry is realized.
    assert torch.equal(jac != 0, adjacency)


def test_masked_mlp_autoregressive_adjacency_forbids_upper_entries() -> None:
    torch.manual_seed(0)
    autoregressive_adj = torch.tril(torch.ones(4, 4), diagonal=-1).bool()
    assert autoregressive_adj.tolist() == [
        [False, False, False, False],
        [True, False, False, False],
        [True, True, False, False],
        [True, True, True, False],
    ]

    autoregressive_net = MaskedMLP(autoregressive_adj, [32, 32])

    # With ReLU some allowed entries may vanish at a given x, never a forbidden one.
    x = torch.randn(16, 4)
    jac = torch.func.vmap(torch.func.jacrev(autoregressive_net))(x)
    assert not (jac != 0)[:, ~autoregressive_adj].any()
    assert (jac != 0).any(dim=0)[autoregressive_adj].all()


def test_monotonic_mlp_prints_its_layers_and_has_positive_jacobian(
    capsys: pytest.CaptureFixture[str],
) -> None:
    net = MonotonicMLP(3, 4, [16, 32])
    print(net)
    assert capsys.readouterr().out == (
        "MonotonicMLP(\n"
        "  (0): MonotonicLinear(in_features=3, out_features=16, bias=True)\n"
        "  (1): TwoWayELU(alpha=1.0)\n"
        "  (2): MonotonicLinear(in_features=16, out_features=32, bias=True)\n"
        "  (3): TwoWayELU(alpha=1.0)\n"
        "  (4): MonotonicLinear(in_features=32, out_features=4, bias=True)\n"
        ")\n"
    )

    x = torch.randn(3)
    y = net(x)
    assert y.shape == (4,)

    jac = torch.autograd.functional.jacobian(net, x)
    assert jac.shape == (4, 3)
    assert (jac > 0).all()
