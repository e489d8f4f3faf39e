r"""The monotonic rational-quadratic spline (RQS) transform of neural spline flows.

The spline maps :math:`[-B, B]` onto itself through :math:`K` bins whose widths, heights and
knot derivatives are learned. Each bin :math:`k` is a ratio of quadratics in the relative
position :math:`\xi = (x - x_k) / w_k \in [0, 1]`. With :math:`s_k = h_k / w_k`,

.. math:: y = y_k + h_k \frac{s_k \xi^2 + d_k \xi (1 - \xi)}
    {s_k + (d_k + d_{k+1} - 2 s_k) \xi (1 - \xi)}

whose inverse is the root of a quadratic, in closed form. Outside :math:`[-B, B]` the transform
is the identity; the boundary derivatives are 1, so the joint is smooth.

The helpers in this module (knots, bin search, forward and inverse evaluation) are shared with
the circular spline of :mod:`flows.splines.circular`.
"""

from __future__ import annotations

__all__ = ["MonotonicRQSTransform"]

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import constraints

from flows.core.transforms.base import Transform


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


def derivative_offset(slope: float) -> float:
    """The shift that makes ``slope + softplus(0 + shift)`` equal to 1 (identity at zero)."""
    return math.log(math.expm1(1.0 - slope))


def bins_first_derivatives(derivatives: Tensor, slope: float) -> Tensor:
    r"""Positive derivatives :math:`\text{slope} + \text{softplus}`, bins first: ``(K', *)``.

    Null parameters give derivatives of 1. Moving the bins first before the element-wise
    work keeps it on contiguous memory (the parameters are often strided views).
    """
    derivatives = derivatives.movedim(-1, 0).contiguous()
    return F.softplus(derivatives + derivative_offset(slope)) + slope


def spline_knots(
    widths: Tensor, heights: Tensor, derivatives: Tensor, bound: float, slope: float
) -> Tensor:
    r"""Every bin quantity, stacked as rows ``(x_k, y_k, w_k, h_k, d_k, d_{k+1})``: ``(6, K, *)``.

    Widths and heights go through a softmax with a floor of ``slope`` (relative to the
    interval), so every bin slope :math:`s_k = h_k / w_k` lies in
    :math:`[\text{slope}, 1 / \text{slope}]`. Row 0 (1) holds the left knots
    :math:`x_k` (:math:`y_k`), whose entries 1 to :math:`K - 1` are the interior knots.

    The bins come first (``(6, K, *)``, not ``(*, 6, K)``): reductions, cumulative sums and
    broadcasts then run along the long contiguous batch dimension, several times faster than
    along a last dimension of a few bins.

    Arguments:
        widths: Unnormalized bin widths, shape ``(*, K)``.
        heights: Unnormalized bin heights, shape ``(*, K)``.
        derivatives: Positive knot derivatives, bins first: shape ``(K + 1, *)``.
        bound: The half-width :math:`B` of the interval.
        slope: The smallest relative bin size.
    """
    bins = widths.shape[-1]
    widths, heights = torch.broadcast_tensors(widths, heights)
    sizes = torch.stack((widths.movedim(-1, 0), heights.movedim(-1, 0)))  # (2, K, *)
    sizes = torch.exp(sizes - sizes.detach().amax(dim=1, keepdim=True))
    scale = (2 * bound * (1 - bins * slope)) / sizes.sum(dim=1, keepdim=True)
    sizes = sizes * scale + 2 * bound * slope
    left = torch.cumsum(sizes, dim=1) - (sizes + bound)
    derivatives = derivatives.expand(bins + 1, *sizes.shape[2:]).unsqueeze(0)
    return torch.cat((left, sizes, derivatives[:, :-1], derivatives[:, 1:]))  # (6, K, *)


def bin_quantities(rows: Tensor, v: Tensor, row: int) -> tuple[Tensor, ...]:
    r"""Locate each ``v`` among the knots of ``row`` (0: x, 1: y) and gather its bin.

    One comparison-count finds the bin and one gather fetches every bin quantity.

    Returns:
        ``(x_k, y_k, w_k, h_k, d_k, d_{k+1})``, each of the broadcast shape.
    """
    batch = torch.broadcast_shapes(v.shape, rows.shape[2:])
    # Batch dimensions follow the bins: align them on the right, as broadcasting does.
    rows = rows[(slice(None), slice(None)) + (None,) * (len(batch) + 2 - rows.dim())]
    rows = rows.expand(*rows.shape[:2], *batch)
    # Counting the interior knots at or below v gives the bin; unlike searchsorted it
    # broadcasts and compiles without graph breaks, and it is fast for a few dozen bins.
    index = (v >= rows[row, 1:]).sum(dim=0, keepdim=True)
    index = index.unsqueeze(0).expand(6, 1, *batch)
    return torch.gather(rows, 1, index).squeeze(1).unbind(0)


def log_derivative(xi: Tensor, s: Tensor, d0: Tensor, d1: Tensor, denominator: Tensor) -> Tensor:
    r"""The log-derivative of a bin at relative position :math:`\xi`.

    .. math:: \log \frac{s^2 (d_{k+1} \xi^2 + 2 s \xi (1 - \xi) + d_k (1 - \xi)^2)}
        {(s + (d_k + d_{k+1} - 2 s) \xi (1 - \xi))^2}

    Every factor is bounded away from 0 and infinity by the floors on bins and derivatives.
    """
    omx = 1 - xi
    numerator = d1 * xi * xi + 2 * s * xi * omx + d0 * omx * omx
    return torch.log(numerator * (s / denominator).square())


def spline_forward(knots: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Evaluate the spline and its log-derivative at ``x``, already clamped into the interval."""
    x0, y0, w, h, d0, d1 = bin_quantities(knots, x, 0)
    s = h / w
    xi = ((x - x0) / w).clamp(0, 1)
    xi_omx = xi * (1 - xi)
    denominator = s + (d0 + d1 - 2 * s) * xi_omx
    y = y0 + h * (s * xi * xi + d0 * xi_omx) / denominator
    return y, log_derivative(xi, s, d0, d1, denominator)


def spline_inverse(knots: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    r"""Invert the spline at ``y`` (already clamped), with the log-derivative of the inverse.

    The relative position solves :math:`a \xi^2 + b \xi + c = 0`; the root is taken in the
    form :math:`\xi = 2c / (-b - \sqrt{b^2 - 4ac})`, which does not cancel catastrophically.
    """
    x0, y0, w, h, d0, d1 = bin_quantities(knots, y, 1)
    s = h / w
    dy = y - y0
    curvature = d0 + d1 - 2 * s
    a = h * (s - d0) + dy * curvature
    b = h * d0 - dy * curvature
    c = -s * dy
    # The floor keeps the gradient of the square root finite where the root is double.
    discriminant = (b * b - 4 * a * c).clamp(min=torch.finfo(y.dtype).tiny)
    xi = (2 * c / (-b - discriminant.sqrt())).clamp(0, 1)
    x = x0 + xi * w
    denominator = s + curvature * xi * (1 - xi)
    return x, -log_derivative(xi, s, d0, d1, denominator)


class MonotonicRQSTransform(Transform):
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

    domain = constraints.real
    codomain = constraints.real
    bijective = True
    sign = +1

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
        check_spline_options(bins, bound, slope)
        self.bins = bins
        self.bound = float(bound)
        self.slope = float(slope)
        self._raw = (widths, heights, derivatives)
        self._knots: Tensor | None = None

    @property
    def knots(self) -> Tensor:
        """The bin rows ``(x_k, y_k, w_k, h_k, d_k, d_{k+1})``, shape ``(6, K, *)``, once."""
        if self._knots is None:
            widths, heights, derivatives = self._raw
            derivatives = bins_first_derivatives(derivatives, self.slope)
            derivatives = F.pad(
                derivatives, (0,) * (2 * derivatives.dim() - 2) + (1, 1), value=1.0
            )
            self._knots = spline_knots(widths, heights, derivatives, self.bound, self.slope)
        return self._knots

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        inside = x.abs() <= self.bound
        y, ladj = spline_forward(self.knots, x.clamp(-self.bound, self.bound))
        return torch.where(inside, y, x), torch.where(inside, ladj, 0.0)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        inside = y.abs() <= self.bound
        x, ladj = spline_inverse(self.knots, y.clamp(-self.bound, self.bound))
        return torch.where(inside, x, y), torch.where(inside, ladj, 0.0)

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        return self.inverse_and_ladj(y)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bins={self.bins}, bound={self.bound:g})"
