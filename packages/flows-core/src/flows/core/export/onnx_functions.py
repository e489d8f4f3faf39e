# mypy: ignore-errors
# (onnxscript's functions are its own language, parsed from this source: typed as ONNX, not
# Python; and onnxscript, an extra, is not installed where types are checked.)
r"""ONNX functions for the normal distribution's :math:`\log \Phi` and :math:`\Phi^{-1}`.

ONNX has an error function but no complementary one and no quantile: the ONNX exporter writes
:math:`\log \Phi(z)` with :math:`1 - \operatorname{erf}`, which cancels to :math:`-\infty`
beyond :math:`z \approx -5.5` in float32, and has no :math:`\Phi^{-1}`. GF uses both, dozens
of times in its bisection inverse. :data:`TRANSLATIONS` gives the exporter, for torch's
``special_log_ndtr`` and ``special_ndtri``, one ONNX function call each (the exporter inlines
the bodies), computed in float32:

* :func:`log_ndtr`: :math:`\log \Phi(-u \sqrt 2) = \log \tfrac12 - u^2 + \log
  \operatorname{erfcx}(u)` for :math:`u \ge 0`, with :math:`\log \operatorname{erfcx}(u) =
  \log t + P(t)`, :math:`t = 1 / (1 + u / 2)` and :math:`P` of degree 9 (our least-squares fit
  on :math:`[0, 1]`; the relative error of :math:`\operatorname{erfcx}` stays below 5e-7 in
  float32), and :math:`\log \Phi(z) = \log(1 - \Phi(-z))` for :math:`z \ge 0`: accurate in
  both tails, to about 3e-7 relative to :math:`1 + |\log \Phi(z)|`;
* :func:`ndtri`: the rational first guess of Abramowitz and Stegun (26.2.23, error below
  4.5e-4) refined by two Newton steps on :math:`\log \Phi(x) = \log p`; :math:`\mp\infty` at
  0 and 1, NaN outside :math:`[0, 1]`.

This module needs onnxscript (the ``export`` extra); only ONNX export imports it.
"""

from __future__ import annotations

__all__ = ["TRANSLATIONS", "log_ndtr", "ndtri"]

import math
from typing import Any

import torch
from onnxscript import FLOAT, script
from onnxscript.onnx_opset import opset18 as op  # the exporter's; it converts the model after


@script(default_opset=op)
def log_ndtr(z: FLOAT[...]) -> FLOAT[...]:
    u = op.Abs(z) * 0.7071067811865476
    t = op.Reciprocal(1.0 + 0.5 * u)
    p = 0.1708729171 * t - 0.8221529936
    p = p * t + 1.488517601
    p = p * t - 1.135206085
    p = p * t + 0.2788695772
    p = p * t - 0.1862887022
    p = p * t + 0.0967843498
    p = p * t + 0.3740919381
    p = p * t + 1.000023681
    p = p * t - 1.265512225
    left = op.Log(t) + p - u * u - 0.6931471805599453  # log Phi(-|z|)
    right = op.Log(1.0 - op.Exp(left))
    return op.Where(z < 0.0, left, right)


@script(default_opset=op)
def _ndtri_inside(p: FLOAT[...]) -> FLOAT[...]:
    q = op.Min(p, 1.0 - p)  # the tail that holds p: 1 - p is exact for p >= 1/2
    log_q = op.Log(q)
    t = op.Sqrt(-2.0 * log_q)
    numerator = (0.010328 * t + 0.802853) * t + 2.515517
    denominator = ((0.001308 * t + 0.189269) * t + 1.432788) * t + 1.0
    x = numerator / denominator - t
    # Newton on log Phi(x) = log q; the derivative of log Phi is phi / Phi.
    log_cdf = log_ndtr(x)
    x = x - (log_cdf - log_q) * op.Exp(log_cdf + 0.5 * x * x + 0.9189385332046727)
    log_cdf = log_ndtr(x)
    x = x - (log_cdf - log_q) * op.Exp(log_cdf + 0.5 * x * x + 0.9189385332046727)
    return op.Where(p > 0.5, op.Neg(x), x)


def ndtri(p: Any) -> Any:
    """The translation of ``special_ndtri``: the quantile inside (0, 1), then the ends."""
    inside = _ndtri_inside(p)
    zero = op.Constant(value_float=0.0)
    one = op.Constant(value_float=1.0)
    x = op.Where(op.Equal(p, zero), op.Constant(value_float=-math.inf), inside)
    x = op.Where(op.Equal(p, one), op.Constant(value_float=math.inf), x)
    outside = op.Or(op.Less(p, zero), op.Greater(p, one))
    return op.Where(outside, op.Constant(value_float=math.nan), x)


def _log_ndtr(z: Any) -> Any:
    """The translation of ``special_log_ndtr``."""
    return log_ndtr(z)


#: The exporter's ``custom_translation_table`` for the normal distribution's functions.
TRANSLATIONS: dict[Any, Any] = {
    torch.ops.aten.special_log_ndtr.default: _log_ndtr,
    torch.ops.aten.special_ndtri.default: ndtri,
}
