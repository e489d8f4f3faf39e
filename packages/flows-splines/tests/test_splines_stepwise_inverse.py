"""The stepwise inverse of masked autoregressive layers with spline univariates.

Without gradients the passes hand each group's parameters to the spline as one
parameters-first block (``MonotonicRQSTransform.from_rows``); with gradients, as per-feature
views. Both are checked against the generic fixed-point inverse and the forward transform.
"""

from __future__ import annotations

import pytest
import torch

from flows.core.layers import MaskedAutoregressiveTransform
from flows.core.transforms import AutoregressiveTransform


@pytest.mark.parametrize("gradients", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize(
    ("features", "context", "passes"), [(5, 0, None), (5, 3, None), (6, 0, 2), (4, 2, 3)]
)
def test_rqs_stepwise_inverse_is_the_fixed_point(features, context, passes, gradients):
    torch.manual_seed(0)
    t = MaskedAutoregressiveTransform(
        features, context, passes=passes, univariate="rqs", bins=6, hidden_features=[16, 16]
    ).double()
    with torch.no_grad():
        for p in t.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    c = torch.randn(7, context, dtype=torch.float64) if context else None
    f = t(c)
    y = 2 * torch.randn(7, features, dtype=torch.float64)

    with torch.set_grad_enabled(gradients):
        x, ladj = f.inv.call_and_ladj(y)
        again = f.inv(y)
    expected = AutoregressiveTransform._inverse(f, y)
    torch.testing.assert_close(x, expected, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(again, expected, atol=1e-9, rtol=1e-9)
    y_back, forward_ladj = f.call_and_ladj(x)
    torch.testing.assert_close(y_back, y, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(ladj, -forward_ladj, atol=1e-9, rtol=1e-9)
