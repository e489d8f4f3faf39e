r"""Lazy distributions and transforms: modules whose forward pass builds a distribution.

Torch distributions and transforms are light objects, not modules: they cannot hold trainable
parameters nor depend on a context. A *lazy* distribution (transform) is a
:class:`torch.nn.Module` that holds the parameters and the recipe, and builds
:math:`p(X | c)` (:math:`y = f(x | c)`) in its forward pass, given a context :math:`c`.

Example:
    >>> import torch
    >>> from flows.core.distributions import DiagNormal
    >>> from flows.core.transforms import ExpTransform
    >>> flow = Flow(
    ...     UnconditionalTransform(ExpTransform).inv,
    ...     UnconditionalDistribution(DiagNormal, torch.zeros(2), torch.ones(2), buffer=True),
    ... )
    >>> flow().sample((4,)).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution
from torch.distributions import Transform as _TorchTransform

from flows.core.distributions.flow import NormalizingFlow
from flows.core.transforms.base import ComposedTransform

__all__ = [
    "Flow",
    "LazyComposedTransform",
    "LazyDistribution",
    "LazyInverse",
    "LazyTransform",
    "UnconditionalDistribution",
    "UnconditionalTransform",
]


class LazyDistribution(nn.Module, abc.ABC):
    r"""Abstract lazy distribution: a module that builds :math:`p(X | c)` in its forward pass.

    Example:
        >>> import torch
        >>> class Gaussian(LazyDistribution):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.loc = torch.nn.Parameter(torch.zeros(2))
        ...
        ...     def forward(self, c=None):
        ...         return torch.distributions.Normal(self.loc, 1.0)
        >>> Gaussian()().sample((5,)).shape
        torch.Size([5, 2])
    """

    @abc.abstractmethod
    def forward(self, c: Any | None = None) -> Distribution:
        r"""Return the distribution :math:`p(X | c)`.

        Arguments:
            c: A context :math:`c`, or ``None``.
        """


class LazyTransform(nn.Module, abc.ABC):
    r"""Abstract lazy transform: a module that builds :math:`y = f(x | c)` in its forward pass.

    Example:
        >>> from flows.core.transforms import ExpTransform
        >>> t = UnconditionalTransform(ExpTransform)
        >>> t.inv()(torch.tensor([1.0]))
        tensor([0.])
    """

    @abc.abstractmethod
    def forward(self, c: Any | None = None) -> _TorchTransform:
        r"""Return the transform :math:`y = f(x | c)`.

        Arguments:
            c: A context :math:`c`, or ``None``.
        """

    @property
    def inv(self) -> LazyTransform:
        r"""The lazy inverse :math:`x = f^{-1}(y | c)`, sharing this module's parameters."""
        return LazyInverse(self)


class LazyInverse(LazyTransform):
    r"""The lazy inverse :math:`x = f^{-1}(y | c)` of a lazy transform.

    Arguments:
        transform: The lazy transform :math:`f`; its parameters are shared, not copied.

    Example:
        >>> from flows.core.transforms import ExpTransform
        >>> exp = UnconditionalTransform(ExpTransform)
        >>> log = LazyInverse(exp)
        >>> log()(torch.tensor([1.0]))
        tensor([0.])
        >>> log.inv is exp
        True
    """

    def __init__(self, transform: LazyTransform) -> None:
        super().__init__()
        if not isinstance(transform, LazyTransform):
            raise TypeError(f"transform must be a LazyTransform, got {type(transform).__name__}")
        self.transform = transform

    def forward(self, c: Any | None = None) -> _TorchTransform:
        return self.transform(c).inv

    @property
    def inv(self) -> LazyTransform:
        return self.transform


class LazyComposedTransform(LazyTransform):
    r"""The lazy composition :math:`f(x | c) = f_n \circ \dots \circ f_1(x | c)`.

    Arguments:
        transforms: The lazy transforms :math:`f_1, \dots, f_n`, applied in that order.

    Example:
        >>> from flows.core.transforms import ExpTransform
        >>> t = LazyComposedTransform(
        ...     UnconditionalTransform(ExpTransform), UnconditionalTransform(ExpTransform).inv
        ... )
        >>> t()(torch.tensor([1.5]))
        tensor([1.5000])
    """

    def __init__(self, *transforms: LazyTransform) -> None:
        super().__init__()
        if not transforms:
            raise ValueError("LazyComposedTransform needs at least one lazy transform, got none")
        for i, transform in enumerate(transforms):
            if not isinstance(transform, LazyTransform):
                raise TypeError(
                    f"transforms[{i}] must be a LazyTransform, got {type(transform).__name__}"
                )
        self.transforms = nn.ModuleList(transforms)

    def forward(self, c: Any | None = None) -> _TorchTransform:
        return ComposedTransform(*(t(c) for t in self.transforms))


class Flow(LazyDistribution):
    r"""A lazy normalizing flow :math:`p(X | c)` from a lazy transform and a lazy base.

    The transform maps data :math:`x` to the base space, :math:`z = f(x | c)`, so that
    :math:`\log p(x | c) = \log p(z | c) + \log |\det J_f(x | c)|`. A context with batch
    dimensions gives a flow with those batch dimensions.

    Arguments:
        transform: A lazy transform :math:`f`, or a sequence of them, applied in order.
        base: A lazy base distribution :math:`p(Z | c)`.

    Example:
        >>> from flows.core.distributions import DiagNormal
        >>> from flows.core.layers import MaskedAutoregressiveTransform
        >>> flow = Flow(
        ...     [MaskedAutoregressiveTransform(3, context=2), MaskedAutoregressiveTransform(3, 2)],
        ...     UnconditionalDistribution(DiagNormal, torch.zeros(3), torch.ones(3), buffer=True),
        ... )
        >>> flow(torch.randn(5, 2)).batch_shape
        torch.Size([5])
    """

    def __init__(
        self,
        transform: LazyTransform | Sequence[LazyTransform],
        base: LazyDistribution,
    ) -> None:
        super().__init__()
        if isinstance(transform, (Sequence, nn.ModuleList)):
            transform = LazyComposedTransform(*transform)
        if not isinstance(transform, LazyTransform):
            raise TypeError(
                "transform must be a LazyTransform or a sequence of them, "
                f"got {type(transform).__name__}"
            )
        if not isinstance(base, LazyDistribution):
            raise TypeError(f"base must be a LazyDistribution, got {type(base).__name__}")
        self.transform = transform
        self.base = base

    def forward(self, c: Tensor | None = None) -> Distribution:
        r"""Return the normalizing flow :math:`p(X | c)`.

        Arguments:
            c: A context of shape :math:`(*, C)`, or ``None``.
        """
        transform = self.transform(c)
        base = self.base(c)
        if isinstance(c, Tensor) and c.dim() > 1 and base.batch_shape != c.shape[:-1]:
            # An unconditional base has no batch dimensions: give it the context's.
            if base.batch_shape:
                batch_shape = torch.broadcast_shapes(base.batch_shape, c.shape[:-1])
            else:
                batch_shape = c.shape[:-1]
            if batch_shape != base.batch_shape:
                base = base.expand(batch_shape)
        return NormalizingFlow(transform, base)


class _Unconditional(nn.Module):
    """Holds a constructor and its arguments; tensors become parameters or buffers."""

    def __init__(self, f: Callable[..., Any], *args: Any, buffer: bool = False, **kwargs: Any):
        super().__init__()
        if not callable(f):
            raise TypeError(f"f must be callable, got {type(f).__name__}")
        if isinstance(f, nn.Module):
            self.f = f  # registered as a submodule
        else:
            self._f = f
        # How to rebuild each argument: ("tensor" | "module", attribute name) or ("value", obj).
        self._args = [self._register(f"_{i}", arg, buffer) for i, arg in enumerate(args)]
        self._kwargs = {key: self._register(f"_{key}", v, buffer) for key, v in kwargs.items()}

    def _register(self, name: str, value: Any, buffer: bool) -> tuple[str, Any]:
        if isinstance(value, nn.Module):
            self.add_module(name, value)
            return ("module", name)
        if isinstance(value, Tensor):
            if buffer:
                self.register_buffer(name, value)
            elif value.is_floating_point() or value.is_complex():
                self.register_parameter(name, nn.Parameter(value))
            else:
                # Integer and boolean tensors cannot be trained: they stay buffers.
                self.register_buffer(name, value)
            return ("tensor", name)
        return ("value", value)

    def _value(self, slot: tuple[str, Any]) -> Any:
        kind, value = slot
        return value if kind == "value" else getattr(self, value)

    def _function(self) -> Callable[..., Any]:
        return self.f if "f" in self._modules else self._f

    def forward(self, c: Any | None = None) -> Any:
        r"""Return ``f(*args, **kwargs)``; the context :math:`c` is ignored."""
        args = [self._value(slot) for slot in self._args]
        kwargs = {key: self._value(slot) for key, slot in self._kwargs.items()}
        return self._function()(*args, **kwargs)

    def extra_repr(self) -> str:
        if "f" in self._modules:
            return ""
        try:
            return repr(self.forward())
        except Exception:  # a repr must never fail, even for a constructor that needs care
            return getattr(self._f, "__name__", repr(self._f))


class UnconditionalDistribution(_Unconditional, LazyDistribution):
    r"""An unconditional lazy distribution from a constructor and its arguments.

    Tensor arguments are registered as parameters (trainable) or, with ``buffer=True``, as
    buffers; module arguments and a module ``f`` as submodules. The context is ignored.

    Arguments:
        f: A distribution constructor.
        args: The positional arguments passed to ``f``.
        buffer: Whether tensor arguments are registered as buffers rather than parameters.
        kwargs: The keyword arguments passed to ``f``.

    Example:
        >>> from flows.core.distributions import DiagNormal
        >>> mu, sigma = torch.zeros(3), torch.ones(3)
        >>> base = UnconditionalDistribution(DiagNormal, mu, sigma, buffer=True)
        >>> base()
        DiagNormal(loc: torch.Size([3]), scale: torch.Size([3]))
        >>> _ = torch.manual_seed(0)
        >>> base().sample()
        tensor([ 1.5410, -0.2934, -2.1788])
    """

    def forward(self, c: Any | None = None) -> Distribution:
        r"""Return ``f(*args, **kwargs)``; the context :math:`c` is ignored."""
        return super().forward(c)


class UnconditionalTransform(_Unconditional, LazyTransform):
    r"""An unconditional lazy transform from a constructor and its arguments.

    Tensor arguments are registered as parameters (trainable) or, with ``buffer=True``, as
    buffers; module arguments and a module ``f`` as submodules. The context is ignored.

    Arguments:
        f: A transform constructor.
        args: The positional arguments passed to ``f``.
        buffer: Whether tensor arguments are registered as buffers rather than parameters.
        kwargs: The keyword arguments passed to ``f``.

    Example:
        >>> from flows.core.transforms import ExpTransform
        >>> t = UnconditionalTransform(ExpTransform)
        >>> t()
        ExpTransform()
        >>> t()(torch.tensor([0.0, 1.0]))
        tensor([1.0000, 2.7183])
    """

    def forward(self, c: Any | None = None) -> _TorchTransform:
        r"""Return ``f(*args, **kwargs)``; the context :math:`c` is ignored."""
        return super().forward(c)
