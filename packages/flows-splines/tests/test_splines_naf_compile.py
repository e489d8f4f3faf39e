"""Compiled neural autoregressive flows: forward-mode derivatives, and the eager results.

Under ``torch.compile``, a NAF's monotonic networks give their derivative by forward-mode
propagation (:meth:`flows.nn.MonotonicMLP.forward_and_derivative`) instead of
``torch.autograd.grad``, which breaks the graph: the compiled log-densities, training losses
and gradients must be the eager ones, and eager must keep autograd's.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from flows.core.testing import check_compiled_flow
from flows.splines import NAF
from flows.splines.presets.naf import NeuralAutoregressiveTransform


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _naf(dtype: torch.dtype, device: torch.device) -> NAF:
    torch.manual_seed(0)
    flow = NAF(2, 2, transforms=1, signal=4, network={"hidden_features": (8, 8)})
    return flow.to(dtype=dtype, device=device)


def test_forward_mode_gives_autograd_values_and_log_dets(
    dtype: torch.dtype, device: torch.device
) -> None:
    torch.manual_seed(0)
    layer = NeuralAutoregressiveTransform(2, signal=4, network={"hidden_features": (8, 8)})
    layer = layer.to(dtype=dtype, device=device)
    x = 3 * torch.randn(5, 2, dtype=dtype, device=device)
    univariate = layer._univariate(torch.randn(5, 2, 4, dtype=dtype, device=device))
    y, ladj = univariate.call_and_ladj(x)  # eager: autograd's derivative
    forward_y, derivative = univariate.f_and_derivative(x)
    torch.testing.assert_close(forward_y, y)
    torch.testing.assert_close(derivative.log(), ladj)


def test_compiled_naf_training_step_is_the_eager_one(
    dtype: torch.dtype, device: torch.device
) -> None:
    flow = _naf(dtype, device)
    x = torch.randn(5, 2, dtype=dtype, device=device)
    c = torch.randn(5, 2, dtype=dtype, device=device)
    check_compiled_flow(flow, x, c, training=True, backend="aot_eager")
