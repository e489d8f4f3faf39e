"""Compiled quadrature integrals: one graph, and the eager values and gradients.

Under ``torch.compile``, :func:`integrate` is written so that autograd differentiates it as the
exact integral (derivative :math:`g(x)` in :math:`x`, the quadrature of
:math:`\\partial g / \\partial \\theta` in the parameters) with no custom backward, whose
``torch.autograd.grad`` would break the graph: a UNAF's training step must then be the eager
one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from flows.core.testing import check_compiled_flow
from flows.splines import UNAF
from flows.splines.unconstrained import integrate


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_integral_has_the_eager_value_and_gradients(
    dtype: torch.dtype, device: torch.device
) -> None:
    torch.manual_seed(0)
    scale = torch.tensor([0.5, 2.0], dtype=dtype, device=device, requires_grad=True)
    x = torch.tensor([-1.5, 2.5], dtype=dtype, device=device, requires_grad=True)

    def loss() -> torch.Tensor:
        value = integrate(lambda t: torch.exp(scale * t), x, (scale,), nodes=8)
        return (value * torch.tensor([1.0, -3.0], dtype=dtype, device=device)).sum()

    expected = loss()
    expected_x, expected_scale = torch.autograd.grad(expected, (x, scale))
    actual = torch.compile(loss, fullgraph=True, backend="aot_eager")()
    actual_x, actual_scale = torch.autograd.grad(actual, (x, scale))
    torch.testing.assert_close(actual, expected)
    # d/dx is the integrand itself, not the derivative of the quadrature rule.
    torch.testing.assert_close(actual_x, expected_x)
    torch.testing.assert_close(
        actual_x,
        torch.exp(scale * x).detach() * torch.tensor([1.0, -3.0], dtype=dtype, device=device),
    )
    torch.testing.assert_close(actual_scale, expected_scale)


def test_compiled_unaf_training_step_is_the_eager_one(
    dtype: torch.dtype, device: torch.device
) -> None:
    torch.manual_seed(0)
    flow = UNAF(2, 2, transforms=1, signal=4, network={"hidden_features": (8,)}, nodes=8)
    flow = flow.to(dtype=dtype, device=device)
    x = torch.randn(5, 2, dtype=dtype, device=device)
    c = torch.randn(5, 2, dtype=dtype, device=device)
    check_compiled_flow(flow, x, c, training=True, backend="aot_eager")
