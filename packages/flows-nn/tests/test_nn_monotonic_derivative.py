"""Forward-mode derivatives of monotonic networks equal autograd's, and stay differentiable."""

from __future__ import annotations

import pytest
import torch

from flows.nn import MonotonicMLP, TwoWayELU


def test_two_way_elu_slope_is_the_autograd_one(dtype: torch.dtype, device: torch.device) -> None:
    x = torch.linspace(-30, 4, 35, dtype=dtype, device=device).reshape(5, 7)
    x = x.requires_grad_()
    activation = TwoWayELU(alpha=0.7)
    y, slope = activation.forward_and_derivative(x)
    (expected,) = torch.autograd.grad(activation(x).sum(), x)
    torch.testing.assert_close(y, activation(x))
    torch.testing.assert_close(slope, expected)
    assert (slope > 0).all()


@pytest.mark.parametrize("stack", [None, 3])
@pytest.mark.parametrize("feature", [0, 2, -1])
def test_network_derivative_is_the_autograd_one(
    stack: int | None, feature: int, dtype: torch.dtype, device: torch.device
) -> None:
    torch.manual_seed(0)
    net = MonotonicMLP(3, 2, [8, 6], stack=stack).to(dtype=dtype, device=device)
    x = torch.randn(4, *(() if stack is None else (stack,)), 3, dtype=dtype, device=device)
    x.requires_grad_()
    y, dydx = net.forward_and_derivative(x, feature)
    torch.testing.assert_close(y, net(x))
    expected = torch.stack(
        [torch.autograd.grad(net(x)[..., k].sum(), x)[0][..., feature] for k in range(2)], dim=-1
    )
    torch.testing.assert_close(dydx, expected)
    assert (dydx > 0).all()


def test_network_derivative_gradients_are_the_double_backward_ones(
    dtype: torch.dtype, device: torch.device
) -> None:
    torch.manual_seed(0)
    net = MonotonicMLP(2, 1, [8]).to(dtype=dtype, device=device)
    x = torch.randn(6, 2, dtype=dtype, device=device, requires_grad=True)
    parameters = list(net.parameters())
    _, dydx = net.forward_and_derivative(x)
    actual = torch.autograd.grad(dydx.log().sum(), [x, *parameters], allow_unused=True)
    (reference,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    wanted = [x, *parameters]
    expected = torch.autograd.grad(reference[..., 0].log().sum(), wanted, allow_unused=True)
    assert actual[-1] is None and expected[-1] is None  # the last bias shifts, never slopes
    for a, e in zip(actual[:-1], expected[:-1], strict=True):
        torch.testing.assert_close(a, e)


def test_network_derivative_rejects_a_feature_out_of_range(device: torch.device) -> None:
    net = MonotonicMLP(2, 1, [4]).to(device)
    with pytest.raises(ValueError, match=r"feature must index one of the 2 input features, got 2"):
        net.forward_and_derivative(torch.zeros(1, 2, device=device), feature=2)
