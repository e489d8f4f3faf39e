r"""Element-wise transforms between the real line, intervals and circles."""

from __future__ import annotations

__all__ = ["CircularShiftTransform", "CosTransform", "SinTransform", "SoftclipTransform"]

import math

import torch
from torch import Tensor
from torch.distributions import constraints

from flows.core.transforms.base import UnivariateTransform


def _check_bound(bound: object) -> float:
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not bound > 0:
        raise ValueError(f"bound must be a positive float, got {bound!r}")
    return float(bound)


class SoftclipTransform(UnivariateTransform):
    r"""The soft clip :math:`y = \frac{x}{1 + |x / B|}` from the real line onto :math:`(-B, B)`.

    It is the identity near 0, smooth and strictly increasing, with
    :math:`\log |dy/dx| = -2 \log(1 + |x| / B)` and inverse
    :math:`x = \frac{y}{1 - |y / B|}`.

    Arguments:
        bound: The bound :math:`B > 0`.

    Example:
        >>> t = SoftclipTransform(bound=2.0)
        >>> y = t(torch.tensor([-2.0, 0.0, 6.0]))
        >>> y
        tensor([-1.0000,  0.0000,  1.5000])
        >>> t.inv(y)
        tensor([-2.,  0.,  6.])
    """

    def __init__(self, bound: float = 1.0) -> None:
        super().__init__()
        self.bound = _check_bound(bound)

    @constraints.dependent_property(is_discrete=False)
    def codomain(self) -> constraints.Constraint:
        return constraints.interval(-self.bound, self.bound)

    # Each alone, cheaper than call_and_ladj and inverse_and_ladj.
    def _call(self, x: Tensor) -> Tensor:
        return x / (1 + x.abs() / self.bound)

    def _inverse(self, y: Tensor) -> Tensor:
        return y / (1 - y.abs() / self.bound)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return -2 * torch.log1p(x.abs() / self.bound)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        denominator = 1 + x.abs() / self.bound
        return x / denominator, -2 * torch.log(denominator)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        # Near the bound 1 - |y/B| loses precision; log1p keeps the log-determinant accurate.
        ratio = y.abs() / self.bound
        return y / (1 - ratio), -2 * torch.log1p(-ratio)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bound={self.bound:g})"


class CircularShiftTransform(UnivariateTransform):
    r"""The half-turn shift on the circle :math:`[-B, B)`: :math:`y = (x \bmod 2B) - B`.

    On the circle (the interval :math:`[-B, B)` with its ends glued) it rotates every point by
    half a turn, so it is its own inverse and preserves volume. Composed with a monotonic
    transform of :math:`[-B, B)`, it moves the place where the circle is cut.

    Arguments:
        bound: The half-period :math:`B > 0`.

    Example:
        >>> t = CircularShiftTransform(bound=2.0)
        >>> t(torch.tensor([-1.5, 0.0, 1.5]))
        tensor([ 0.5000, -2.0000, -0.5000])
    """

    def __init__(self, bound: float = math.pi) -> None:
        super().__init__()
        self.bound = _check_bound(bound)

    @constraints.dependent_property(is_discrete=False)
    def domain(self) -> constraints.Constraint:
        return constraints.half_open_interval(-self.bound, self.bound)

    @constraints.dependent_property(is_discrete=False)
    def codomain(self) -> constraints.Constraint:
        return constraints.half_open_interval(-self.bound, self.bound)

    def _call(self, x: Tensor) -> Tensor:
        return torch.remainder(x, 2 * self.bound) - self.bound

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.zeros_like(y)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self._call(x)
        return y, torch.zeros_like(y)

    # A half turn twice is a full turn: it is its own inverse.
    def _inverse(self, y: Tensor) -> Tensor:
        return torch.remainder(y, 2 * self.bound) - self.bound

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = self._inverse(y)
        return x, torch.zeros_like(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(bound={self.bound:g})"


class CosTransform(UnivariateTransform):
    r"""The cosine :math:`y = \cos x` from :math:`(0, \pi)` onto :math:`(-1, 1)`, decreasing.

    :math:`\log |dy/dx| = \log \sin x`; the inverse is :math:`x = \arccos y` with
    :math:`\log |dx/dy| = -\frac{1}{2} \log(1 - y^2)`.

    Example:
        >>> t = CosTransform()
        >>> t.call_and_ladj(torch.tensor([1.0471976]))  # pi / 3
        (tensor([0.5000]), tensor([-0.1438]))
    """

    domain = constraints.interval(0.0, math.pi)
    codomain = constraints.interval(-1.0, 1.0)
    sign = -1

    # Each alone, cheaper than call_and_ladj and inverse_and_ladj.
    def _call(self, x: Tensor) -> Tensor:
        return torch.cos(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return torch.acos(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.log(torch.sin(x))

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return torch.cos(x), torch.log(torch.sin(x))

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return torch.acos(y), -0.5 * torch.log1p(-y * y)


class SinTransform(UnivariateTransform):
    r"""The sine :math:`y = \sin x` from :math:`(-\pi / 2, \pi / 2)` onto :math:`(-1, 1)`.

    :math:`\log |dy/dx| = \log \cos x`; the inverse is :math:`x = \arcsin y` with
    :math:`\log |dx/dy| = -\frac{1}{2} \log(1 - y^2)`.

    Example:
        >>> t = SinTransform()
        >>> t.call_and_ladj(torch.tensor([0.0]))
        (tensor([0.]), tensor([0.]))
    """

    domain = constraints.interval(-math.pi / 2, math.pi / 2)
    codomain = constraints.interval(-1.0, 1.0)

    # Each alone, cheaper than call_and_ladj and inverse_and_ladj.
    def _call(self, x: Tensor) -> Tensor:
        return torch.sin(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return torch.asin(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.log(torch.cos(x))

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return torch.sin(x), torch.log(torch.cos(x))

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return torch.asin(y), -0.5 * torch.log1p(-y * y)
