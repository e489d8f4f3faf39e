r"""A transform from any monotonic function, inverted by bisection."""

from __future__ import annotations

__all__ = ["MonotonicTransform"]

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from flows.core.transforms.base import UnivariateTransform
from flows.splines.bisection import bisection_inverse, bisection_steps


def value_and_derivative(f: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    r"""Evaluate an element-wise function and its derivative :math:`f'(x)` by autograd.

    The derivative stays differentiable (with respect to ``x`` and to whatever ``f`` depends
    on) when gradients are enabled. Where ``f`` broadcasts ``x`` against a larger batch of
    parameters, both have the shape of that batch: one derivative per element.
    """
    create_graph = torch.is_grad_enabled()
    with torch.enable_grad():
        # A fresh node for x: parameters of f that themselves depend on x (autoregressive
        # conditioning) must not leak into the element-wise derivative.
        x_ = x.clone() if x.requires_grad and create_graph else x.detach().requires_grad_()
        y = f(x_)
        if y.shape != x_.shape:
            # f broadcast x against a larger batch of parameters (one x under a batch of
            # contexts): the gradient in x would sum f' over the copies. Evaluate again on x
            # expanded to that batch, whose elements each get their own derivative.
            x_ = x_.expand(y.shape)
            y = f(x_)
        (dydx,) = torch.autograd.grad(y, x_, torch.ones_like(y), create_graph=create_graph)
    if not create_graph:
        y, dydx = y.detach(), dydx.detach()
    return y, dydx


class MonotonicTransform(UnivariateTransform):
    r"""The transform :math:`y = f(x)` of an increasing element-wise function :math:`f`.

    The log-derivative comes from autograd; the inverse is found by bisection on
    :math:`[-B, B]`, within ``eps`` for :math:`y \in [f(-B), f(B)]` (values beyond map to
    the nearest end). Gradients flow through the inverse by the implicit function theorem,
    to ``y`` and to the tensors ``phi`` that ``f`` depends on.

    Arguments:
        f: An increasing element-wise function, e.g. a :class:`flows.nn.MonotonicMLP` applied
            feature by feature.
        phi: The tensors ``f`` depends on (e.g. its parameters and conditioning signal).
        bound: The half-width :math:`B` of the search interval of the inverse.
        eps: The tolerance of the inverse on :math:`x`.
        f_and_derivative: A function returning :math:`f(x)` and :math:`f'(x)` together (e.g.
            :meth:`flows.nn.MonotonicMLP.forward_and_derivative`), used instead of autograd's
            derivative under ``torch.compile``, which cannot trace ``torch.autograd.grad``.

    Example:
        >>> t = MonotonicTransform(lambda x: x + x**3)
        >>> with torch.no_grad():
        ...     y, ladj = t.call_and_ladj(torch.tensor([0.5, 1.0]))
        >>> y, ladj
        (tensor([0.6250, 2.0000]), tensor([0.5596, 1.3863]))
        >>> t.inv(y).round(decimals=4)
        tensor([0.5000, 1.0000])

    References:
        | Neural Autoregressive Flows (Huang et al., 2018)
        | https://arxiv.org/abs/1804.00779
    """

    def __init__(
        self,
        f: Callable[[Tensor], Tensor],
        phi: Sequence[Tensor] = (),
        bound: float = 10.0,
        eps: float = 1e-6,
        f_and_derivative: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None,
    ) -> None:
        super().__init__()
        if not callable(f):
            raise TypeError(f"f must be callable, got {type(f).__name__}")
        if f_and_derivative is not None and not callable(f_and_derivative):
            raise TypeError(
                f"f_and_derivative must be callable, got {type(f_and_derivative).__name__}"
            )
        if not isinstance(bound, (int, float)) or not bound > 0:
            raise ValueError(f"bound must be a positive float, got {bound!r}")
        bisection_steps(2 * bound, eps)  # validates eps
        self.f = f
        self.phi = tuple(phi)
        self.bound = float(bound)
        self.eps = float(eps)
        self.f_and_derivative = f_and_derivative

    def _value_and_derivative(self, x: Tensor) -> tuple[Tensor, Tensor]:
        # Eager keeps autograd's derivative, as fast or faster (measured on NAF); a compiled
        # graph cannot trace torch.autograd.grad.
        if self.f_and_derivative is not None and torch.compiler.is_compiling():
            return self.f_and_derivative(x)
        return value_and_derivative(self.f, x)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, dydx = self._value_and_derivative(x)
        return y, dydx.log()

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = self._inverse(y)
        return x, -self._value_and_derivative(x)[1].log()

    # Each alone, cheaper than call_and_ladj and inverse_and_ladj.
    def _call(self, x: Tensor) -> Tensor:
        return self.f(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return bisection_inverse(self.f, y, -self.bound, self.bound, self.eps, self.phi)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bound={self.bound:g}, eps={self.eps:g})"
