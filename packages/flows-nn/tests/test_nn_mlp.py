"""MLP: layer structure, activation, layer normalization, stacking, argument errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from flows.nn import MLP, Linear


def test_mlp_default_is_two_hidden_layers_of_64_with_relu() -> None:
    net = MLP(3, 2)
    assert isinstance(net, nn.Sequential)
    assert [type(layer) for layer in net] == [Linear, nn.ReLU, Linear, nn.ReLU, Linear]
    assert [(layer.in_features, layer.out_features) for layer in net[::2]] == [
        (3, 64),
        (64, 64),
        (64, 2),
    ]
    assert (net.in_features, net.out_features) == (3, 2)


def test_mlp_without_hidden_layers_is_one_linear_layer() -> None:
    net = MLP(3, 2, hidden_features=())
    assert len(net) == 1
    assert (net[0].in_features, net[0].out_features) == (3, 2)


def test_mlp_forward_is_the_composition_of_its_layers(dtype: torch.dtype) -> None:
    net = MLP(5, 2, [8, 4], activation=nn.Tanh).to(dtype)
    x = torch.randn(3, 7, 5, dtype=dtype)

    h = x
    for linear in net[::2]:
        h = linear(h)
        if linear is not net[-1]:
            h = torch.tanh(h)

    y = net(x)
    assert y.shape == (3, 7, 2)
    assert y.dtype == dtype
    torch.testing.assert_close(y, h)


def test_mlp_passes_linear_kwargs_to_every_linear_layer() -> None:
    net = MLP(3, 2, [4, 4], bias=False)
    assert all(layer.bias is None for layer in net[::2])


def test_mlp_normalize_feeds_normalized_features_to_every_hidden_linear(
    dtype: torch.dtype,
) -> None:
    net = MLP(5, 2, [16, 8], activation=nn.ELU, normalize=True).to(dtype)
    assert [type(layer) for layer in net] == [
        Linear,
        nn.ELU,
        nn.LayerNorm,
        Linear,
        nn.ELU,
        nn.LayerNorm,
        Linear,
    ]

    inputs = []
    hooks = [
        layer.register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
        for layer in (net[3], net[6])
    ]
    net(10 * torch.randn(32, 5, dtype=dtype) + 3)
    for hook in hooks:
        hook.remove()

    for h in inputs:
        torch.testing.assert_close(h.mean(dim=-1), torch.zeros_like(h[:, 0]))
        torch.testing.assert_close(
            h.var(dim=-1, unbiased=False), torch.ones_like(h[:, 0]), atol=1e-3, rtol=1e-3
        )


def test_mlp_stack_builds_independent_networks(dtype: torch.dtype) -> None:
    net = MLP(3, 2, [8, 8], normalize=True, stack=4).to(dtype)
    assert all(layer.stack == 4 for layer in net if isinstance(layer, Linear))

    x = torch.randn(4, 3, dtype=dtype)
    assert net(x).shape == (4, 2)
    assert net(torch.randn(6, 5, 4, 3, dtype=dtype)).shape == (6, 5, 4, 2)

    jacobian = torch.func.jacrev(net)(x)  # (4, 2, 4, 3)
    across = jacobian.permute(0, 2, 1, 3).flatten(2).any(dim=-1)
    assert torch.equal(across, torch.eye(4, dtype=torch.bool))


def test_mlp_stack_networks_match_unstacked_networks_with_the_same_weights() -> None:
    stacked = MLP(3, 2, [5], stack=2, activation=nn.ELU)
    x = torch.randn(7, 2, 3)
    y = stacked(x)
    for s in range(2):
        single = MLP(3, 2, [5], activation=nn.ELU)
        with torch.no_grad():
            for a, b in zip(single[::2], stacked[::2], strict=True):
                a.weight.copy_(b.weight[s])
                a.bias.copy_(b.bias[s])
        torch.testing.assert_close(single(x[:, s]), y[:, s])


@pytest.mark.parametrize(
    ("hidden", "error"),
    [
        (64, TypeError),
        ("64", TypeError),
        ((64, 0), ValueError),
        ((64, 2.5), ValueError),
        ([True], ValueError),
    ],
)
def test_mlp_rejects_bad_hidden_features(hidden: object, error: type) -> None:
    with pytest.raises(error, match=r"hidden_features must be a sequence of positive integers"):
        MLP(3, 2, hidden)


def test_mlp_rejects_bad_sizes_and_activation() -> None:
    with pytest.raises(ValueError, match="in_features must be a positive integer, got 0"):
        MLP(0, 2)
    with pytest.raises(ValueError, match="out_features must be a positive integer, got -2"):
        MLP(3, -2)
    with pytest.raises(TypeError, match="activation must be a module constructor"):
        MLP(3, 2, activation="relu")


def test_mlp_slices_are_plain_sequentials_of_its_layers() -> None:
    net = MLP(3, 2, [8, 4])
    body = net[:-1]
    assert type(body) is nn.Sequential
    assert len(body) == 4
    x = torch.randn(5, 3)
    torch.testing.assert_close(net[-1](body(x)), net(x))
