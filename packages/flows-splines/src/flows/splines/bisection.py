r"""Inverse of a monotonic function by bisection, differentiable by the implicit function theorem.

For :math:`y = f(x; \theta)` increasing in :math:`x`, the root :math:`x = f^{-1}(y; \theta)`
is found by a fixed number of bisection steps (no data-dependent control flow) and its
gradients are those of the exact inverse:

.. math:: \frac{\partial x}{\partial y} = \frac{1}{f'(x)}, \qquad
    \frac{\partial x}{\partial \theta} = -\frac{\partial f / \partial \theta}{f'(x)}.
"""

from __future__ import annotations

__all__ = ["bisection_inverse", "bisection_steps"]

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor


def bisection_steps(width: float, eps: float) -> int:
    """The number of halvings that shrink an interval of ``width`` below ``eps``."""
    if not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps must be a positive float, got {eps!r}")
    return max(1, math.ceil(math.log2(width / eps)))


def _bisect(f: Callable[[Tensor], Tensor], y: Tensor, lower: float, upper: float, steps: int):
    low = torch.full_like(y, lower)
    high = torch.full_like(y, upper)
    for _ in range(steps):
        middle = (low + high) / 2
        below = f(middle) < y
        low = torch.where(below, middle, low)
        high = torch.where(below, high, middle)
    return (low + high) / 2


class _ImplicitInverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, derivative, y, lower, upper, steps, *phi):
        with torch.no_grad():
            x = _bisect(f, y, lower, upper, steps)
        ctx.f, ctx.derivative = f, derivative
        ctx.save_for_backward(x, *phi)
        return x

    @staticmethod
    def backward(ctx, grad_x):
        x, *phi = ctx.saved_tensors
        needs_phi = any(ctx.needs_input_grad[6:])
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            y = ctx.f(x)
            if ctx.derivative is None:
                (slope,) = torch.autograd.grad(y, x, torch.ones_like(y), retain_graph=True)
            else:
                slope = ctx.derivative(x.detach())
            grad_y = grad_x / slope
            grad_phi: Sequence[Tensor | None] = [None] * len(phi)
            if needs_phi:
                wanted = [p for p, need in zip(phi, ctx.needs_input_grad[6:], strict=True) if need]
                # The graph of f may share nodes with the outer graph (phi upstream of what f
                # uses): retain it for the outer backward pass.
                grads = torch.autograd.grad(
                    y, wanted, -grad_y, retain_graph=True, allow_unused=True
                )
                found = iter(grads)
                grad_phi = [next(found) if need else None for need in ctx.needs_input_grad[6:]]
        return (None, None, grad_y, None, None, None, *grad_phi)


def bisection_inverse(
    f: Callable[[Tensor], Tensor],
    y: Tensor,
    lower: float,
    upper: float,
    eps: float,
    phi: Sequence[Tensor] = (),
    derivative: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    r"""Solve :math:`f(x) = y` for :math:`x \in [\text{lower}, \text{upper}]` by bisection.

    The result is within ``eps`` of the root when :math:`y \in [f(\text{lower}),
    f(\text{upper})]`, and the nearest end of the interval otherwise.

    Arguments:
        f: An element-wise increasing function, which may depend on the tensors ``phi``.
        y: The values to invert.
        lower: The lower end of the search interval.
        upper: The upper end of the search interval.
        eps: The tolerance on :math:`x`.
        phi: The tensors ``f`` depends on, that receive gradients through the inverse. None
            may be computed from another (its gradient would be counted twice).
        derivative: :math:`f'(x)`, if known; autograd computes it otherwise.

    Example:
        >>> y = torch.tensor([-8.0, 1.0, 27.0])
        >>> bisection_inverse(lambda x: x**3, y, -10.0, 10.0, eps=1e-6)
        tensor([-2.0000,  1.0000,  3.0000])
    """
    steps = bisection_steps(upper - lower, eps)
    if not torch.is_grad_enabled() or not (y.requires_grad or any(p.requires_grad for p in phi)):
        # Nothing to differentiate: no autograd node (whose float arguments also confuse
        # dynamo's tracing of the function's forward in a stepwise inverse).
        with torch.no_grad():
            return _bisect(f, y, float(lower), float(upper), steps)
    return _ImplicitInverse.apply(f, derivative, y, float(lower), float(upper), steps, *phi)
