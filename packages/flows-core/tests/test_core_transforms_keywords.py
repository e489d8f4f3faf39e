"""Transform methods called by keyword bind their arguments as torch names them."""

from __future__ import annotations

import math

import torch

from flows.core.transforms import (
    CircularShiftTransform,
    IdentityTransform,
    SoftclipTransform,
)


def test_inverse_log_abs_det_jacobian_by_keyword_is_input_then_output(dtype, device):
    # torch's convention: log_abs_det_jacobian(x, y), x the input of the transform called.
    t = SoftclipTransform(bound=2.0)
    x = torch.tensor([-3.0, 0.5, 4.0], dtype=dtype, device=device)
    y = t(x)
    expected = -t.log_abs_det_jacobian(x, y)
    torch.testing.assert_close(t.inv.log_abs_det_jacobian(x=y, y=x), expected)
    torch.testing.assert_close(t.inv.log_abs_det_jacobian(y, x), expected)


def test_self_inverse_transforms_take_y_by_keyword(dtype, device):
    y = torch.tensor([-1.5, 0.0, 3.0], dtype=dtype, device=device)

    x, ladj = IdentityTransform().inverse_and_ladj(y=y)
    assert torch.equal(x, y) and torch.equal(ladj, torch.zeros_like(y))

    shift = CircularShiftTransform(bound=math.pi)
    x, ladj = shift.inverse_and_ladj(y=y)
    torch.testing.assert_close(shift(x), torch.remainder(y + math.pi, 2 * math.pi) - math.pi)
    assert torch.equal(ladj, torch.zeros_like(y))
    torch.testing.assert_close(x, shift(y))
