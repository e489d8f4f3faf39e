r"""Base class of monotonic functions defined on :math:`[-B, B]` and linear beyond.

A subclass gives the function and its derivative on :math:`[-B, B]`; outside, the transform
continues along the tangent at the nearest end,

.. math:: f(x) = f(c) + f'(c) (x - c), \quad c = \operatorname{clamp}(x, -B, B),

which is smooth (C1), defined for any finite input and keeps every derivative that of the
polynomial at the bound. The inverse is found by bisection inside and in closed form outside.
"""

from __future__ import annotations

__all__ = ["LinearTailsTransform"]

from collections.abc import Sequence

import torch
from torch import Tensor

from flows.core.transforms.base import UnivariateTransform
from flows.splines.bisection import bisection_inverse, bisection_steps


class LinearTailsTransform(UnivariateTransform):
    r"""An increasing function on :math:`[-B, B]`, extended linearly outside.

    Subclasses implement :meth:`inner`, returning :math:`(f(x), f'(x))` for
    :math:`x \in [-B, B]`, and set ``self.phi`` to the tensors it depends on. The inverse is
    within ``eps`` of the exact inverse inside the bound.

    Arguments:
        bound: The half-width :math:`B` of the interval.
        eps: The tolerance of the inverse on :math:`x` inside the bound.
    """

    def __init__(self, bound: float, eps: float) -> None:
        super().__init__()
        if not isinstance(bound, (int, float)) or not bound > 0:
            raise ValueError(f"bound must be a positive float, got {bound!r}")
        bisection_steps(2 * bound, eps)  # validates eps
        self.bound = float(bound)
        self.eps = float(eps)
        self.phi: Sequence[Tensor] = ()

    def inner(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Return :math:`(f(x), f'(x))` for :math:`x` in :math:`[-B, B]`."""
        raise NotImplementedError

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        clamped = x.clamp(-self.bound, self.bound)
        y, dydx = self.inner(clamped)
        # x - clamped is null inside the bound: no branch, no mask.
        return y + dydx * (x - clamped), dydx.log()

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        low, low_slope = self.inner(torch.full_like(y, -self.bound))
        high, high_slope = self.inner(torch.full_like(y, self.bound))
        clamped = torch.minimum(torch.maximum(y, low), high)
        inside = bisection_inverse(
            lambda v: self.inner(v)[0],
            clamped,
            -self.bound,
            self.bound,
            self.eps,
            self.phi,
            derivative=lambda v: self.inner(v)[1],
        )
        _, slope = self.inner(inside)
        # Beyond the bound the inverse is the exact inverse of the tangent line.
        below = y < low
        tail = torch.where(
            below, (y - low) / low_slope - self.bound, (y - high) / high_slope + self.bound
        )
        tail_slope = torch.where(below, low_slope, high_slope)
        is_inside = y == clamped
        x = torch.where(is_inside, inside, tail)
        return x, -torch.where(is_inside, slope, tail_slope).log()
