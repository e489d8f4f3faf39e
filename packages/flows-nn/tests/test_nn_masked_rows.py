"""MaskedLinear: the transposed layout of layers with few inputs computes the same thing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from flows.nn import MaskedLinear


@pytest.mark.parametrize(("inputs", "outputs"), [(3, 16), (10, 64), (12, 13), (16, 64), (8, 4)])
@pytest.mark.parametrize("input_grad", [False, True])
def test_masked_linear_values_and_gradients(inputs, outputs, input_grad, dtype, device):
    torch.manual_seed(0)
    mask = torch.rand(outputs, inputs) > 0.4
    layer = MaskedLinear(mask).to(dtype=dtype, device=device)
    x = torch.randn(7, inputs, dtype=dtype, device=device, requires_grad=input_grad)
    y = layer(x)
    expected = F.linear(x, layer.weight * layer.mask, layer.bias)
    torch.testing.assert_close(y, expected)

    g = torch.randn_like(y)
    wanted = [layer.weight, layer.bias, *([x] if input_grad else [])]
    grads = torch.autograd.grad(y, wanted, g)
    reference = torch.autograd.grad(expected, wanted, g)
    for a, b in zip(grads, reference, strict=True):
        torch.testing.assert_close(a, b)
        assert a.shape == b.shape
    # Masked-out weights get no gradient.
    assert (grads[0][~mask.to(device)] == 0).all()
    assert layer.weight.grad is None  # autograd.grad does not accumulate


@pytest.mark.parametrize("shape", [(5,), (2, 3, 5)])
def test_masked_linear_any_batch_shape(shape, dtype, device):
    torch.manual_seed(1)
    layer = MaskedLinear(torch.rand(32, 5) > 0.5).to(dtype=dtype, device=device)
    x = torch.randn(*shape, dtype=dtype, device=device)
    y = layer(x)
    assert y.shape == (*shape[:-1], 32)
    torch.testing.assert_close(y, F.linear(x, layer.weight * layer.mask, layer.bias))


def test_masked_linear_follows_a_mask_loaded_edited_or_replaced(dtype, device):
    """Layers with few inputs keep their mask column-major; any new mask is still honored."""
    torch.manual_seed(2)
    layer = MaskedLinear(torch.rand(16, 3) > 0.5).to(dtype=dtype, device=device)
    x = torch.randn(5, 3, dtype=dtype, device=device)

    def check() -> None:
        expected = F.linear(x, layer.weight * layer.mask, layer.bias)
        torch.testing.assert_close(layer(x), expected)

    new = (torch.rand(16, 3) > 0.5).to(dtype=dtype, device=device)
    # A state dict saved by a layer whose mask is row-major (contiguous).
    state = {**layer.state_dict(), "mask": new.contiguous()}
    layer.load_state_dict(state)
    assert torch.equal(layer.mask, new)
    check()
    layer.mask.zero_()
    check()
    assert not layer(x).sub(layer.bias).any()
    layer.mask = new.contiguous()  # a row-major buffer in its place
    check()
