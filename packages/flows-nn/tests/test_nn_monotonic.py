"""MonotonicMLP: positive weights and TwoWayELU make every Jacobian entry strictly positive."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.nn import MLP, Linear, MonotonicLinear, MonotonicMLP, TwoWayELU

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@SETTINGS
@given(
    in_features=st.integers(1, 5),
    out_features=st.integers(1, 5),
    hidden=st.lists(st.integers(1, 9), max_size=3),
    scale=st.sampled_from([0.1, 1.0, 10.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_monotonic_mlp_jacobian_is_strictly_positive(
    in_features: int,
    out_features: int,
    hidden: list[int],
    scale: float,
    seed: int,
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    torch.manual_seed(seed)
    net = MonotonicMLP(in_features, out_features, hidden).to(dtype=dtype, device=device)
    x = scale * torch.randn(4, in_features, dtype=dtype, device=device)

    jacobian = torch.func.vmap(torch.func.jacrev(net))(x)

    assert jacobian.shape == (4, out_features, in_features)
    assert (jacobian > 0).all()


def test_monotonic_mlp_outputs_increase_with_every_input(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    net = MonotonicMLP(3, 2, [8, 8]).to(dtype)
    x = torch.randn(16, 3, dtype=dtype)
    for j in range(3):
        step = torch.zeros(3, dtype=dtype)
        step[j] = 0.5
        assert (net(x + step) > net(x)).all()


def test_monotonic_mlp_is_an_mlp_of_monotonic_layers() -> None:
    net = MonotonicMLP(3, 4)
    assert isinstance(net, MLP)
    assert [type(layer) for layer in net] == [
        MonotonicLinear,
        TwoWayELU,
        MonotonicLinear,
        TwoWayELU,
        MonotonicLinear,
    ]
    assert [layer.out_features for layer in net[::2]] == [64, 64, 4]


def test_monotonic_mlp_stack_is_monotonic_and_independent(dtype: torch.dtype) -> None:
    net = MonotonicMLP(3, 2, [8], stack=4).to(dtype)
    assert all(layer.stack == 4 for layer in net[::2])
    x = torch.randn(4, 3, dtype=dtype)
    jacobian = torch.func.jacrev(net)(x)  # (4, 2, 4, 3)
    for s in range(4):
        for t in range(4):
            block = jacobian[s, :, t, :]
            assert (block > 0).all() if s == t else not block.any()


def test_monotonic_mlp_rejects_activation_and_normalize() -> None:
    with pytest.raises(TypeError, match=r"does not take an activation .* got activation=<class"):
        MonotonicMLP(3, 4, activation=nn.ReLU)
    with pytest.raises(ValueError, match="normalize=True: layer normalization breaks"):
        MonotonicMLP(3, 4, normalize=True)
    assert len(MonotonicMLP(3, 4, [5], normalize=False)) == 3


def test_monotonic_linear_applies_absolute_weights(dtype: torch.dtype) -> None:
    layer = MonotonicLinear(5, 3).to(dtype)
    assert isinstance(layer, Linear)
    assert (layer.weight < 0).any()  # the parameter itself is unconstrained
    x = torch.randn(7, 5, dtype=dtype)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight.abs(), layer.bias))

    stacked = MonotonicLinear(5, 3, stack=2).to(dtype)
    x = torch.randn(7, 2, 5, dtype=dtype)
    for s in range(2):
        expected = F.linear(x[:, s], stacked.weight[s].abs(), stacked.bias[s])
        torch.testing.assert_close(stacked(x)[:, s], expected)


@pytest.mark.parametrize("features", [1, 2, 5, 6])
def test_two_way_elu_applies_elu_then_its_reflection(features: int, dtype: torch.dtype) -> None:
    activation = TwoWayELU(alpha=0.5)
    x = 3 * torch.randn(4, features, dtype=dtype)
    y = activation(x)

    half = (features + 1) // 2
    torch.testing.assert_close(y[..., :half], F.elu(x[..., :half], 0.5))
    torch.testing.assert_close(y[..., half:], -F.elu(-x[..., half:], 0.5))

    derivative = torch.func.vmap(torch.func.jacrev(activation))(x)
    assert (torch.diagonal(derivative, dim1=-2, dim2=-1) > 0).all()
    assert repr(activation) == "TwoWayELU(alpha=0.5)"


def test_monotonic_mlp_compiles_into_one_graph() -> None:
    torch._dynamo.reset()
    net = MonotonicMLP(3, 2, [8, 8], stack=2)
    compiled = torch.compile(net, fullgraph=True, backend="eager")
    x = torch.randn(5, 2, 3)
    torch.testing.assert_close(compiled(x), net(x))
    torch._dynamo.reset()
