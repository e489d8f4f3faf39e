r"""Flows whose samples lie in a support: a box, half-lines, or a mix of them per feature.

A flow models :math:`y \in \mathbb{R}^F`; a support :math:`(a, b)` (per feature, either side
possibly infinite) is reached by the :class:`~flows.core.transforms.support.SupportTransform`
:math:`x = g(y)` after the flow, so that

.. math:: \log p(x \mid c) = \log p_Y(g^{-1}(x) \mid c)
    + \sum_i \log \left| \frac{d g^{-1}(x_i)}{d x_i} \right|

inside the support and :math:`-\infty` outside it (and on its bounds), never NaN.

* :func:`with_support`: any lazy distribution (a preset, or a third party's flow) restricted to a
  support; every preset also takes ``support=`` itself, which its checkpoint records.
* :func:`normalize_support`: a support given as ``(low, high)`` or as a
  :mod:`torch.distributions.constraints` object (``real``, ``positive``, ``greater_than(a)``,
  ``less_than(b)``, ``interval(a, b)``, ``unit_interval``, ``independent(...)``, as sbi's
  ``BoxUniform(...).support``) in the plain floats a checkpoint holds.
* :func:`restrict`: a distribution (a normalizing flow or any other) restricted by the bijection.

Example:
    >>> import torch
    >>> from flows.core import MAF
    >>> flow = with_support(MAF(features=2, transforms=1), (0.0, [1.0, float("inf")]))
    >>> x = flow().sample((1000,))
    >>> bool((x > 0).all() and (x[:, 0] < 1).all())
    True
    >>> flow().log_prob(torch.tensor([[0.5, 2.0], [1.5, 2.0], [0.5, -1.0]]))[1:]
    tensor([-inf, -inf], grad_fn=<SliceBackward0>)
"""

from __future__ import annotations

__all__ = [
    "Support",
    "SupportedDistribution",
    "SupportedFlow",
    "SupportedLazyDistribution",
    "normalize_support",
    "restrict",
    "with_support",
]

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Size, Tensor, nn
from torch.distributions import Distribution, constraints
from torch.types import _size

from flows.core.distributions.flow import NormalizingFlow
from flows.core.lazy import LazyDistribution
from flows.core.transforms.base import ComposedTransform, sum_rightmost
from flows.core.transforms.support import SupportTransform, kind_groups, kind_of
from flows.core.validation import check_event_shape

#: A normalized support: ``(low, high)``, two floats or two lists of one float per feature.
Normalized = tuple[float | list[float], float | list[float]]

_ACCEPTED = (
    "(low, high) with floats or one per feature (-inf or inf for an open side), or a "
    "torch.distributions.constraints object: real, positive, greater_than(a), less_than(b), "
    "interval(a, b), unit_interval or independent(...) of them"
)


def _constraint_bounds(constraint: constraints.Constraint, name: str) -> tuple[Any, Any]:
    while isinstance(constraint, constraints.independent):
        constraint = constraint.base_constraint
    if constraint.is_discrete:
        raise TypeError(f"{name} must be continuous; got the discrete constraint {constraint!r}")
    if isinstance(constraint, type(constraints.real)):
        return -math.inf, math.inf
    if isinstance(constraint, (constraints.greater_than, constraints.greater_than_eq)):
        return constraint.lower_bound, math.inf
    if isinstance(constraint, constraints.less_than):
        return -math.inf, constraint.upper_bound
    if isinstance(constraint, (constraints.interval, constraints.half_open_interval)):
        return constraint.lower_bound, constraint.upper_bound
    raise TypeError(f"{name} must be {_ACCEPTED}; got the constraint {constraint!r}")


def _floats(value: Any, name: str) -> float | list[float]:
    if hasattr(value, "tolist"):
        value = value.tolist()  # a tensor or an array, on any device
    if isinstance(value, bool):
        raise TypeError(f"{name} must hold numbers, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        numbers = []
        for item in value:
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                raise TypeError(f"{name} must hold numbers, got {item!r} in {value!r}")
            numbers.append(float(item))
        if not numbers:
            raise ValueError(f"{name} must hold at least one number, got {value!r}")
        return numbers
    raise TypeError(f"{name} must be a number or a sequence of numbers, got {value!r}")


def normalize_support(
    support: Any, features: int | None = None, *, name: str = "support"
) -> Normalized:
    r"""A support as the plain floats a checkpoint holds: ``(low, high)``.

    Each of ``low`` and ``high`` is a float when both are scalars, else a list of one float per
    feature (a scalar side repeated). ``-inf`` and ``inf`` mark unbounded sides.

    Arguments:
        support: ``(low, high)`` (floats, sequences, tensors or arrays) or a constraint.
        features: The number of features, to check the lengths against; ``None`` not to.
        name: The argument's name in messages.

    Returns:
        ``(low, high)`` with :math:`a_i < b_i`, :math:`a_i < \infty` and :math:`b_i > -\infty`.

    Raises:
        TypeError: ``support`` is of none of the accepted kinds.
        ValueError: A bound is NaN, a lower bound is not below its upper bound, or the
            lengths do not match each other or ``features``.

    Example:
        >>> from torch.distributions import constraints
        >>> normalize_support(constraints.positive)
        (0.0, inf)
        >>> normalize_support((0, [1, 2]))
        ([0.0, 0.0], [1.0, 2.0])
        >>> normalize_support((1.0, 0.0))
        Traceback (most recent call last):
            ...
        ValueError: support: the lower bound 1.0 must be below the upper bound 0.0
    """
    if isinstance(support, constraints.Constraint):
        low, high = _constraint_bounds(support, name)
    elif isinstance(support, (tuple, list)) and len(support) == 2:
        low, high = support
    else:
        raise TypeError(f"{name} must be {_ACCEPTED}; got {support!r}")
    low, high = _floats(low, f"{name}'s lower bound"), _floats(high, f"{name}'s upper bound")
    if isinstance(low, list) or isinstance(high, list):
        size = len(low) if isinstance(low, list) else len(high)  # type: ignore[arg-type]
        low = low if isinstance(low, list) else [low] * size
        high = high if isinstance(high, list) else [high] * size
        if len(low) != len(high):
            raise ValueError(
                f"{name}: the lower bounds ({len(low)}) and upper bounds ({len(high)}) must "
                "be as many, one per feature"
            )
        if features is not None and len(low) != features:
            raise ValueError(
                f"{name} has bounds for {len(low)} features, but the flow has {features}; give "
                f"one pair of bounds per feature, or scalars for all"
            )
        for i, (a, b) in enumerate(zip(low, high, strict=True)):
            _check_pair(a, b, f"{name}: feature {i}:")
        return low, high
    _check_pair(low, high, f"{name}:")
    return low, high


def _check_pair(low: float, high: float, where: str) -> None:
    if math.isnan(low) or math.isnan(high):
        raise ValueError(f"{where} bounds must be numbers, got NaN in ({low}, {high})")
    if not low < high:
        raise ValueError(f"{where} the lower bound {low} must be below the upper bound {high}")
    if low == math.inf or high == -math.inf:
        raise ValueError(f"{where} the bounds ({low}, {high}) leave no room for any value")


def _masked_log_prob(
    log_prob: Callable[[Tensor], Tensor], x: Tensor, transform: SupportTransform, event_dims: int
) -> Tensor:
    """``log_prob`` inside the support, ``-inf`` on or beyond a bound, NaN for NaN.

    Points outside are replaced by an interior one before ``log_prob`` sees them, so that no
    infinite or NaN value enters the flow: their density, and every gradient, stay finite.
    """
    low, high = transform.bounds(x)
    outside = (x <= low) | (x >= high)
    x = torch.where(outside, transform.interior(x), x)
    if event_dims > 0:
        outside = outside.flatten(-event_dims).any(dim=-1)
    log_p = log_prob(x)
    return torch.where(outside, torch.full_like(log_p, -math.inf), log_p)


class SupportedFlow(NormalizingFlow):
    r"""A normalizing flow whose samples :math:`x = g(f^{-1}(z))` lie in a support.

    It is the normalizing flow of :math:`g^{-1}` then :math:`f` on the same base, so that
    sampling from base noise (``transform.inv(z)``), and its export, take the support along.

    Arguments:
        flow: The normalizing flow :math:`p_Y` (transform :math:`f`, base).
        transform: The bijection :math:`g` onto the support.
    """

    def __init__(self, flow: NormalizingFlow, transform: SupportTransform) -> None:
        super().__init__(ComposedTransform(transform.inv, flow.transform), flow.base)
        self.flow = flow
        self.onto = transform

    def expand(self, batch_shape: _size, _instance: object = None) -> SupportedFlow:
        return SupportedFlow(self.flow.expand(batch_shape), self.onto)

    def log_prob(self, x: Tensor) -> Tensor:
        check_event_shape("x", x.shape, self.event_shape)
        return _masked_log_prob(super().log_prob, x, self.onto, len(self.event_shape))


class SupportedDistribution(Distribution):
    r"""Any distribution :math:`p_Y` (a mixture, say) carried onto a support by :math:`g`.

    Arguments:
        base: The distribution :math:`p_Y` of :math:`Y`, its events :math:`F` values (or more).
        transform: The bijection :math:`g` onto the support, element-wise.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}  # noqa: RUF012

    def __init__(self, base: Distribution, transform: SupportTransform) -> None:
        self.base = base
        self.onto = transform
        super().__init__(base.batch_shape, base.event_shape, validate_args=False)

    @property
    def has_rsample(self) -> bool:  # type: ignore[override]
        return bool(self.base.has_rsample)

    @constraints.dependent_property(is_discrete=False)
    def support(self) -> constraints.Constraint:
        return constraints.independent(self.onto.codomain, len(self.event_shape))

    def expand(self, batch_shape: _size, _instance: object = None) -> SupportedDistribution:
        return SupportedDistribution(self.base.expand(Size(batch_shape)), self.onto)

    def rsample(self, sample_shape: _size = ()) -> Tensor:
        return self.onto(self.base.rsample(Size(sample_shape)))

    def sample(self, sample_shape: _size = ()) -> Tensor:
        with torch.no_grad():
            return self.onto(self.base.sample(Size(sample_shape)))

    def log_prob(self, x: Tensor) -> Tensor:
        check_event_shape("x", x.shape, self.event_shape)

        def inside(x: Tensor) -> Tensor:
            y, ladj = self.onto.inverse_and_ladj(x)
            return self.base.log_prob(y) + sum_rightmost(ladj, len(self.event_shape))

        return _masked_log_prob(inside, x, self.onto, len(self.event_shape))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base: {self.base!r}, onto: {self.onto!r})"


def restrict(distribution: Distribution, transform: SupportTransform) -> Distribution:
    r"""``distribution`` carried onto the support of ``transform``.

    A :class:`~flows.core.distributions.NormalizingFlow` gives a :class:`SupportedFlow` (still
    a normalizing flow of the same base); any other distribution a
    :class:`SupportedDistribution`.
    """
    if isinstance(distribution, NormalizingFlow):
        return SupportedFlow(distribution, transform)
    return SupportedDistribution(distribution, transform)


class Support(nn.Module):
    r"""The bounds of a support, as buffers that follow the flow's device and dtype.

    Calling it on a distribution restricts it (:func:`restrict`). The buffers are not
    persistent: the bounds are rebuilt from the preset's recorded ``support`` argument, so a
    flow's ``state_dict`` keys are the same with or without a support.

    Arguments:
        low: The lower bounds (a float, or one per feature).
        high: The upper bounds.
    """

    low: Tensor
    high: Tensor
    order: Tensor

    def __init__(self, low: float | Sequence[float], high: float | Sequence[float]) -> None:
        super().__init__()
        dtype = torch.get_default_dtype()
        self.register_buffer("low", torch.tensor(low, dtype=dtype), persistent=False)
        self.register_buffer("high", torch.tensor(high, dtype=dtype), persistent=False)
        # Known from the floats, so that the transform computes the one map it needs, or
        # each map on its own features.
        self.kind = kind_of(low, high)
        self.kinds: list[str] = []
        if self.kind == "mixed":
            groups, order = kind_groups(low, high)  # type: ignore[arg-type]
            for kind, indices in groups:
                self.register_buffer(f"index_{kind}", torch.tensor(indices), persistent=False)
                self.kinds.append(kind)
            self.register_buffer("order", torch.tensor(order), persistent=False)

    def transform(self) -> SupportTransform:
        """The bijection from the real line onto the support."""
        if self.kind != "mixed":
            return SupportTransform(self.low, self.high, self.kind)
        groups = [(kind, getattr(self, f"index_{kind}")) for kind in self.kinds]
        return SupportTransform(self.low, self.high, "mixed", groups, self.order)

    def forward(self, distribution: Distribution) -> Distribution:
        return restrict(distribution, self.transform())

    def extra_repr(self) -> str:
        return f"low={self.low.tolist()}, high={self.high.tolist()}"


class SupportedLazyDistribution(LazyDistribution):
    r"""A lazy distribution whose distributions are restricted to a support.

    Arguments:
        flow: The lazy distribution (its parameters are shared, not copied).
        support: The support's bounds.
    """

    def __init__(self, flow: LazyDistribution, support: Support) -> None:
        super().__init__()
        self.flow = flow
        self.support = support

    def forward(self, c: Any | None = None) -> Distribution:
        return self.support(self.flow(c))


def with_support(
    flow: LazyDistribution, support: Any, features: int | None = None
) -> LazyDistribution:
    r"""The lazy distribution ``flow`` with its samples carried onto ``support``.

    It works for any lazy distribution whose events are vectors of ``features`` values: a
    preset, or a third party's flow. A preset may instead take ``support=`` itself
    (``MAF(3, support=(0, 1))``), which its checkpoint then records.

    Arguments:
        flow: The lazy distribution :math:`p_Y(\cdot \mid c)`; its parameters are shared.
        support: ``(low, high)`` or a constraint (see :func:`normalize_support`).
        features: The number of features, to check per-feature bounds against; by default a
            preset's ``arguments["features"]``.

    Returns:
        A lazy distribution whose ``forward(c)`` samples inside the support and whose
        ``log_prob`` is :math:`-\infty` outside.

    Raises:
        TypeError: ``flow`` is not a lazy distribution, or ``support`` of no accepted kind.
        ValueError: ``support`` does not hold valid bounds for ``features`` features.

    Example:
        >>> from torch.distributions import constraints
        >>> from flows.core import GMM
        >>> gmm = with_support(GMM(features=3), constraints.positive)
        >>> bool((gmm().sample((100,)) > 0).all())
        True
    """
    if not isinstance(flow, LazyDistribution):
        raise TypeError(f"flow must be a LazyDistribution, got {type(flow).__name__}")
    if features is None:
        recorded = (getattr(flow, "arguments", None) or {}).get("features")
        features = recorded if isinstance(recorded, int) else None
    low, high = normalize_support(support, features)
    return SupportedLazyDistribution(flow, Support(low, high))


def _restricted(module: nn.Module, args: Any, output: Distribution) -> Distribution:
    """The forward hook of a preset built with a support."""
    return module._support(output)  # type: ignore[operator]


def attach_support(preset: nn.Module, support: Normalized) -> None:
    r"""Restrict every distribution ``preset`` builds to ``support`` (a normalized one).

    The bounds become the preset's ``_support`` module and a forward hook restricts what its
    ``forward`` returns, whichever class defines it: no preset repeats this, and one without
    a support runs no hook at all.
    """
    preset._support = Support(*support)
    preset.register_forward_hook(_restricted)
