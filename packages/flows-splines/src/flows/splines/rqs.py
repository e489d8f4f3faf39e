r"""The monotonic rational-quadratic spline (RQS) transform of neural spline flows.

The spline maps :math:`[-B, B]` onto itself through :math:`K` bins whose widths, heights and
knot derivatives are learned. Each bin :math:`k` is a ratio of quadratics in the relative
position :math:`\xi = (x - x_k) / w_k \in [0, 1]`. With :math:`s_k = h_k / w_k`,

.. math:: y = y_k + h_k \frac{s_k \xi^2 + d_k \xi (1 - \xi)}
    {s_k + (d_k + d_{k+1} - 2 s_k) \xi (1 - \xi)}

whose inverse is the root of a quadratic, in closed form. Outside :math:`[-B, B]` the transform
is the identity; the boundary derivatives are 1, so the joint is smooth.

The helpers in this module (knots, bin search, forward and inverse evaluation) are shared with
the circular spline of :mod:`flows.splines.circular`. :class:`MonotonicRQSTransform` evaluates
through a single autograd node with a closed-form first-order backward (double backward
differentiates the plain helpers instead).
"""

from __future__ import annotations

__all__ = ["MonotonicRQSTransform"]

import functools
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


# The fast path of MonotonicRQSTransform: one autograd node per spline evaluation, computed
# from the raw parameters, and a hand-derived backward. Autograd through the generic helpers
# above records about a hundred nodes per call and saves every intermediate; on batches of a
# few thousand elements the per-node overhead, not the arithmetic, sets the time. Per-bin work
# (softmax, knots by one small matrix product, the search mask) runs bins first, on rows of
# the batch, where the kernels vectorize; the spline algebra runs on each element's bin only.


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
            order = sorted(dims, key=lambda i: -widths.stride(i))
        else:
            order = list(dims)
        self.shape = shape
        self.order = order
        self.inverse = sorted(dims, key=order.__getitem__)
        self.permuted = [shape[i] for i in order]
        self.elements = math.prod(shape)

    def rows(self, p: Tensor) -> Tensor:
        """``p`` of shape ``(*, k)``, broadcast, bins first and flattened: ``(k, M)``."""
        if p.shape[:-1] != self.shape:
            p = p.expand(*self.shape, p.shape[-1])
        return p.permute(-1, *self.order).reshape(p.shape[-1], self.elements)

    def flat(self, v: Tensor) -> Tensor:
        """``v`` broadcast to the batch, flattened in the walking order: ``(M,)``."""
        return v.expand(self.shape).permute(self.order).reshape(-1)

    def unflat(self, t: Tensor) -> Tensor:
        """The inverse of :meth:`flat`."""
        return t.view(self.permuted).permute(self.inverse)

    def unflat_rows(self, g: Tensor) -> Tensor:
        """The inverse of :meth:`rows`: ``(k, M)`` to ``(*batch, k)``."""
        return g.view(g.shape[0], *self.permuted).permute(*(i + 1 for i in self.inverse), 0)


@functools.lru_cache(maxsize=64)
def _knot_map(
    bins: int, bound: float, slope: float, dtype: torch.dtype, device: torch.device
) -> tuple[Tensor, Tensor]:
    r"""The matrix and offsets that map bin probabilities to the right knots of the bins.

    Row :math:`k` gives :math:`x_{k+1} = -B + (k + 1) f + S (p_0 + \dots + p_k)`, with
    :math:`f` the smallest bin and :math:`S = 2B - K f`; the last row's offset is
    :math:`+\infty`, never below an input, which closes the bin search.
    """
    span, floor = 2 * bound * (1 - bins * slope), 2 * bound * slope
    matrix = [[span * (i <= k) for i in range(bins)] for k in range(bins)]
    offsets = [[(k + 1) * floor - bound] for k in range(bins - 1)] + [[math.inf]]
    return (
        torch.tensor(matrix, dtype=dtype, device=device),
        torch.tensor(offsets, dtype=dtype, device=device),
    )


def _evaluate(
    v: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float,
    slope: float,
    inverse: bool,
) -> tuple[Tensor, Tensor, _BatchLayout, tuple[Tensor, ...]]:
    r"""The spline (or its inverse) at ``v`` with its log-derivative, and what the backward needs.

    With :math:`p_i` the softmax of the widths, :math:`S = 2B - Kf` the span beyond the
    smallest bins :math:`f`, and :math:`k` the bin of an element, its bin starts at
    :math:`x_k = -B + k f + S \sum_{i < k} p_i` and has the width :math:`w_k = f + S p_k`;
    likewise the heights. Boundary knot derivatives are those of a null raw value, 1.
    """
    bins = widths.shape[-1]
    span, floor = 2 * bound * (1 - bins * slope), 2 * bound * slope
    layout = _BatchLayout(v, widths, heights, derivatives)
    p_w = torch.softmax(layout.rows(widths), dim=0)  # (K, M)
    p_h = torch.softmax(layout.rows(heights), dim=0)
    raw_inner = layout.rows(derivatives)  # (K - 1, M)

    v = layout.flat(v)
    inside = v.abs() <= bound
    clamped = v.clamp(-bound, bound)
    build = _knot_map.__wrapped__ if torch.compiler.is_compiling() else _knot_map
    matrix, offsets = build(bins, bound, slope, clamped.dtype, clamped.device)
    knots_w = torch.addmm(offsets, matrix, p_w)  # x_1 .. x_{K-1}, +inf
    knots_h = torch.addmm(offsets, matrix, p_h)
    # below[i] = [i < k] = [knot i + 1 <= v] of the searched row, as 0. or 1.: the bin index
    # is its sum, and the backward reuses it as the mask of the bins left of each element's.
    below = torch.sub(knots_h if inverse else knots_w, clamped).le_(0)
    index = below.sum(dim=0).long()
    column = index.unsqueeze(0)
    left = (index - 1).clamp_(min=0).unsqueeze(0)
    first = index == 0
    x0 = torch.gather(knots_w, 0, left).squeeze(0).masked_fill_(first, -bound)
    y0 = torch.gather(knots_h, 0, left).squeeze(0).masked_fill_(first, -bound)
    w = torch.gather(p_w, 0, column).squeeze(0).mul_(span).add_(floor)
    h = torch.gather(p_h, 0, column).squeeze(0).mul_(span).add_(floor)
    # Interior knot derivatives d_1 .. d_{K-1}; the boundary ones (k = 0, K) are raw zeros.
    at = torch.stack((index - 1, index)).clamp_(0, max(bins - 2, 0))
    edge = torch.stack((first, index == bins - 1))
    if bins > 1:
        raw_derivatives = torch.gather(raw_inner, 0, at).masked_fill_(edge, 0.0)
    else:  # a single bin has only the boundary knots
        raw_derivatives = clamped.new_zeros(2, clamped.shape[0])
    knot_derivatives = F.softplus(raw_derivatives + derivative_offset(slope)) + slope
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
        xi = (2 * sdy / (b + discriminant.sqrt())).clamp(0, 1)
        out = torch.addcmul(x0, xi, w)
        omx = 1 - xi
        t = xi * omx
        xi2 = xi * xi
        denominator = torch.addcmul(s, curvature, t)
        ratio = dy / h
    else:
        xi = ((clamped - x0) / w).clamp(0, 1)
        omx = 1 - xi
        t = xi * omx
        xi2 = xi * xi
        denominator = torch.addcmul(s, curvature, t)
        ratio = torch.addcmul(d0 * t, s, xi2) / denominator
        out = torch.addcmul(y0, h, ratio)
    numerator = torch.addcmul(torch.addcmul(d1 * xi2, s, t, value=2.0), d0, omx * omx)
    derivative = numerator * (s / denominator).square()
    ladj = derivative.log()
    if inverse:
        ladj = -ladj
    out = layout.unflat(torch.where(inside, out, v))
    ladj = layout.unflat(torch.where(inside, ladj, 0.0))
    saved = (
        index, below, p_w, p_h, x0, y0, at, edge, raw_derivatives, knot_derivatives, inside,
        w, h, s, xi, omx, t, xi2, ratio, derivative, numerator, denominator, curvature,
    )  # fmt: skip
    return out, ladj, layout, saved


def _monotonic_knots(
    widths: Tensor, heights: Tensor, derivatives: Tensor, bound: float, slope: float
) -> Tensor:
    """The bin rows of :func:`spline_knots` from raw parameters, boundary derivatives 1."""
    derivatives = bins_first_derivatives(derivatives, slope)
    derivatives = F.pad(derivatives, (0,) * (2 * derivatives.dim() - 2) + (1, 1), value=1.0)
    return spline_knots(widths, heights, derivatives, bound, slope)


def _plain_rqs(
    v: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float,
    slope: float,
    inverse: bool,
) -> tuple[Tensor, Tensor]:
    """The spline by the generic helpers above, every step recorded by autograd (any order)."""
    knots = _monotonic_knots(widths, heights, derivatives, bound, slope)
    inside = v.abs() <= bound
    out, ladj = (spline_inverse if inverse else spline_forward)(knots, v.clamp(-bound, bound))
    return torch.where(inside, out, v), torch.where(inside, ladj, 0.0)


class _RQSFunction(torch.autograd.Function):
    """The monotonic RQS (or its inverse) and its log-derivative, with a closed-form backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        v: Tensor,
        widths: Tensor,
        heights: Tensor,
        derivatives: Tensor,
        bound: float,
        slope: float,
        inverse: bool,
    ) -> tuple[Tensor, Tensor]:
        out, ladj, layout, saved = _evaluate(
            v, widths, heights, derivatives, bound, slope, inverse
        )
        ctx.save_for_backward(v, widths, heights, derivatives, *saved)
        ctx.bound, ctx.slope, ctx.inverse, ctx.layout = bound, slope, inverse, layout
        ctx.shapes = (v.shape, widths.shape, heights.shape, derivatives.shape)
        return out, ladj

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor, grad_ladj: Tensor
    ) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            # create_graph=True: the closed form below is first order only; differentiate the
            # plain algebra instead, which autograd can differentiate again.
            return _plain_backward(ctx, grad_out, grad_ladj)
        (
            _v, _widths, _heights, _derivatives,
            index, below, p_w, p_h, x0, y0, at, edge, raw_derivatives, knot_derivatives, inside,
            w, h, s, xi, omx, t, xi2, ratio, derivative, numerator, denominator, curvature,
        ) = ctx.saved_tensors  # fmt: skip
        bound, slope, inverse, layout = ctx.bound, ctx.slope, ctx.inverse, ctx.layout
        grad_out = layout.flat(grad_out)
        grad_ladj = layout.flat(grad_ladj)
        d0, d1 = knot_derivatives.unbind(0)
        slope_change = omx - xi  # 1 - 2 xi
        # Partial derivatives of the log-derivative L = log(s^2 N / D^2) of the forward
        # spline, with N the numerator and D the denominator, in the relative position xi.
        inv_n, inv_d = 1 / numerator, 1 / denominator
        n_xi = 2 * (d1 * xi + s * slope_change - d0 * omx)
        l_xi = n_xi * inv_n - 2 * curvature * slope_change * inv_d
        if inverse:
            # The cotangents of x = f^-1(y) and -L(x) are those of (f(x), L(x)) at
            # ((gl L_x - gx) / f'(x), -gl), by the implicit function theorem.
            gy = (grad_ladj * l_xi / w - grad_out) / derivative
            gl = -grad_ladj
            grad_v = torch.where(inside, -gy, grad_out)
        else:
            gy, gl = grad_out, grad_ladj
        gy = torch.where(inside, gy, 0.0)
        gl = torch.where(inside, gl, 0.0)
        # The cotangents of xi, s, d_k and d_{k+1}.
        g_xi = gy * w * derivative + gl * l_xi
        ah = gy * h * inv_d
        gl_n, gl_d = gl * inv_n, 2 * gl * inv_d
        one_m2t = 1 - 2 * t
        g_s = ah * (xi2 - ratio * one_m2t) + 2 * gl / s + 2 * t * gl_n - gl_d * one_m2t
        g_d1 = gl_n * xi2 - (ah * ratio + gl_d) * t
        g_d0 = g_d1 + ah * t + gl_n * slope_change
        g_x = g_xi / w
        if not inverse:
            grad_v = torch.where(inside, g_x, grad_out)
        grad_v = layout.unflat(grad_v).sum_to_size(ctx.shapes[0])
        if not any(ctx.needs_input_grad[1:4]):
            return grad_v, None, None, None, None, None, None

        # The softmax probability p_i of a width reaches the element through x_k (i < k) and
        # w_k (i = k), each with the factor span; likewise the heights. With g_i its
        # cotangent, the raw width's is p_i (g_i - sum_j p_j g_j), where the sum is
        # g(x_k) S sum_{i<k} p_i + g(w_k) S p_k = g(x_k) (x_k - x_k^0) + g(w_k) (w_k - f).
        bins = p_w.shape[0]
        span, floor = 2 * bound * (1 - bins * slope), 2 * bound * slope
        column = index.unsqueeze(0)
        start = index.to(s.dtype) * floor - bound
        grads = []
        for p, start_k, length_k, g_start, g_length in (
            (p_w, x0, w, -g_x, -(g_xi * xi + g_s * s) / w),
            (p_h, y0, h, gy, torch.addcmul(g_s / w, gy, ratio)),
        ):
            g_own = g_length * (length_k - floor)
            mean = torch.addcmul(g_own, g_start, start_k - start)  # sum_j p_j g_j
            g = p * torch.addcmul(-mean, below, g_start, value=span)
            grads.append(g.scatter_add_(0, column, g_own.unsqueeze(0)))
        # Interior knot derivatives; the boundary ones are constants.
        g_knots = torch.stack((g_d0, g_d1))
        g_knots = g_knots * torch.sigmoid(raw_derivatives + derivative_offset(slope))
        g_knots = g_knots.masked_fill_(edge, 0.0)
        g_inner = g_knots.new_zeros(bins - 1, index.shape[0])
        grads.append(g_inner.scatter_add_(0, at, g_knots) if bins > 1 else g_inner)
        grads = [
            layout.unflat_rows(g).sum_to_size(shape)
            for g, shape in zip(grads, ctx.shapes[1:], strict=True)
        ]
        return grad_v, *grads, None, None, None


def _plain_backward(
    ctx: torch.autograd.function.FunctionCtx, grad_out: Tensor, grad_ladj: Tensor
) -> tuple[Tensor | None, ...]:
    """The backward of :class:`_RQSFunction` by autograd through :func:`_plain_rqs`."""
    inputs = ctx.saved_tensors[:4]
    wanted = [i for i, needed in enumerate(ctx.needs_input_grad[:4]) if needed]
    outputs = _plain_rqs(*inputs, ctx.bound, ctx.slope, ctx.inverse)
    grads = torch.autograd.grad(
        outputs,
        [inputs[i] for i in wanted],
        (grad_out, grad_ladj),
        create_graph=True,
        allow_unused=True,
    )
    result: list[Tensor | None] = [None] * 7
    for i, grad in zip(wanted, grads, strict=True):
        result[i] = grad
    return tuple(result)


def _rqs(
    v: Tensor,
    widths: Tensor,
    heights: Tensor,
    derivatives: Tensor,
    bound: float,
    slope: float,
    inverse: bool,
) -> tuple[Tensor, Tensor]:
    """The spline or its inverse; one autograd node when a gradient is needed, else none."""
    if torch.is_grad_enabled() and any(p.requires_grad for p in (v, widths, heights, derivatives)):
        return _RQSFunction.apply(v, widths, heights, derivatives, bound, slope, inverse)
    return _evaluate(v, widths, heights, derivatives, bound, slope, inverse)[:2]


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
            self._knots = _monotonic_knots(*self._raw, self.bound, self.slope)
        return self._knots

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return _rqs(x, *self._raw, self.bound, self.slope, False)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return _rqs(y, *self._raw, self.bound, self.slope, True)

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        return self.inverse_and_ladj(y)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bins={self.bins}, bound={self.bound:g})"
