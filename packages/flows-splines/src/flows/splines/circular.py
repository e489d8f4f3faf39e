r"""The circular rational-quadratic spline, a diffeomorphism of the circle for angles.

The spline maps :math:`[-\pi, \pi]` onto itself, fixing both ends, with the same learned
derivative at :math:`-\pi` and :math:`\pi`, so that it is smooth across the cut of the circle.
It is extended to the real line by :math:`f(x + 2 \pi n) = f(x) + 2 \pi n`, a monotonic
bijection of :math:`\mathbb{R}` that acts on angles modulo :math:`2 \pi`.
"""

from __future__ import annotations

__all__ = ["CircularRQSTransform"]

import math

import torch
from torch import Tensor

from flows.core.transforms.base import UnivariateTransform
from flows.splines._rqs_kernels import (
    bins_first_derivatives,
    spline_forward,
    spline_inverse,
    spline_knots,
)
from flows.splines.rqs import check_spline_options


class CircularRQSTransform(UnivariateTransform):
    r"""Circular rational-quadratic spline on :math:`[-\pi, \pi]`, periodic-equivariant.

    Arguments:
        widths: The unnormalized bin widths, with shape :math:`(*, K)`.
        heights: The unnormalized bin heights, with shape :math:`(*, K)`.
        derivatives: The unnormalized knot derivatives, with shape :math:`(*, K)`: the first
            is the derivative at both :math:`-\pi` and :math:`\pi`, the others at the
            interior knots.
        slope: The smallest derivative and smallest relative bin size, in :math:`(0, 1/K)`.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = CircularRQSTransform(torch.randn(8), torch.randn(8), torch.randn(8))
        >>> x = torch.tensor([-3.0, 0.0, 3.0])
        >>> torch.allclose(t(x + 2 * math.pi), t(x) + 2 * math.pi, atol=1e-6)
        True
        >>> torch.allclose(t.inv(t(x)), x, atol=1e-6)
        True

    References:
        | Normalizing Flows on Tori and Spheres (Rezende et al., 2020)
        | https://arxiv.org/abs/2002.02428
    """

    def __init__(
        self,
        widths: Tensor,
        heights: Tensor,
        derivatives: Tensor,
        slope: float = 1e-3,
    ) -> None:
        super().__init__()
        bins = widths.shape[-1]
        if heights.shape[-1] != bins or derivatives.shape[-1] != bins:
            raise ValueError(
                "widths, heights and derivatives must have K elements in their last dimension, "
                f"got {widths.shape[-1]}, {heights.shape[-1]} and {derivatives.shape[-1]}"
            )
        check_spline_options(bins, math.pi, slope)
        self.bins = bins
        self.slope = float(slope)
        self._raw = (widths, heights, derivatives)
        self._knots: Tensor | None = None

    @property
    def knots(self) -> Tensor:
        """The bin rows ``(x_k, y_k, w_k, h_k, d_k, d_{k+1})``, shape ``(6, K, *)``, once."""
        if self._knots is None:
            widths, heights, derivatives = self._raw
            derivatives = bins_first_derivatives(derivatives, self.slope)
            derivatives = torch.cat((derivatives, derivatives[:1]))
            self._knots = spline_knots(widths, heights, derivatives, math.pi, self.slope)
        return self._knots

    @staticmethod
    def _wrap(v: Tensor) -> tuple[Tensor, Tensor]:
        turns = torch.floor((v + math.pi) / (2 * math.pi)) * (2 * math.pi)
        return (v - turns).clamp(-math.pi, math.pi), turns

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x, turns = self._wrap(x)
        y, ladj = spline_forward(self.knots, x)
        return y + turns, ladj

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        y, turns = self._wrap(y)
        x, ladj = spline_inverse(self.knots, y)
        return x + turns, ladj

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bins={self.bins})"
