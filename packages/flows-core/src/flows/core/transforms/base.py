r"""The transform protocol of flows: a value and its log-Jacobian in one pass.

Every flows transform is a :class:`torch.distributions.Transform` that also implements

* :meth:`Transform.call_and_ladj`: :math:`x \mapsto (y, \log |\det J_f(x)|)`;
* :meth:`Transform.inverse_and_ladj`: :math:`y \mapsto (x, \log |\det J_{f^{-1}}(y)|)`.

so that flows never compute a value twice. Torch's own transforms work everywhere too, through
the module functions :func:`call_and_ladj` and :func:`inverse_and_ladj`.

Most of ours are written in these two methods alone: a :class:`OnePassTransform` implements
them and derives torch's ``_call``, ``_inverse`` and ``log_abs_det_jacobian`` from them, and a
:class:`UnivariateTransform`, an element-wise bijection, also declares by default the real line
as its domain and codomain and an increasing map. A univariate transform may also take its
parameters as one block laid out parameters first, the optional ``from_rows`` class method
that :class:`UnivariateTransform` documents.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor
from torch.distributions import Transform as _TorchTransform
from torch.distributions import constraints

__all__ = [
    "ComposedTransform",
    "DependentTransform",
    "IdentityTransform",
    "InverseTransform",
    "OnePassTransform",
    "Transform",
    "UnivariateTransform",
    "call_and_ladj",
    "inverse_and_ladj",
    "sum_rightmost",
]


def sum_rightmost(x: Tensor, dims: int) -> Tensor:
    """Sum the ``dims`` rightmost dimensions of ``x``."""
    return x.sum(dim=tuple(range(-dims, 0))) if dims > 0 else x


def _sum(terms: list[Tensor]) -> Tensor:
    # Starting from the first term, not 0.0, saves an addition in every autograd graph.
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def call_and_ladj(transform: _TorchTransform, x: Tensor) -> tuple[Tensor, Tensor]:
    """``(f(x), log|det J_f(x)|)`` for any torch transform, in one pass when it is ours."""
    if isinstance(transform, Transform):
        return transform.call_and_ladj(x)
    y = transform(x)
    return y, transform.log_abs_det_jacobian(x, y)


def inverse_and_ladj(transform: _TorchTransform, y: Tensor) -> tuple[Tensor, Tensor]:
    """``(f^{-1}(y), log|det J_{f^{-1}}(y)|)`` for any torch transform."""
    if isinstance(transform, Transform):
        return transform.inverse_and_ladj(y)
    x = transform.inv(y)
    return x, -transform.log_abs_det_jacobian(x, y)


class Transform(_TorchTransform):
    r"""Base class of flows transforms.

    Subclasses implement ``_call``, ``_inverse`` and ``log_abs_det_jacobian`` and, where the
    log-determinant falls out of the same computation, override :meth:`call_and_ladj` and
    :meth:`inverse_and_ladj` to compute both at once; a transform written in one pass each way
    subclasses :class:`OnePassTransform` instead. Their ``inv`` also has both methods.
    """

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return :math:`y = f(x)` and :math:`\log |\det \partial y / \partial x|`."""
        y = self._call(x)
        return y, self.log_abs_det_jacobian(x, y)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        r"""Return :math:`x = f^{-1}(y)` and :math:`\log |\det \partial x / \partial y|`."""
        x = self._inverse(y)
        return x, -self.log_abs_det_jacobian(x, y)

    @property
    def inv(self) -> Transform:
        """The inverse transform :math:`f^{-1}`, which also computes in one pass."""
        # torch declares _inv a Transform; a flows transform keeps a weak reference to its
        # inverse there, the inverse holding the strong one.
        inverse = None if self._inv is None else self._inv()  # type: ignore[call-arg]
        if inverse is None:
            inverse = InverseTransform(self)
            self._inv = weakref.ref(inverse)  # type: ignore[assignment]
        return inverse

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class OnePassTransform(Transform):
    r"""A bijection written in one pass each way, the value with its log-determinant.

    Subclasses implement :meth:`~Transform.call_and_ladj` and
    :meth:`~Transform.inverse_and_ladj`; torch's ``_call``, ``_inverse`` and
    ``log_abs_det_jacobian`` are derived from them, taking the part they need. A subclass
    overrides a derived method only where it is cheaper alone (a ``_call`` without the
    log-determinant): ``t(x)``, ``t.inv(y)`` and torch's distributions use these.

    Example:
        >>> import math
        >>> class Double(OnePassTransform):
        ...     domain = codomain = constraints.real
        ...
        ...     def call_and_ladj(self, x):
        ...         return 2 * x, torch.full_like(x, math.log(2))
        ...
        ...     def inverse_and_ladj(self, y):
        ...         return y / 2, torch.full_like(y, -math.log(2))
        >>> t = Double()
        >>> t(torch.tensor([1.0, 3.0])), t.inv(torch.tensor([4.0]))
        (tensor([2., 6.]), tensor([2.]))
        >>> t.log_abs_det_jacobian(torch.tensor([1.0]), torch.tensor([2.0]))
        tensor([0.6931])
    """

    bijective = True

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement call_and_ladj")

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} must implement inverse_and_ladj")

    def _call(self, x: Tensor) -> Tensor:
        return self.call_and_ladj(x)[0]

    def _inverse(self, y: Tensor) -> Tensor:
        return self.inverse_and_ladj(y)[0]

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]


class UnivariateTransform(OnePassTransform):
    r"""An element-wise bijection, by default an increasing map of the real line onto itself.

    The base of univariate transforms (the ``univariate=`` of lazy layers): subclasses
    implement :meth:`~Transform.call_and_ladj` and :meth:`~Transform.inverse_and_ladj`, each
    returning one log-derivative :math:`\log |dy_i / dx_i|` per element, as
    :class:`OnePassTransform`. The class attributes ``domain`` and ``codomain``
    (:data:`constraints.real`), ``bijective`` (``True``) and ``sign`` (``+1``) are overridden
    only where they differ (an interval, a decreasing map).

    **Parameters laid out parameters first.** The constructor of a univariate transform takes
    its parameter tensors positionally, ``constructor(*params, **options)`` with
    ``params[i]`` of shape ``(*batch, F, *shapes[i])``. A masked autoregressive layer computes
    those parameters as one block ``rows`` of shape ``(total, F, N)``, each parameter's values
    over the ``F`` features and the ``N`` samples of ``batch`` contiguous. A transform class may
    offer the optional class method

    .. code-block:: python

        @classmethod
        def from_rows(cls, rows: Tensor, batch: Sequence[int], **options) -> Transform: ...

    to take that block whole (one tensor in, one gradient out; see
    ``MonotonicRQSTransform.from_rows`` of flows-splines). It must give the transform that
    ``cls(*params, **options)`` gives with the tensors
    :func:`flows.core.layers.univariate.parameters_from_rows` cuts from the block, which is
    what a class without ``from_rows`` receives; ``flows.core.testing.check_univariate``
    checks that they agree.

    Example:
        >>> class Shift(UnivariateTransform):
        ...     def __init__(self, shift):
        ...         super().__init__()
        ...         self.shift = shift
        ...
        ...     def call_and_ladj(self, x):
        ...         return x + self.shift, torch.zeros_like(x)
        ...
        ...     def inverse_and_ladj(self, y):
        ...         return y - self.shift, torch.zeros_like(y)
        >>> t = Shift(torch.tensor(1.0))
        >>> t(torch.tensor([0.0, 2.0])), t.sign, t.domain
        (tensor([1., 3.]), 1, Real())
    """

    domain: constraints.Constraint = constraints.real
    codomain: constraints.Constraint = constraints.real
    sign = +1


class InverseTransform(Transform):
    """The inverse :math:`f^{-1}` of a flows transform :math:`f`."""

    _inv: Transform

    def __init__(self, transform: Transform) -> None:
        super().__init__(cache_size=transform._cache_size)
        self._inv = transform  # a strong reference: the inverse keeps its transform alive

    @property
    def inv(self) -> Transform:
        return self._inv

    @constraints.dependent_property(is_discrete=False)
    def domain(self) -> constraints.Constraint:
        return self._inv.codomain

    @constraints.dependent_property(is_discrete=False)
    def codomain(self) -> constraints.Constraint:
        return self._inv.domain

    @property
    def bijective(self) -> bool:  # type: ignore[override]
        return self._inv.bijective

    @property
    def sign(self) -> int | Tensor:  # type: ignore[override]
        return self._inv.sign

    def _call(self, y: Tensor) -> Tensor:
        return self._inv._inverse(y)

    def _inverse(self, x: Tensor) -> Tensor:
        return self._inv._call(x)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        # Named as torch names them: x is this inverse's input (f's output), y its output.
        return -self._inv.log_abs_det_jacobian(y, x)

    def call_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._inv.inverse_and_ladj(y)

    def inverse_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._inv.call_and_ladj(x)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, InverseTransform) and self._inv == other._inv

    def __hash__(self) -> int:
        return hash((type(self), id(self._inv)))

    def __repr__(self) -> str:
        return f"{self._inv!r}.inv"


class IdentityTransform(UnivariateTransform):
    r"""The identity :math:`y = x`, with a null log-determinant.

    Example:
        >>> t = IdentityTransform()
        >>> t.call_and_ladj(torch.tensor([1.0, -2.0]))
        (tensor([ 1., -2.]), tensor([0., 0.]))
    """

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, torch.zeros_like(x)

    def _call(self, x: Tensor) -> Tensor:
        return x

    # Its own inverse.
    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return y, torch.zeros_like(y)

    def _inverse(self, y: Tensor) -> Tensor:
        return y


class ComposedTransform(OnePassTransform):
    r"""The composition :math:`f = f_n \circ \dots \circ f_1` of transforms.

    Its log-determinant is the sum of the parts', each summed over the event dimensions it
    does not treat as one event:
    :math:`\log |\det J_f(x)| = \sum_i \log |\det J_{f_i}(x_{i-1})|`.

    Arguments:
        transforms: The transforms :math:`f_1, \dots, f_n`, applied in that order.

    Example:
        >>> t = ComposedTransform(
        ...     torch.distributions.AffineTransform(0.0, 2.0), torch.distributions.ExpTransform()
        ... )
        >>> t.call_and_ladj(torch.tensor([0.0, 1.0]))
        (tensor([1.0000, 7.3891]), tensor([0.6931, 2.6931]))
    """

    def __init__(self, *transforms: _TorchTransform, cache_size: int = 0) -> None:
        super().__init__(cache_size=cache_size)
        if not transforms:
            raise ValueError("transforms must hold at least one transform")
        for i, transform in enumerate(transforms):
            if not isinstance(transform, _TorchTransform):
                raise TypeError(
                    f"transforms[{i}] must be a torch.distributions.Transform, "
                    f"got {type(transform).__name__}"
                )
        self.transforms = transforms
        # Event dimensionality of the input: enough for every part to see whole events.
        event_dim = transforms[-1].codomain.event_dim
        for transform in reversed(transforms):
            event_dim += transform.domain.event_dim - transform.codomain.event_dim
            event_dim = max(event_dim, transform.domain.event_dim)
        self._event_dim = event_dim

    @constraints.dependent_property(is_discrete=False)
    def domain(self) -> constraints.Constraint:
        first = self.transforms[0].domain
        return constraints.independent(first, self._event_dim - first.event_dim)

    @constraints.dependent_property(is_discrete=False)
    def codomain(self) -> constraints.Constraint:
        last = self.transforms[-1].codomain
        event_dim = self._event_dim
        for transform in self.transforms:
            event_dim += transform.codomain.event_dim - transform.domain.event_dim
        return constraints.independent(last, event_dim - last.event_dim)

    @property
    def sign(self) -> int | Tensor:  # type: ignore[override]
        sign = 1
        for transform in self.transforms:
            sign = sign * transform.sign
        return sign

    def _call(self, x: Tensor) -> Tensor:
        for transform in self.transforms:
            x = transform(x)
        return x

    def _inverse(self, y: Tensor) -> Tensor:
        for transform in reversed(self.transforms):
            y = transform.inv(y)
        return y

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        event_dim = self._event_dim
        terms = []
        for transform in self.transforms:
            x, ladj = call_and_ladj(transform, x)
            terms.append(sum_rightmost(ladj, event_dim - transform.domain.event_dim))
            event_dim += transform.codomain.event_dim - transform.domain.event_dim
        return x, _sum(terms)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        event_dim = self._event_dim
        for transform in self.transforms:
            event_dim += transform.codomain.event_dim - transform.domain.event_dim
        terms = []
        for transform in reversed(self.transforms):
            y, ladj = inverse_and_ladj(transform, y)
            terms.append(sum_rightmost(ladj, event_dim - transform.codomain.event_dim))
            event_dim += transform.domain.event_dim - transform.codomain.event_dim
        return y, _sum(terms)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {t!r}".replace("\n", "\n  ") for t in self.transforms)
        return f"{type(self).__name__}(\n{inner}\n)"


class DependentTransform(Transform):
    r"""Treat the ``reinterpreted`` rightmost batch dimensions of a transform as one event.

    The log-determinant is summed over those dimensions, as for independent variables.

    Arguments:
        base: The transform acting element-wise.
        reinterpreted: The number of batch dimensions to treat as event dimensions.

    Example:
        >>> t = DependentTransform(torch.distributions.ExpTransform(), 1)
        >>> t.call_and_ladj(torch.tensor([1.0, 2.0]))[1]
        tensor(3.)
    """

    def __init__(self, base: _TorchTransform, reinterpreted: int) -> None:
        super().__init__()
        if not isinstance(reinterpreted, int) or reinterpreted < 0:
            raise ValueError(f"reinterpreted must be a non-negative int, got {reinterpreted!r}")
        self.base = base
        self.reinterpreted = reinterpreted

    @constraints.dependent_property(is_discrete=False)
    def domain(self) -> constraints.Constraint:
        return constraints.independent(self.base.domain, self.reinterpreted)

    @constraints.dependent_property(is_discrete=False)
    def codomain(self) -> constraints.Constraint:
        return constraints.independent(self.base.codomain, self.reinterpreted)

    @property
    def bijective(self) -> bool:  # type: ignore[override]
        return self.base.bijective

    @property
    def sign(self) -> int | Tensor:  # type: ignore[override]
        return self.base.sign

    def _call(self, x: Tensor) -> Tensor:
        return self.base(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return self.base.inv(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return sum_rightmost(self.base.log_abs_det_jacobian(x, y), self.reinterpreted)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, ladj = call_and_ladj(self.base, x)
        return y, sum_rightmost(ladj, self.reinterpreted)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x, ladj = inverse_and_ladj(self.base, y)
        return x, sum_rightmost(ladj, self.reinterpreted)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base!r}, {self.reinterpreted})"
