r"""The knot maths of the monotonic rational-quadratic spline, in two formulations.

Both evaluate the spline of :mod:`flows.splines.rqs` (or its inverse) and its log-derivative
from the raw parameters:

* The plain formulation (:func:`spline_knots`, :func:`spline_forward`, :func:`spline_inverse`,
  and :func:`plain_monotonic_rqs` built on them) computes every bin's knots, gathers each
  element's bin and runs the spline algebra there, every step recorded by autograd. It
  broadcasts any batch and differentiates to any order. The circular spline uses it, the fused
  formulation falls back on it for second derivatives, and the tests compare the fused
  formulation to it.
* The fused formulation (:func:`monotonic_rqs`, :func:`monotonic_rqs_rows`) is the fast path of
  :class:`~flows.splines.rqs.MonotonicRQSTransform`: one autograd node per evaluation, with a
  backward derived by hand.

The two functions of the fused formulation are the only door to it: the transform calls them
and nothing else here.
"""

from __future__ import annotations

__all__ = [
    "bins_first_derivatives",
    "derivative_offset",
    "monotonic_rqs",
    "monotonic_rqs_rows",
    "plain_monotonic_rqs",
    "plain_monotonic_rqs_rows",
    "spline_forward",
    "spline_inverse",
    "spline_knots",
    "split_rows",
]

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from flows.core.constants import cached_constants
from flows.core.layers.univariate import parameters_from_rows

# The plain formulation: every bin's knots, each element's bin gathered, autograd throughout.


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


def _monotonic_knots(
    widths: Tensor, heights: Tensor, derivatives: Tensor, bound: float, slope: float
) -> Tensor:
    """The bin rows of :func:`spline_knots` from raw parameters, boundary derivatives 1."""
    derivatives = bins_first_derivatives(derivatives, slope)
    derivatives = F.pad(derivatives, (0,) * (2 * derivatives.dim() - 2) + (1, 1), value=1.0)
    return spline_knots(widths, heights, derivatives, bound, slope)


def plain_monotonic_rqs(
    v: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float,
    slope: float,
    inverse: bool,
) -> tuple[Tensor, Tensor]:
    r"""The monotonic spline (or its inverse) by the plain algebra: the reference.

    Every step is recorded by autograd, which differentiates it to any order. The parameters
    are raw, as :class:`~flows.splines.rqs.MonotonicRQSTransform` takes them, of any batch
    that broadcasts with ``v``; outside :math:`[-B, B]` the spline is the identity.
    """
    knots = _monotonic_knots(widths, heights, derivatives, bound, slope)
    inside = v.abs() <= bound
    out, ladj = (spline_inverse if inverse else spline_forward)(knots, v.clamp(-bound, bound))
    return torch.where(inside, out, v), torch.where(inside, ladj, 0.0)


def plain_monotonic_rqs_rows(
    v: Tensor, rows: Tensor, bound: float, slope: float, inverse: bool
) -> tuple[Tensor, Tensor]:
    """:func:`plain_monotonic_rqs` with the parameters given parameters first."""
    return plain_monotonic_rqs(v, *split_rows(rows, v.shape[:-1]), bound, slope, inverse)


def split_rows(rows: Tensor, batch: tuple[int, ...]) -> tuple[Tensor, Tensor, Tensor]:
    """Widths, heights and derivatives ``(*batch, F, k)`` as views of ``rows (3K - 1, F, N)``."""
    bins = (rows.shape[0] + 1) // 3
    widths, heights, derivatives = parameters_from_rows(
        rows, batch, [(bins,), (bins,), (bins - 1,)]
    )
    return widths, heights, derivatives


# The fused formulation, the fast path of MonotonicRQSTransform: one autograd node per spline
# evaluation, computed from the raw parameters, and a hand-derived backward. Autograd through
# the plain formulation above records about a hundred nodes per call and saves every
# intermediate; on batches of a few thousand elements the per-node overhead, not the
# arithmetic, sets the time. Per-bin work (softmax, knots by one small matrix product, the
# search mask) runs bins first, on rows of the batch, where the kernels vectorize; the spline
# algebra runs on each element's bin only.


class _BatchLayout:
    """The broadcast batch of a spline call, walked in the memory order of its parameters.

    Hyper-networks may emit the parameters with the batch in any memory order (for example
    features before samples); visiting the batch dimensions by decreasing stride of the widths
    keeps the bins-first rows views of the parameters, or cheap copies of long runs.
    """

    def __init__(self, v: Tensor, widths: Tensor, heights: Tensor, derivatives: Tensor) -> None:
        shape = widths.shape[:-1]
        if not v.shape == shape == heights.shape[:-1] == derivatives.shape[:-1]:
            shape = torch.broadcast_shapes(
                v.shape, widths.shape[:-1], heights.shape[:-1], derivatives.shape[:-1]
            )
        dims = range(len(shape))
        if widths.shape[:-1] == shape:
            order = sorted(dims, key=widths.stride, reverse=True)  # stable: ties keep order
        else:
            order = list(dims)
        self.shape = shape
        self.order = order
        self.inverse = sorted(dims, key=order.__getitem__)
        self.permuted = [shape[i] for i in order]
        self.elements = math.prod(shape)

    def rows(self, *ps: Tensor) -> Tensor:
        """Each ``p`` of shape ``(*, k)``, broadcast, bins first and flattened: ``(n, k, M)``."""
        ps = tuple(p.expand(*self.shape, p.shape[-1]) for p in ps)
        stacked = torch.stack(ps) if len(ps) > 1 else ps[0].unsqueeze(0)
        order = (i + 1 for i in self.order)
        # Explicit sizes: an empty batch leaves a -1 ambiguous.
        return stacked.permute(0, -1, *order).reshape(len(ps), ps[0].shape[-1], self.elements)

    def flat(self, v: Tensor) -> Tensor:
        """``v`` broadcast to the batch, flattened in the walking order: ``(M,)``."""
        return v.expand(self.shape).permute(self.order).reshape(-1)

    def unflat(self, t: Tensor) -> Tensor:
        """The inverse of :meth:`flat`."""
        return t.view(self.permuted).permute(self.inverse)

    def unflat_rows(self, g: Tensor) -> Tensor:
        """The inverse of :meth:`rows` for one tensor: ``(k, M)`` to ``(*batch, k)``."""
        return g.view(g.shape[0], *self.permuted).permute(*(i + 1 for i in self.inverse), 0)


class _RowsLayout:
    """The batch of parameters given parameters first, ``(3K - 1, F, N)``: elements ``f N + n``."""

    def __init__(self, batch: tuple[int, ...], features: int) -> None:
        self.shape = (*batch, features)
        self.samples = math.prod(batch)
        self.features = features

    def flat(self, v: Tensor) -> Tensor:
        # Explicit sizes: an empty batch leaves a -1 ambiguous.
        return v.reshape(self.samples, self.features).T.reshape(-1)

    def unflat(self, t: Tensor) -> Tensor:
        return t.view(self.features, self.samples).T.view(self.shape)


class _Constants(NamedTuple):
    """The numbers the spline arithmetic uses (as tensors, see :mod:`flows.core.constants`:
    the spline does a few dozen operations with them per evaluation)."""

    matrix: Tensor  # (K + 1, K): bin probabilities to the learned part of the left knots
    offsets: Tensor  # (K + 1, 1): the rest of the left knots, and +inf
    floor: Tensor  # the smallest bin, 2 B slope
    span: Tensor  # what the learned parts of the bins share, 2 B (1 - K slope)
    minus_bound: Tensor
    shift: Tensor  # derivative_offset(slope)
    slope: Tensor
    zero: Tensor
    one: Tensor


@cached_constants
def _constants(bins: int, bound: float, slope: float) -> _Constants:
    r"""The constants of a spline; the knot map gives the left knots of the bins.

    Row :math:`k < K` of the map gives :math:`x_k = -B + k f + S (p_0 + \dots + p_{k-1})`,
    with :math:`p` the bin probabilities, :math:`f` the smallest bin and :math:`S = 2B - K f`;
    row :math:`K` is :math:`+\infty`, never below an input, which closes the bin search.
    """
    span, floor = _span_and_floor(bins, bound, slope)
    matrix = [[span * (i < k) for i in range(bins)] for k in range(bins + 1)]
    offsets = [[k * floor - bound] for k in range(bins)] + [[math.inf]]
    numbers = (matrix, offsets, floor, span, -bound, derivative_offset(slope), slope, 0.0, 1.0)
    # Numbers here: cached_constants hands out this named tuple with tensors in their place.
    return _Constants(*numbers)  # type: ignore[arg-type]


def _span_and_floor(bins: int, bound: float, slope: float) -> tuple[float, float]:
    return 2 * bound * (1 - bins * slope), 2 * bound * slope


def _reused(buffer: Tensor) -> Tensor | None:
    """``buffer`` as the ``out`` of an operation in eager mode; compiled code plans its own."""
    return None if torch.compiler.is_compiling() else buffer


def _spline_rows(
    v: Tensor, sizes: Tensor, inner: Tensor, bound: float, slope: float, inverse: bool
) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    r"""The spline (or its inverse) and its log-derivative on flat rows, and what backward needs.

    ``v`` has shape ``(M,)``, ``sizes`` the raw widths and heights ``(2, K, M)`` and ``inner``
    the raw interior knot derivatives ``(K - 1, M)``. With :math:`p_i` the softmax of the
    widths, :math:`S = 2B - Kf` the span beyond the smallest bins :math:`f`, and :math:`k`
    the bin of an element, its bin starts at :math:`x_k = -B + k f + S \sum_{i < k} p_i` and
    has the width :math:`w_k = f + S p_k`; likewise the heights, in the same operations.

    The bin is located by comparing the element with every knot of the searched row. The
    resulting masks, :math:`[i < k]` and :math:`[i = k]`, then select by sums over the bins
    rather than by gathers: on CPU a masked product and sum over a few rows is several times
    faster than a gather, and the boundary knot derivatives (those of a null raw value, 1)
    come out of the sums by themselves.
    """
    bins = sizes.shape[1]
    span, _ = _span_and_floor(bins, bound, slope)
    c = _constants(bins, bound, slope, like=v)
    p = torch.softmax(sizes, dim=1)  # (2, K, M)
    clamped = v.clamp(-bound, bound)
    inside = clamped == v
    if torch.is_autocast_enabled(v.device.type):  # the knots in v's dtype, not autocast's
        with torch.autocast(v.device.type, enabled=False):
            knots = torch.addmm(c.offsets, c.matrix, p[int(inverse)])
    else:
        knots = torch.addmm(c.offsets, c.matrix, p[int(inverse)])  # x_0 = -B, .., x_{K-1}, +inf
    # at_or_below[i] = [x_i <= v] = [i <= k], as 0. or 1.: rows 1.. say [i < k].
    at_or_below = knots.sub_(clamped).le_(c.zero)
    below = at_or_below[1:]
    onehot = at_or_below[:-1] - below  # [i = k]
    base = torch.addcmul(c.minus_bound, below.sum(dim=0), c.floor)  # x_k without S sum p_i
    # One scratch block for the masked products: fresh large blocks cost page faults.
    scratch = torch.mul(p, below)
    learned = scratch.sum(dim=1)  # sum_{i < k} p_i, of the widths and of the heights
    starts = torch.add(base, learned, alpha=span)  # (x_k, y_k)
    own = torch.mul(p, onehot, out=_reused(scratch)).sum(dim=1).mul_(c.span)  # S p_k
    lengths = own + c.floor  # (w_k, h_k)
    x0, y0 = starts.unbind(0)
    w, h = lengths.unbind(0)
    # Raw interior derivatives d_{k} (k >= 1) and d_{k+1} (k + 1 <= K - 1); the sums leave
    # the boundary ones at zero, whose positive derivative is 1.
    scratch = torch.mul(inner, onehot[1:])
    shifted = torch.stack(
        (scratch.sum(dim=0), torch.mul(inner, onehot[:-1], out=_reused(scratch)).sum(dim=0))
    ).add_(c.shift)
    knot_derivatives = F.softplus(shifted).add_(c.slope)
    d0, d1 = knot_derivatives.unbind(0)

    s = h / w
    curvature = torch.add(d0 + d1, s, alpha=-2.0)
    if inverse:
        # The relative position solves a xi^2 + b xi - s dy = 0, in the root form
        # xi = 2 s dy / (b + sqrt(b^2 + 4 a s dy)), which does not cancel catastrophically.
        dy = clamped - y0
        hd0, dyc = h * d0, dy * curvature
        a = torch.addcmul(dyc - hd0, h, s)
        b = hd0 - dyc
        sdy = s * dy
        discriminant = torch.addcmul(b * b, a, sdy, value=4.0)
        discriminant = discriminant.clamp(min=torch.finfo(clamped.dtype).tiny)
        xi = torch.addcdiv(c.zero, sdy, b + discriminant.sqrt(), value=2.0).clamp(0, 1)
        out = torch.addcmul(x0, xi, w)
        omx = torch.sub(c.one, xi)
        t = xi * omx
        xi2 = xi * xi
        denominator = torch.addcmul(s, curvature, t)
        ratio = dy / h
    else:
        xi = torch.sub(clamped, x0).div_(w).clamp_(0, 1)
        omx = torch.sub(c.one, xi)
        t = xi * omx
        xi2 = xi * xi
        denominator = torch.addcmul(s, curvature, t)
        ratio = torch.addcmul(d0 * t, s, xi2).div_(denominator)
        out = torch.addcmul(y0, h, ratio)
    # A sum of positive terms: no cancellation, even for extreme derivatives.
    numerator = torch.addcmul(torch.addcmul(d1 * xi2, s, t, value=2.0), d0, omx * omx)
    derivative = numerator * (s / denominator).square()
    ladj = derivative.log()
    if inverse:
        ladj = -ladj
    out = torch.where(inside, out, v)
    ladj = torch.where(inside, ladj, c.zero)
    saved = (
        below, onehot, p, learned, own, lengths, shifted, knot_derivatives, inside,
        s, xi, omx, t, xi2, ratio, derivative, numerator, denominator, curvature,
    )  # fmt: skip
    return out, ladj, saved


def _spline_rows_backward(
    saved: tuple[Tensor, ...],
    grad_out: Tensor,
    grad_ladj: Tensor,
    bound: float,
    slope: float,
    inverse: bool,
    parameters: bool,
    grad_rows: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    r"""The cotangents of ``v``, ``sizes`` and ``inner`` of :func:`_spline_rows`.

    With ``grad_rows`` of shape ``(3K - 1, M)``, the parameters' cotangents are written into
    it, widths, heights then derivatives, and returned as its views.

    In the relative position :math:`\xi`, the forward spline is :math:`y = y_k + h R` with
    :math:`R = (s \xi^2 + d_0 t) / D`, :math:`t = \xi (1 - \xi)`, :math:`D = s + c t`,
    :math:`c = d_0 + d_1 - 2 s`, and its log-derivative is :math:`L = \log (s^2 N / D^2)` with
    :math:`N = d_1 \xi^2 + 2 s t + d_0 (1 - \xi)^2`. The partial derivatives below are those
    of :math:`R` and :math:`L` in :math:`\xi, s, d_0, d_1`, grouped to share products.
    """
    (
        below, onehot, p, learned, own, lengths, shifted, knot_derivatives, inside,
        s, xi, omx, t, xi2, ratio, derivative, numerator, denominator, curvature,
    ) = saved  # fmt: skip
    bins = p.shape[1]
    span, _ = _span_and_floor(bins, bound, slope)
    c = _constants(bins, bound, slope, like=xi)
    w, h = lengths.unbind(0)
    d0, d1 = knot_derivatives.unbind(0)
    slope_change = omx - xi  # 1 - 2 xi
    inv_n, inv_d = numerator.reciprocal(), denominator.reciprocal()
    # dL/dxi / 2 = (d1 xi - d0 (1 - xi) + s (1 - 2 xi)) / N - c (1 - 2 xi) / D
    half_l_xi = torch.addcmul(d1 * xi, s, slope_change).addcmul_(d0, omx, value=-1.0)
    half_l_xi.mul_(inv_n).addcmul_(curvature * slope_change, inv_d, value=-1.0)
    if inverse:
        # The cotangents of x = f^-1(y) and -L(x) are those of (f(x), L(x)) at
        # ((gl L_xi / w - gx) / f'(x), -gl), by the implicit function theorem; the sign is
        # flipped after the gradient of v is taken.
        gy = torch.addcdiv(grad_out, grad_ladj * half_l_xi, w, value=-2.0).div_(derivative)
        grad_v = torch.where(inside, gy, grad_out)
        gy = torch.where(inside, gy, c.zero).neg_()
        gl = torch.where(inside, grad_ladj, c.zero).neg_()
    else:
        gy = torch.where(inside, grad_out, c.zero)
        gl = torch.where(inside, grad_ladj, c.zero)
    g_xi = torch.mul(gy, w).mul_(derivative).addcmul_(gl, half_l_xi, value=2.0)
    g_x = g_xi / w
    if not inverse:
        grad_v = torch.where(inside, g_x, grad_out)
    if not parameters:
        return grad_v, None, None
    ah = torch.mul(gy, h).mul_(inv_d)  # the cotangent of R, over D
    gl_n = gl * inv_n
    one_m2t = torch.addcmul(c.one, t, c.one, value=-2.0)
    # dR/ds = (xi^2 - R (1 - 2t)) / D, dL/ds = 2 (1/s + t/N - (1 - 2t)/D)
    g_s = torch.addcmul(xi2, ratio, one_m2t, value=-1.0).mul_(ah)
    half_l_s = s.reciprocal().addcmul_(t, inv_n).addcmul_(one_m2t, inv_d, value=-1.0)
    g_s.addcmul_(gl, half_l_s, value=2.0)
    # dR/dd1 = -R t / D, dL/dd1 = xi^2 / N - 2 t / D; d0 differs by t / D and (1 - 2 xi) / N.
    through_d = torch.mul(ah, ratio).addcmul_(gl, inv_d, value=2.0)
    g_d1 = torch.mul(gl_n, xi2).addcmul_(t, through_d, value=-1.0)
    g_d0 = torch.addcmul(g_d1, ah, t).addcmul_(gl_n, slope_change)

    # The softmax probability p_i of a width reaches the element through x_k (i < k) and
    # w_k (i = k), each with the factor span; likewise the heights. With g_i its
    # cotangent, the raw width's is p_i (g_i - sum_j p_j g_j), where the sum is
    # g(x_k) S sum_{i<k} p_i + g(w_k) S p_k.
    g_starts = torch.stack((-g_x, gy))
    g_s_w = g_s / w
    g_lengths = torch.stack(
        (torch.mul(g_x, xi).addcmul_(g_s_w, s).neg_(), torch.addcmul(g_s_w, gy, ratio))
    )
    g_own = g_lengths * own
    minus_mean = torch.addcmul(g_own, g_starts, learned, value=span).neg_()
    g_sizes_out = None if grad_rows is None else grad_rows[: 2 * bins].view(p.shape)
    g_inner_out = None if grad_rows is None else grad_rows[2 * bins :]
    g_sizes = torch.addcmul(
        minus_mean.unsqueeze(1), below, g_starts.unsqueeze(1), value=span, out=g_sizes_out
    )
    g_sizes.mul_(p).addcmul_(onehot, g_own.unsqueeze(1))
    # Interior knot derivatives, through the softplus; the boundary ones are constants.
    g_knots = torch.stack((g_d0, g_d1)).mul_(torch.sigmoid(shifted))
    g_inner = torch.mul(onehot[1:], g_knots[0], out=g_inner_out)
    g_inner.addcmul_(onehot[:-1], g_knots[1])
    return grad_v, g_sizes, g_inner


def _evaluate_views(
    v: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float,
    slope: float,
    inverse: bool,
) -> tuple[Tensor, Tensor, _BatchLayout, tuple[Tensor, ...]]:
    """:func:`_spline_rows` on parameters of any broadcastable batch, in their memory order."""
    layout = _BatchLayout(v, widths, heights, derivatives)
    out, ladj, saved = _spline_rows(
        layout.flat(v),
        layout.rows(widths, heights),
        layout.rows(derivatives)[0],
        bound,
        slope,
        inverse,
    )
    return layout.unflat(out), layout.unflat(ladj), layout, saved


def _evaluate_rows(
    v: Tensor, rows: Tensor, bound: float, slope: float, inverse: bool
) -> tuple[Tensor, Tensor, _RowsLayout, tuple[Tensor, ...]]:
    """:func:`_spline_rows` on parameters given parameters first, ``rows (3K - 1, F, N)``."""
    bins = (rows.shape[0] + 1) // 3
    layout = _RowsLayout(v.shape[:-1], rows.shape[1])
    flat = rows.flatten(1)
    out, ladj, saved = _spline_rows(
        layout.flat(v),
        flat[: 2 * bins].unflatten(0, (2, bins)),
        flat[2 * bins :],
        bound,
        slope,
        inverse,
    )
    return layout.unflat(out), layout.unflat(ladj), layout, saved


if TYPE_CHECKING:
    from torch.autograd.function import BackwardCFunction

    class _RQSContext(BackwardCFunction):
        """The ``ctx`` of :class:`_RQSFunction` (made by autograd): what backward reads."""

        bound: float
        slope: float
        inverse: bool
        layout: _BatchLayout | _RowsLayout
        shapes: list[torch.Size]


class _RQSFunction(torch.autograd.Function):
    """The monotonic RQS (or its inverse) and its log-derivative, with a closed-form backward.

    The parameters are either the widths, heights and derivatives, of any batch that
    broadcasts with ``v``, or one block ``(3K - 1, F, N)`` laid out parameters first, whose
    gradient is then written in one piece.
    """

    @staticmethod
    def forward(
        ctx: _RQSContext,
        v: Tensor,
        bound: float,
        slope: float,
        inverse: bool,
        *params: Tensor,
    ) -> tuple[Tensor, Tensor]:
        layout: _BatchLayout | _RowsLayout
        if len(params) == 1:
            out, ladj, layout, saved = _evaluate_rows(v, params[0], bound, slope, inverse)
        else:
            widths, heights, derivatives = params
            out, ladj, layout, saved = _evaluate_views(
                v, widths, heights, derivatives, bound, slope, inverse
            )
        ctx.save_for_backward(v, *params, *saved)
        ctx.bound, ctx.slope, ctx.inverse, ctx.layout = bound, slope, inverse, layout
        ctx.shapes = [v.shape] + [p.shape for p in params]
        return out, ladj

    @staticmethod
    def backward(
        ctx: _RQSContext, grad_out: Tensor, grad_ladj: Tensor
    ) -> tuple[Tensor | None, ...]:
        shapes = ctx.shapes
        inputs = ctx.saved_tensors[: len(shapes)]
        needed = [ctx.needs_input_grad[0], *ctx.needs_input_grad[4:]]
        if torch.is_grad_enabled():
            # create_graph=True: the closed form is first order only; differentiate the plain
            # algebra instead, which autograd can differentiate again.
            plain = plain_monotonic_rqs_rows if len(inputs) == 2 else plain_monotonic_rqs
            grads = _plain_grads(plain, inputs, needed, grad_out, grad_ladj, ctx)
            return grads[0], None, None, None, *grads[1:]
        layout = ctx.layout
        packed = len(inputs) == 2
        grad_rows = None
        if packed and needed[1] and not torch.compiler.is_compiling():
            # Written in place by the backward: the block's gradient without a concatenation.
            grad_rows = inputs[1].new_empty(shapes[1][0], math.prod(shapes[1][1:]))
        grad_v, g_sizes, g_inner = _spline_rows_backward(
            ctx.saved_tensors[len(shapes) :],
            layout.flat(grad_out),
            layout.flat(grad_ladj),
            ctx.bound,
            ctx.slope,
            ctx.inverse,
            any(needed[1:]),
            grad_rows,
        )
        grad_v = layout.unflat(grad_v).sum_to_size(shapes[0])
        if g_sizes is None or g_inner is None:
            return grad_v, None, None, None, *(None,) * (len(shapes) - 1)
        if packed:
            if grad_rows is None:  # compiled: the compiler fuses the concatenation
                grad_rows = torch.cat((g_sizes.flatten(0, 1), g_inner))
            return grad_v, None, None, None, grad_rows.view(shapes[1])
        assert isinstance(layout, _BatchLayout)  # the views' layout, as forward chose
        grads = [
            layout.unflat_rows(g).sum_to_size(shape)
            for g, shape in zip((g_sizes[0], g_sizes[1], g_inner), shapes[1:], strict=True)
        ]
        return grad_v, None, None, None, *grads


def _plain_grads(
    plain: Callable[..., tuple[Tensor, Tensor]],
    inputs: tuple[Tensor, ...],
    needed: list[bool],
    grad_out: Tensor,
    grad_ladj: Tensor,
    ctx: _RQSContext,
) -> list[Tensor | None]:
    """The gradients of ``inputs`` by autograd through the plain algebra ``plain``."""
    wanted = [i for i, need in enumerate(needed) if need]
    outputs = plain(*inputs, ctx.bound, ctx.slope, ctx.inverse)
    grads = torch.autograd.grad(
        outputs,
        [inputs[i] for i in wanted],
        (grad_out, grad_ladj),
        create_graph=True,
        allow_unused=True,
    )
    result: list[Tensor | None] = [None] * len(inputs)
    for i, grad in zip(wanted, grads, strict=True):
        result[i] = grad
    return result


# The door to the fused formulation.


def monotonic_rqs(
    v: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float,
    slope: float,
    inverse: bool,
) -> tuple[Tensor, Tensor]:
    """The spline or its inverse and its log-derivative, as :func:`plain_monotonic_rqs`.

    One autograd node when a gradient is needed, else none.
    """
    # Compiled, autograd differentiates the fast algebra itself and the compiler fuses forward
    # and backward: traced, the hand-written backward compiled into slower code (measured;
    # so did a custom operator running the eager kernels, which is why there is none).
    if (
        torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and (
            v.requires_grad
            or widths.requires_grad
            or heights.requires_grad
            or derivatives.requires_grad
        )
    ):
        return _RQSFunction.apply(v, bound, slope, inverse, widths, heights, derivatives)
    return _evaluate_views(v, widths, heights, derivatives, bound, slope, inverse)[:2]


def monotonic_rqs_rows(
    v: Tensor, rows: Tensor, bound: float, slope: float, inverse: bool
) -> tuple[Tensor, Tensor]:
    """:func:`monotonic_rqs` with the parameters given parameters first.

    ``rows`` has shape ``(3K - 1, F, N)`` and ``v`` the shape ``(*batch, F)``, ``N`` the
    number of elements of ``batch``; the gradient of ``rows`` comes in one piece.
    """
    if (
        torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and (v.requires_grad or rows.requires_grad)
    ):
        return _RQSFunction.apply(v, bound, slope, inverse, rows)
    return _evaluate_rows(v, rows, bound, slope, inverse)[:2]
