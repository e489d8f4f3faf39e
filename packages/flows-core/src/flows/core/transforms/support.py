r"""The bijection from the real line onto a support: an interval, a half-line or the line itself.

:class:`SupportTransform` maps each element :math:`y \in \mathbb{R}` onto its own
:math:`(a, b)`, by the kind of its bounds:

* an interval, :math:`x = a + (b - a) \, \sigma(\kappa y)` (affine sigmoid), with the gain
  :math:`\kappa = \pi / \sqrt{3}` (:data:`INTERVAL_GAIN`), and with :math:`s(t)` the softplus,
  :math:`\log |dx/dy| = \log((b - a) \kappa) - s(\kappa y) - s(-\kappa y)`;
* a lower bound (:math:`b = \infty`), :math:`x = a + \operatorname{softplus}(y)`,
  :math:`\log |dx/dy| = -\operatorname{softplus}(-y)`;
* an upper bound (:math:`a = -\infty`), :math:`x = b - \operatorname{softplus}(-y)`,
  :math:`\log |dx/dy| = -\operatorname{softplus}(y)`;
* none, :math:`x = y`.

Every log-sigmoid is a softplus and every inverse a difference of logarithms of distances to
the bounds, so nothing takes the logarithm of a rounded zero: values and gradients stay finite
in float32 up to the edges. Each output is clamped into the open support (see
:meth:`SupportTransform.open_bounds`), so a sample never lands on a bound, where the density is
not defined.

The gain makes the uniform distribution on :math:`(a, b)` the image of a logistic distribution of
unit variance (:math:`\pi / \sqrt{3}` is the standard logistic's deviation): a flow whose base is
:math:`\mathcal{N}(0, I)` starts close to uniform on the interval, and a spline's interval
:math:`[-5, 5]` reaches within :math:`\sigma(-5 \kappa) \approx 10^{-4}` of its width from either
edge, where without the gain 0.7% of it lay beyond, on layers that are the identity there.
"""

from __future__ import annotations

__all__ = ["INTERVAL_GAIN", "KINDS", "SupportTransform", "kind_groups", "kind_of"]

import math
from collections.abc import Callable, Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.distributions import constraints

from flows.core.transforms.base import UnivariateTransform

Bound = float | Sequence[float] | Tensor
_OneKind = Callable[[str, Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]

#: The kinds of a support, each computed alone; "mixed" holds several, one per feature.
KINDS = ("interval", "lower", "upper", "real", "mixed")

#: The gain :math:`\kappa` of the interval's sigmoid, :math:`\pi / \sqrt{3}`: a uniform
#: variable on the interval maps back to a variable of unit variance.
INTERVAL_GAIN = math.pi / math.sqrt(3.0)
_LOG_GAIN = math.log(INTERVAL_GAIN)


def kind_of(low: float | Sequence[float], high: float | Sequence[float]) -> str:
    """The kind of the bounds: ``"interval"``, ``"lower"``, ``"upper"``, ``"real"`` when every
    feature has it, else ``"mixed"``.

    Example:
        >>> kind_of(0.0, 1.0), kind_of([0.0, 0.0], [1.0, float("inf")])
        ('interval', 'mixed')
    """
    lows = [low] if isinstance(low, (int, float)) else list(low)
    highs = [high] if isinstance(high, (int, float)) else list(high)
    lows, highs = (
        lows * (len(highs) if len(lows) == 1 else 1),
        highs * (len(lows) if len(highs) == 1 else 1),
    )
    kinds = {KINDS[2 * math.isinf(a) + math.isinf(b)] for a, b in zip(lows, highs, strict=True)}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def kind_groups(
    low: Sequence[float], high: Sequence[float]
) -> tuple[list[tuple[str, list[int]]], list[int]]:
    """The features of each kind, ``[(kind, indices), ...]``, and the permutation ``order``
    that puts their concatenation back in the features' order.

    Example:
        >>> inf = float("inf")
        >>> kind_groups([0.0, -inf, 0.0], [1.0, inf, inf])
        ([('interval', [0]), ('lower', [2]), ('real', [1])], [0, 2, 1])
    """
    kinds = [kind_of(a, b) for a, b in zip(low, high, strict=True)]
    groups = [(k, [i for i, kind in enumerate(kinds) if kind == k]) for k in KINDS]
    groups = [(k, indices) for k, indices in groups if indices]
    concatenated = [i for _, indices in groups for i in indices]
    order = sorted(range(len(concatenated)), key=concatenated.__getitem__)
    return groups, order


def _bound(name: str, value: Bound) -> float | Tensor:
    if isinstance(value, Tensor):
        if not value.is_floating_point():
            value = value.double()
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float, Sequence)):
        raise TypeError(f"{name} must be a float, a sequence of floats or a tensor, got {value!r}")
    if isinstance(value, Sequence):
        return torch.tensor([float(v) for v in value], dtype=torch.float64)
    return float(value)


class SupportTransform(UnivariateTransform):
    r"""The element-wise bijection from the real line onto :math:`(a, b)`.

    The bounds broadcast against the input's rightmost dimensions; :math:`-\infty` (or
    :math:`\infty`) leaves a side unbounded. Its inverse is defined inside the support only:
    a point on or outside a bound gives infinite or NaN values, which
    :func:`flows.core.support.restrict` turns into a log-density of :math:`-\infty`.

    Arguments:
        low: The lower bounds :math:`a`, a float or one per feature.
        high: The upper bounds :math:`b > a`, a float or one per feature.
        kind: The kind every feature has (see :data:`KINDS`), so that only its map is
            computed; by default, found from float bounds, and ``"mixed"`` for tensors (whose
            values are not read on the host). A wrong kind gives wrong values.
        groups: For a ``"mixed"`` kind, the features of each kind, ``(kind, index)``
            pairs (see :func:`kind_groups`), so that each map is computed on its features
            alone; by default, every map on every feature, masked.
        order: With ``groups``, the permutation that puts their concatenation back in the
            features' order.

    Example:
        >>> inf = float("inf")
        >>> t = SupportTransform([0.0, 0.0, -inf], [1.0, inf, inf])
        >>> x, ladj = t.call_and_ladj(torch.tensor([0.0, 0.0, 0.5]))
        >>> x, ladj
        (tensor([0.5000, 0.6931, 0.5000]), tensor([-0.7909, -0.6931,  0.0000]))
        >>> t.inv(x)
        tensor([0.0000, 0.0000, 0.5000])
        >>> t(torch.tensor([100.0, -200.0, 0.0])) < torch.tensor([1.0, 1.0, 1.0])
        tensor([True, True, True])
    """

    def __init__(
        self,
        low: Bound,
        high: Bound,
        kind: str | None = None,
        groups: Sequence[tuple[str, Tensor]] | None = None,
        order: Tensor | None = None,
    ) -> None:
        super().__init__()
        if kind is None:
            plain = not isinstance(low, Tensor) and not isinstance(high, Tensor)
            kind = kind_of(low, high) if plain else "mixed"  # type: ignore[arg-type]
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        self.low = _bound("low", low)
        self.high = _bound("high", high)
        self.kind = kind
        if (groups is None) != (order is None):
            raise ValueError("groups and order must be given together")
        self.groups = None if groups is None else list(groups)
        self.order = order

    @constraints.dependent_property(is_discrete=False)
    def codomain(self) -> constraints.Constraint:
        return constraints.interval(self.low, self.high)

    def bounds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        """The bounds ``(a, b)`` as tensors of ``like``'s dtype and device."""
        low = torch.as_tensor(self.low, dtype=like.dtype, device=like.device)
        high = torch.as_tensor(self.high, dtype=like.dtype, device=like.device)
        return low, high

    def interior(self, like: Tensor) -> Tensor:
        """A point inside each pair of bounds: the midpoint of an interval, 1 away from a
        half-line's bound, 0 on the line; of ``like``'s dtype and device."""
        low, high = self.bounds(like)
        if self.kind == "interval":
            return torch.lerp(low, high, 0.5)
        if self.kind == "lower":
            return low + 1
        if self.kind == "upper":
            return high - 1
        if self.kind == "real":
            return torch.zeros_like(low)
        lower, upper = torch.isfinite(low), torch.isfinite(high)
        a = torch.where(lower, low, torch.zeros_like(low))
        b = torch.where(upper, high, torch.zeros_like(high))
        return torch.where(
            lower & upper, a / 2 + b / 2, torch.where(lower, a + 1, torch.where(upper, b - 1, a))
        )

    def _kinds(self, like: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
        """The masks of the interval, lower and upper kinds, and finite stand-ins for the
        bounds (so that the branches not taken stay finite, and so do their gradients)."""
        low, high = self.bounds(like)
        lower, upper = torch.isfinite(low), torch.isfinite(high)
        interval = lower & upper
        a = torch.where(lower, low, torch.zeros_like(low))
        b = torch.where(upper, high, torch.zeros_like(high))
        width = torch.where(interval, b - a, torch.ones_like(b))
        return interval, lower & ~upper, upper & ~lower, a, b, width

    def open_bounds(self, like: Tensor) -> tuple[Tensor, Tensor]:
        r"""The closest floats of ``like``'s dtype inside the support: every output lies in
        between. A finite bound is moved inward by one float, and at least by the square root
        of the smallest normal float (1e-19 in float32, 1e-154 in float64): a log-density's
        gradient grows as the inverse of the distance to the bound, and stays finite there,
        while the mass cut off, beyond a logit of -44 in float32, is nil. An infinite bound
        becomes the largest float."""
        low, high = self.bounds(like)
        margin = math.sqrt(torch.finfo(like.dtype).tiny)
        inner_low = torch.maximum(torch.nextafter(low, high), low + margin)
        inner_high = torch.minimum(torch.nextafter(high, low), high - margin)
        return inner_low, inner_high

    def call_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind != "mixed":
            x, ladj = _call_one_kind(self.kind, y, *self.bounds(y))
        elif self.groups is not None:
            x, ladj = self._grouped(_call_one_kind, y)
        else:
            x, ladj = self._call_mixed(y)
        inner_low, inner_high = self.open_bounds(y)
        return torch.clamp(x, inner_low, inner_high), ladj

    def _grouped(self, one_kind: _OneKind, v: Tensor) -> tuple[Tensor, Tensor]:
        """``one_kind`` on each group of features of one kind, put back in the features' order."""
        low, high = self.bounds(v)
        low, high = low.expand(v.shape[-1:]), high.expand(v.shape[-1:])
        values, ladjs = [], []
        for kind, index in self.groups or ():
            value, ladj = one_kind(
                kind,
                v.index_select(-1, index),
                low.index_select(-1, index),
                high.index_select(-1, index),
            )
            values.append(value)
            ladjs.append(ladj)
        order = cast(Tensor, self.order)  # given with the groups
        return torch.cat(values, -1).index_select(-1, order), torch.cat(ladjs, -1).index_select(
            -1, order
        )

    def _call_mixed(self, y: Tensor) -> tuple[Tensor, Tensor]:
        interval, lower, upper, a, b, width = self._kinds(y)
        up, down = F.softplus(y), F.softplus(-y)
        # The interval's sigmoid takes the gained input; the half-lines' softplus the plain one.
        ky = _gained(y)
        k_up, k_down = F.softplus(ky), F.softplus(-ky)
        # sigma(ky) = exp(-softplus(-ky)); from the nearer bound, so that the distance to it
        # keeps its relative precision in float32.
        near_low = a + width * torch.exp(-k_down)
        near_high = b - width * torch.exp(-k_up)
        x = torch.where(
            interval,
            torch.where(y < 0, near_low, near_high),
            torch.where(lower, a + up, torch.where(upper, b - down, y)),
        )
        ladj = torch.where(
            interval,
            torch.log(width) + _LOG_GAIN - k_up - k_down,
            torch.where(lower, -down, torch.where(upper, -up, torch.zeros_like(y))),
        )
        return x, ladj

    def inverse_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.kind != "mixed":
            return _inverse_one_kind(self.kind, x, *self.bounds(x))
        if self.groups is not None:
            return self._grouped(_inverse_one_kind, x)
        return self._inverse_mixed(x)

    def _inverse_mixed(self, x: Tensor) -> tuple[Tensor, Tensor]:
        interval, lower, upper, a, b, width = self._kinds(x)
        # The distances to the bounds, each 1 where its kind does not use it (finite branches).
        from_low = torch.where(interval | lower, x - a, torch.ones_like(x))
        to_high = torch.where(interval | upper, b - x, torch.ones_like(x))
        log_low, log_high = torch.log(from_low), torch.log(to_high)
        # softplus^{-1}(d) = d + log(1 - exp(-d)); log(1 - exp(-d)) = log(-expm1(-d)).
        tail_low = torch.log(-torch.expm1(-from_low))
        tail_high = torch.log(-torch.expm1(-to_high))
        y = torch.where(
            interval,
            (log_low - log_high) / INTERVAL_GAIN,
            torch.where(lower, from_low + tail_low, torch.where(upper, -(to_high + tail_high), x)),
        )
        ladj = torch.where(
            interval,
            torch.log(width) - _LOG_GAIN - log_low - log_high,
            torch.where(lower, -tail_low, torch.where(upper, -tail_high, torch.zeros_like(x))),
        )
        return y, ladj

    def __repr__(self) -> str:
        def shown(bound: float | Tensor) -> str:
            if isinstance(bound, Tensor):
                return str([round(v, 6) for v in bound.tolist()])
            return f"{bound:g}"

        return f"{type(self).__name__}(low={shown(self.low)}, high={shown(self.high)})"


def _gained(y: Tensor) -> Tensor:
    r""":math:`\kappa y`, kept finite for the largest floats (their sigmoid is the same)."""
    largest = torch.finfo(y.dtype).max / 2
    return y.clamp(-largest, largest) * INTERVAL_GAIN


def _call_one_kind(kind: str, y: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """``(x, log |dx/dy|)`` where every feature has ``kind``."""
    if kind == "interval":
        width = high - low
        ky = _gained(y)
        up, down = F.softplus(ky), F.softplus(-ky)
        # sigma(ky) = exp(-softplus(-ky)); from the nearer bound, so that the distance to it
        # keeps its relative precision in float32.
        x = torch.where(y < 0, low + width * torch.exp(-down), high - width * torch.exp(-up))
        return x, torch.log(width) + _LOG_GAIN - up - down
    if kind == "lower":
        return low + F.softplus(y), -F.softplus(-y)
    if kind == "upper":
        return high - F.softplus(-y), -F.softplus(y)
    return y, torch.zeros_like(y)


def _inverse_one_kind(kind: str, x: Tensor, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """``(y, log |dy/dx|)`` where every feature has ``kind``."""
    if kind == "interval":
        log_low, log_high = torch.log(x - low), torch.log(high - x)
        ladj = torch.log(high - low) - _LOG_GAIN - log_low - log_high
        return (log_low - log_high) / INTERVAL_GAIN, ladj
    if kind in ("lower", "upper"):
        distance = x - low if kind == "lower" else high - x
        # softplus^{-1}(d) = d + log(1 - exp(-d)); log(1 - exp(-d)) = log(-expm1(-d)).
        tail = torch.log(-torch.expm1(-distance))
        return (distance + tail if kind == "lower" else -(distance + tail)), -tail
    return x, torch.zeros_like(x)
