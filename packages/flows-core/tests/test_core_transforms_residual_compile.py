"""Compiled root solves of the residual transforms: one graph, and the eager roots.

Under ``torch.compile``, :func:`solve_tanh_equation` runs its iterations and its convergence
stops as a ``torch.while_loop`` in the graph instead of a Python test: the compiled roots must
be the eager ones, for moderate and for steep equations (where bisection steps are taken).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from flows.core.testing import assert_no_graph_breaks
from flows.core.transforms.residual import PlanarTransform, solve_tanh_equation


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _equations(
    scale: float, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    p, q, c, s = (torch.randn(4, 64, generator=generator, dtype=dtype) for _ in range(4))
    p, q = scale * p, scale * q
    q = torch.where(p * q < -0.9, -0.9 / p, q)  # pq > -1: one root
    return p.to(device), q.to(device), c.to(device), (5 * s).to(device)


@pytest.mark.parametrize("scale", [300.0])
def test_compiled_solve_gives_the_eager_roots(
    scale: float, dtype: torch.dtype, device: torch.device
) -> None:
    equations = _equations(scale, dtype, device)
    expected = solve_tanh_equation(*equations)
    actual = torch.compile(solve_tanh_equation, fullgraph=True, backend="eager")(*equations)
    tolerance = 16 * torch.finfo(dtype).eps
    torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance)
    p, q, c, s = equations
    residual = actual + p * torch.tanh(q * actual + c) - s
    assert (residual.abs() <= 1e3 * torch.finfo(dtype).eps * (1 + s.abs())).all()


def test_planar_inverse_traces_into_one_graph(dtype: torch.dtype, device: torch.device) -> None:
    torch.manual_seed(0)
    w, u = torch.randn(2, 3, dtype=dtype, device=device)
    t = PlanarTransform(w, u, torch.tensor(0.5, dtype=dtype, device=device))
    x = torch.randn(6, 3, dtype=dtype, device=device)
    assert_no_graph_breaks(lambda y: t.inverse_and_ladj(y)[1], x)
    z = torch.compile(lambda y: t.inv(y), fullgraph=True, backend="eager")(x)
    torch.testing.assert_close(z, t.inv(x))
    torch.testing.assert_close(t(z), x)
