"""Image transforms and layers: exact inverses, log-determinants against autograd Jacobians."""

from __future__ import annotations

import pytest
import torch

from flows.image import AffineCoupling, InvertibleConv1x1, SqueezeTransform


def test_squeeze_moves_each_2x2_patch_into_four_channels_and_back(dtype, device):
    x = torch.arange(2 * 4 * 6, dtype=dtype, device=device).view(1, 2, 4, 6)
    y, ladj = SqueezeTransform().call_and_ladj(x)

    assert y.shape == (1, 8, 2, 3)
    # Channel 4c + 2p + q holds pixel (2i + p, 2j + q) of channel c.
    for c in range(2):
        for p in range(2):
            for q in range(2):
                torch.testing.assert_close(y[0, 4 * c + 2 * p + q], x[0, c, p::2, q::2])
    assert torch.equal(ladj, torch.zeros(1, dtype=dtype, device=device))
    assert torch.equal(SqueezeTransform().inv(y), x)


def test_squeeze_of_odd_images_names_the_shape_and_what_would_work(dtype, device):
    x = torch.zeros(2, 3, 5, 4, dtype=dtype, device=device)
    with pytest.raises(ValueError) as error:
        SqueezeTransform()(x)
    assert str(error.value) == (
        "squeeze splits each image into 2x2 patches, so its height and width must be even; "
        "got images of shape (C, H, W) = (3, 5, 4) (crop or pad to (3, 6, 4))"
    )


def test_invertible_conv_inverse_and_log_det_in_o_of_c(
    dtype, device, tolerance, perturb, autograd_ladj
):
    torch.manual_seed(0)
    conv = perturb(InvertibleConv1x1(3)).to(dtype=dtype, device=device)
    x = torch.randn(4, 3, 2, 3, dtype=dtype, device=device)
    t = conv()
    y, ladj = t.call_and_ladj(x)
    back, inverse_ladj = t.inv.call_and_ladj(y)

    torch.testing.assert_close(back, x, atol=tolerance(dtype), rtol=tolerance(dtype))
    torch.testing.assert_close(inverse_ladj, -ladj)
    # H W log|det W| from the LU factors equals slogdet of the assembled weight...
    expected = 6 * torch.linalg.slogdet(conv.weight())[1]
    torch.testing.assert_close(ladj, expected.expand(4), atol=tolerance(dtype), rtol=0)
    # ... and the log-determinant of the whole map's Jacobian.
    torch.testing.assert_close(
        ladj.detach(), autograd_ladj(t, x), atol=tolerance(dtype), rtol=tolerance(dtype)
    )


def test_invertible_conv_starts_as_a_rotation():
    torch.manual_seed(0)
    w = InvertibleConv1x1(5).weight().detach()
    torch.testing.assert_close(w @ w.T, torch.eye(5), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "mask, context",
    [
        ("channel", 0),
        ("channel", 3),
        ("checkerboard", 0),
        ("checkerboard", (2, 8, 8)),
    ],
)
def test_coupling_inverse_and_log_det_against_autograd(
    mask, context, dtype, device, tolerance, perturb, autograd_ladj
):
    torch.manual_seed(0)
    layer = perturb(AffineCoupling((3, 4, 4), context, mask, parity=1, hidden_channels=8))
    layer = layer.to(dtype=dtype, device=device)
    x = torch.randn(2, 3, 4, 4, dtype=dtype, device=device)
    if context == 0:
        c = None
    elif isinstance(context, int):
        c = torch.randn(2, context, dtype=dtype, device=device)
    else:
        c = torch.randn(2, *context, dtype=dtype, device=device)
    t = layer(c)
    y, ladj = t.call_and_ladj(x)

    assert not torch.allclose(y, x)
    torch.testing.assert_close(t.inv(y), x, atol=tolerance(dtype), rtol=tolerance(dtype))
    for i in range(2):
        one = layer(None if c is None else c[i : i + 1])
        torch.testing.assert_close(
            ladj[i].detach(),
            autograd_ladj(one, x[i : i + 1])[0],
            atol=tolerance(dtype),
            rtol=tolerance(dtype),
        )


def test_coupling_starts_as_the_identity(dtype, device):
    layer = AffineCoupling((2, 4, 4), mask="checkerboard").to(dtype=dtype, device=device)
    x = torch.randn(3, 2, 4, 4, dtype=dtype, device=device)
    y, ladj = layer().call_and_ladj(x)
    assert torch.equal(y, x)
    assert torch.equal(ladj.detach(), torch.zeros(3, dtype=dtype, device=device))


def test_checkerboard_coupling_leaves_the_kept_pixels_unchanged(dtype, device, perturb):
    layer = perturb(AffineCoupling((1, 4, 4), mask="checkerboard", parity=0))
    layer = layer.to(dtype=dtype, device=device)
    x = torch.randn(2, 1, 4, 4, dtype=dtype, device=device)
    y = layer()(x).detach()
    kept = layer.checkerboard.bool()
    assert torch.equal(y[..., kept], x[..., kept])
    assert not torch.allclose(y[..., ~kept], x[..., ~kept])


def test_squeeze_of_a_batch_is_channels_last_and_the_1x1_convolution_agrees_in_both_layouts(
    dtype, device, tolerance, perturb
):
    # The squeeze hands a batch on in the channels-last layout, where the 1x1 convolution is
    # one matrix product: same values, same log-determinant as in the default layout.
    torch.manual_seed(0)
    x = torch.randn(3, 2, 4, 6, dtype=dtype, device=device)
    y, _ = SqueezeTransform().call_and_ladj(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(SqueezeTransform().inv(y), x)
    conv = perturb(InvertibleConv1x1(8)).to(dtype=dtype, device=device)
    fast, ladj = conv().call_and_ladj(y)
    plain, plain_ladj = conv().call_and_ladj(y.contiguous())
    torch.testing.assert_close(fast, plain, atol=tolerance(dtype), rtol=tolerance(dtype))
    torch.testing.assert_close(ladj, plain_ladj)
    torch.testing.assert_close(conv().inv(fast), y, atol=tolerance(dtype), rtol=tolerance(dtype))
