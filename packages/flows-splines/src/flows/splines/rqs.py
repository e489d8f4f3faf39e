r"""The monotonic rational-quadratic spline (RQS) transform of neural spline flows.

The spline maps :math:`[-B, B]` onto itself through :math:`K` bins whose widths, heights and
knot derivatives are learned. Each bin :math:`k` is a ratio of quadratics in the relative
position :math:`\xi = (x - x_k) / w_k \in [0, 1]`. With :math:`s_k = h_k / w_k`,

.. math:: y = y_k + h_k \frac{s_k \xi^2 + d_k \xi (1 - \xi)}
    {s_k + (d_k + d_{k+1} - 2 s_k) \xi (1 - \xi)}

whose inverse is the root of a quadratic, in closed form. Outside :math:`[-B, B]` the transform
is the identity; the boundary derivatives are 1, so the joint is smooth.

The knot maths lives in :mod:`flows.splines._rqs_kernels`: :class:`MonotonicRQSTransform`
evaluates through its fused formulation (a single autograd node with a closed-form first-order
backward), beside the plain formulation that the circular spline of
:mod:`flows.splines.circular` shares and the tests compare to.
"""

from __future__ import annotations

__all__ = ["MonotonicRQSTransform"]

import math
from collections.abc import Sequence

from torch import SymInt, Tensor

from flows.core.transforms.base import UnivariateTransform
from flows.splines._rqs_kernels import monotonic_rqs, monotonic_rqs_rows, split_rows


def check_spline_options(bins: int, bound: float, slope: float) -> None:
    """Raise :class:`ValueError` on invalid spline options (plain Python values)."""
    if not isinstance(bound, (int, float)) or not bound > 0:
        raise ValueError(f"bound must be a positive float, got {bound!r}")
    if not isinstance(slope, (int, float)) or not 0.0 < slope < 1.0:
        raise ValueError(f"slope must be a float in (0, 1), got {slope!r}")
    if bins * slope >= 1.0:
        raise ValueError(
            f"slope must be smaller than 1 / bins = {1 / bins:g} (it is also the smallest "
            f"relative bin size), got slope={slope!r} with bins={bins}"
        )


class MonotonicRQSTransform(UnivariateTransform):
    r"""Monotonic rational-quadratic spline on :math:`[-B, B]`, the identity outside.

    Widths and heights are normalized by a softmax (each bin at least ``slope`` of the
    interval), interior knot derivatives by :math:`\text{slope} + \text{softplus}`, shifted so
    that null parameters give the identity; the boundary derivatives are 1. Every
    derivative of the spline is therefore bounded above and away from 0, and inputs are
    clamped into the interval before the spline algebra, so values and gradients are finite
    for any finite input.

    Arguments:
        widths: The unnormalized bin widths, with shape :math:`(*, K)`.
        heights: The unnormalized bin heights, with shape :math:`(*, K)`.
        derivatives: The unnormalized interior knot derivatives, with shape :math:`(*, K - 1)`.
        bound: The spline's half-interval :math:`B`.
        slope: The smallest derivative and smallest relative bin size, in :math:`(0, 1/K)`.

    Example:
        >>> import torch
        >>> t = MonotonicRQSTransform(torch.zeros(8), torch.zeros(8), torch.zeros(7))
        >>> t(torch.tensor([-7.0, 0.5, 7.0]))  # null parameters: the identity
        tensor([-7.0000,  0.5000,  7.0000])
        >>> _ = torch.manual_seed(0)
        >>> t = MonotonicRQSTransform(torch.randn(8), torch.randn(8), torch.randn(7))
        >>> y, ladj = t.call_and_ladj(torch.tensor([-1.0, 0.5, 2.0]))
        >>> t.inv(y).round(decimals=4)
        tensor([-1.0000,  0.5000,  2.0000])

    References:
        | Neural Spline Flows (Durkan et al., 2019)
        | https://arxiv.org/abs/1906.04032
    """

    def __init__(
        self,
        widths: Tensor,
        heights: Tensor,
        derivatives: Tensor,
        bound: float = 5.0,
        slope: float = 1e-3,
    ) -> None:
        super().__init__()
        bins = widths.shape[-1]
        if heights.shape[-1] != bins or derivatives.shape[-1] != bins - 1:
            raise ValueError(
                "widths, heights and derivatives must have K, K and K - 1 elements in their "
                f"last dimension, got {widths.shape[-1]}, {heights.shape[-1]} and "
                f"{derivatives.shape[-1]}"
            )
        self._setup(bins, bound, slope)
        self._given: tuple[Tensor, Tensor, Tensor] | None = (widths, heights, derivatives)

    def _setup(self, bins: int, bound: float, slope: float) -> None:
        check_spline_options(bins, bound, slope)
        self.bins = bins
        self.bound = float(bound)
        self.slope = float(slope)
        self._rows: Tensor | None = None
        self._rows_shape: tuple[int, ...] = ()

    @classmethod
    def from_rows(
        cls, rows: Tensor, batch: Sequence[int], bound: float = 5.0, slope: float = 1e-3
    ) -> MonotonicRQSTransform:
        r"""The spline with its parameters laid out parameters first.

        ``rows`` has shape :math:`(3K - 1, F, N)`, with :math:`N` the number of elements of
        ``batch``: the widths, heights and derivatives of every feature and sample, each
        contiguous (the layout in which masked autoregressive layers compute them). The spline
        then reads the block as one tensor and returns its gradient as one, with no split. This
        is the optional ``from_rows`` of the univariate contract, see
        :class:`flows.core.transforms.UnivariateTransform`.

        Example:
            >>> import torch
            >>> rows = torch.zeros(23, 3, 10)  # 8 bins, 3 features, batch (2, 5)
            >>> t = MonotonicRQSTransform.from_rows(rows, (2, 5))
            >>> t(torch.ones(2, 5, 3)).shape
            torch.Size([2, 5, 3])
        """
        if rows.dim() != 3 or rows.shape[0] % 3 != 2:
            raise ValueError(
                "rows must have shape (3K - 1, F, N), K the number of bins, got "
                f"{tuple(rows.shape)}"
            )
        # A traced batch size stays symbolic: int() would fix the graph to the traced size.
        batch = tuple(n if isinstance(n, SymInt) else int(n) for n in batch)
        if math.prod(batch) != rows.shape[2]:
            raise ValueError(
                f"batch {batch} has {math.prod(batch)} elements but rows has N={rows.shape[2]}"
            )
        # The per-parameter views are made only if asked for (_raw): the fast path reads rows.
        transform = cls.__new__(cls)
        UnivariateTransform.__init__(transform)
        transform._setup((rows.shape[0] + 1) // 3, bound, slope)
        transform._given = None
        transform._rows = rows
        transform._rows_shape = (*batch, rows.shape[1])
        return transform

    @property
    def _raw(self) -> tuple[Tensor, Tensor, Tensor]:
        """The widths, heights and derivatives, shapes ``(*, K)``, ``(*, K)``, ``(*, K - 1)``."""
        if self._given is None:
            assert self._rows is not None
            self._given = split_rows(self._rows, self._rows_shape[:-1])
        return self._given

    def _spline(self, v: Tensor, inverse: bool) -> tuple[Tensor, Tensor]:
        """The spline or its inverse: the block whole where ``v`` has its batch, else views."""
        rows = self._rows
        if rows is not None and v.shape == self._rows_shape:
            return monotonic_rqs_rows(v, rows, self.bound, self.slope, inverse)
        return monotonic_rqs(v, *self._raw, self.bound, self.slope, inverse)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._spline(x, False)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._spline(y, True)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bins={self.bins}, bound={self.bound:g})"
