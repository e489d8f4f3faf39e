r"""Operations the ONNX exporter cannot write, written so that it can.

Before a program goes to ONNX:

* :func:`for_onnx` rewrites a triangular solve (a full-covariance GMM's density solves with its
  Cholesky factors; ONNX has no such operation) into :func:`solve_triangular`, substitution row
  after row (the matrices of a flow are small and their size is fixed in the graph);
* :func:`translations` gives the exporter ONNX functions for the normal distribution's
  :math:`\log \Phi` and :math:`\Phi^{-1}` (GF), see :mod:`~flows.core.export.onnx_functions`.

Programs written as ``pt2`` keep torch's own kernels.

Example:
    >>> a = torch.tensor([[2.0, 0.0], [1.0, 4.0]])
    >>> b = torch.tensor([[2.0], [9.0]])
    >>> solve_triangular(a, b, upper=False)
    tensor([[1.],
            [2.]])
"""

from __future__ import annotations

__all__ = ["for_onnx", "solve_triangular", "translations"]

import importlib
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def solve_triangular(
    a: Tensor, b: Tensor, *, upper: bool, left: bool = True, unitriangular: bool = False
) -> Tensor:
    r"""The solution :math:`X` of :math:`A X = B` (or :math:`X A = B`), :math:`A` triangular.

    As :func:`torch.linalg.solve_triangular`, by substitution over the rows of :math:`A`;
    batch dimensions broadcast.
    """
    if not left:  # X A = B  <=>  A^T X^T = B^T
        return solve_triangular(a.mT, b.mT, upper=not upper, unitriangular=unitriangular).mT
    n = a.shape[-1]
    order = range(n - 1, -1, -1) if upper else range(n)
    rows: dict[int, Tensor] = {}
    for i in order:
        row = b[..., i, :]
        for j, known in rows.items():
            row = row - a[..., i, j, None] * known
        rows[i] = row if unitriangular else row / a[..., i, i, None]
    return torch.stack([rows[i] for i in range(n)], dim=-2)


_REWRITES: dict[Any, Callable[..., Tensor]] = {
    torch.ops.aten.linalg_solve_triangular.default: solve_triangular,
}


def for_onnx(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``program`` with :func:`solve_triangular` for torch's; unchanged if it solves none."""
    used = {node.target for node in program.graph.nodes if node.op == "call_function"}
    wanted = {op: function for op, function in _REWRITES.items() if op in used}
    if not wanted:
        return program
    return program.run_decompositions(wanted)


def translations() -> dict[Any, Any]:
    """The exporter's ``custom_translation_table`` (imports onnxscript)."""
    functions = importlib.import_module("flows.core.export.onnx_functions")
    return dict(functions.TRANSLATIONS)
