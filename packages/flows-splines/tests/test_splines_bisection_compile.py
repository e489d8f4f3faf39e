"""Compiled bisection inverses: one graph without gradients, and the eager roots.

Without anything to differentiate (sampling under ``torch.no_grad``), :func:`bisection_inverse`
bisects directly, with no autograd node, so dynamo traces it into the caller's graph: the
stepwise inverse of a SOS polynomial flow samples in one graph.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from flows.core.testing import assert_no_graph_breaks
from flows.splines import SOSPolynomialTransform, bisection_inverse


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_compiled_sos_inverse_gives_the_eager_one(
    dtype: torch.dtype, device: torch.device
) -> None:
    torch.manual_seed(0)
    a = torch.randn(5, 3, 2, 3, dtype=dtype, device=device)
    C = torch.randn(5, 3, dtype=dtype, device=device)
    t = SOSPolynomialTransform(a, C, bound=3.0, eps=1e-5)
    x = 4 * torch.randn(5, 3, dtype=dtype, device=device)
    y = t(x)
    with torch.no_grad():
        assert_no_graph_breaks(lambda v: t.inv(v), y)
        compiled = torch.compile(lambda v: t.inv(v), fullgraph=True, backend="eager")(y)
        expected = t.inv(y)
    torch.testing.assert_close(compiled, expected, rtol=0, atol=0)
    torch.testing.assert_close(compiled, x, rtol=0, atol=1e-4)


def test_inverse_without_gradients_equals_the_differentiable_one(
    dtype: torch.dtype, device: torch.device
) -> None:
    scale = torch.tensor(2.0, dtype=dtype, device=device, requires_grad=True)
    y = torch.linspace(-50, 50, 7, dtype=dtype, device=device)

    def inverse() -> torch.Tensor:
        return bisection_inverse(lambda v: scale * v**3, y, -4.0, 4.0, 1e-6, (scale,))

    differentiable = inverse()
    with torch.no_grad():
        plain = inverse()
    assert differentiable.requires_grad and not plain.requires_grad
    torch.testing.assert_close(plain, differentiable.detach(), rtol=0, atol=0)
    torch.testing.assert_close(2 * plain**3, y, rtol=1e-4, atol=1e-4)
