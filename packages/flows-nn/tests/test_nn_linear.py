"""Linear: torch.nn.Linear without stack; S independent operators with stack=S."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from flows.nn import Linear


def test_linear_matches_torch_linear_initialization_and_output() -> None:
    torch.manual_seed(0)
    ours = Linear(5, 3)
    torch.manual_seed(0)
    theirs = nn.Linear(5, 3)

    assert repr(ours) == repr(theirs)
    assert ours.weight.shape == theirs.weight.shape == (3, 5)
    assert ours.bias.shape == theirs.bias.shape == (3,)
    torch.testing.assert_close(ours.weight, theirs.weight)
    torch.testing.assert_close(ours.bias, theirs.bias)
    assert ours.state_dict().keys() == theirs.state_dict().keys()

    x = torch.randn(2, 7, 5)
    torch.testing.assert_close(ours(x), F.linear(x, ours.weight, ours.bias))


def test_linear_without_bias_has_no_bias_parameter() -> None:
    layer = Linear(4, 2, bias=False, stack=3)
    assert layer.bias is None
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    assert repr(layer) == "Linear(in_features=4, out_features=2, bias=False, stack=3)"
    x = torch.randn(6, 3, 4)
    torch.testing.assert_close(layer(x), torch.einsum("bsi,soi->bso", x, layer.weight))


@pytest.mark.parametrize("batch", [(), (7,), (2, 3)])
def test_linear_stack_applies_operator_s_to_vector_s(
    batch: tuple[int, ...], dtype: torch.dtype, device: torch.device
) -> None:
    layer = Linear(4, 3, stack=5).to(dtype=dtype, device=device)
    assert layer.weight.shape == (5, 3, 4)
    assert layer.bias.shape == (5, 3)

    x = torch.randn(*batch, 5, 4, dtype=dtype, device=device)
    y = layer(x)

    assert y.shape == (*batch, 5, 3)
    assert y.dtype == dtype
    for s in range(5):
        expected = F.linear(x[..., s, :], layer.weight[s], layer.bias[s])
        torch.testing.assert_close(y[..., s, :], expected)


def test_linear_stack_operators_are_independent(dtype: torch.dtype) -> None:
    layer = Linear(4, 3, stack=5).to(dtype)
    x = torch.randn(5, 4, dtype=dtype)

    jacobian = torch.func.jacrev(layer)(x)  # (5, 3, 5, 4)
    for s in range(5):
        for t in range(5):
            block = jacobian[s, :, t, :]
            if s == t:
                torch.testing.assert_close(block, layer.weight[s].detach())
            else:
                assert not block.any()

    # A loss on the output of operator 2 trains operator 2 only.
    layer(x)[2].square().sum().backward()
    touched = layer.weight.grad.flatten(1).any(dim=1)
    assert touched.tolist() == [False, False, True, False, False]


def test_linear_stack_initializes_each_operator_like_torch_linear() -> None:
    torch.manual_seed(0)
    layer = Linear(100, 50, stack=4)
    bound = 1 / 100**0.5
    assert layer.weight.abs().max() <= bound
    assert layer.bias.abs().max() <= bound
    # Operators are drawn independently, not copies of one another.
    assert not torch.equal(layer.weight[0], layer.weight[1])


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"in_features": 0, "out_features": 3}, ValueError, "in_features must be a positive"),
        ({"in_features": 2.0, "out_features": 3}, TypeError, "in_features must be a positive"),
        ({"in_features": 2, "out_features": -1}, ValueError, "out_features must be a positive"),
        ({"in_features": 2, "out_features": 3, "stack": 0}, ValueError, "stack must be"),
        ({"in_features": 2, "out_features": 3, "stack": "5"}, TypeError, "stack must be"),
        ({"in_features": True, "out_features": 3}, TypeError, "got True"),
    ],
)
def test_linear_rejects_bad_sizes(kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Linear(**kwargs)
