r"""Bernstein polynomial transforms: monotonic through increasing coefficients."""

from __future__ import annotations

__all__ = ["BernsteinTransform", "BoundedBernsteinTransform"]

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flows.splines._rqs_kernels import derivative_offset
from flows.splines.tails import LinearTailsTransform


def _binomials(n: int, like: Tensor) -> Tensor:
    return torch.tensor(
        [math.comb(n, k) for k in range(n + 1)], dtype=like.dtype, device=like.device
    )


class BernsteinTransform(LinearTailsTransform):
    r"""A Bernstein polynomial with increasing coefficients, linear beyond :math:`[-B, B]`.

    With :math:`u = (x + B) / 2B` and the Bernstein basis :math:`b_{k,M}`,

    .. math:: f(x) = \sum_{k=0}^{M} \alpha_k \, b_{k,M}(u), \qquad
        f'(x) = \frac{M}{2B} \sum_{k=0}^{M-1} (\alpha_{k+1} - \alpha_k) \, b_{k,M-1}(u),

    where :math:`\alpha_0 = -B + \theta_0` and :math:`\alpha_{k} - \alpha_{k-1} = \frac{2B}{M}
    (\epsilon + \operatorname{softplus}(\theta_k + c))`, so :math:`f' \geq \epsilon` and null
    parameters give the identity. The inverse is found by bisection within ``eps``.

    Arguments:
        theta: The unconstrained coefficients :math:`\theta`, with shape :math:`(*, M + 1)`.
        bound: The half-width :math:`B` of the polynomial part.
        slope: The minimum slope :math:`\epsilon`, in :math:`(0, 1)`.
        eps: The tolerance of the inverse.

    Example:
        >>> t = BernsteinTransform(torch.zeros(9))  # null parameters: the identity
        >>> t(torch.tensor([-7.0, 0.5, 7.0]))
        tensor([-7.0000,  0.5000,  7.0000])

    References:
        | Short-Term Density Forecasting of Low-Voltage Load using Bernstein-Polynomial
        | Normalizing Flows (Arpogaus et al., 2022)
        | https://arxiv.org/abs/2204.13939
    """

    def __init__(
        self,
        theta: Tensor,
        bound: float = 5.0,
        slope: float = 1e-3,
        eps: float = 1e-6,
    ) -> None:
        super().__init__(bound, eps)
        if theta.dim() < 1 or theta.shape[-1] < 2:
            raise ValueError(
                f"theta must have shape (*, M + 1) with degree M >= 1, got {tuple(theta.shape)}"
            )
        if not isinstance(slope, (int, float)) or not 0.0 < slope < 1.0:
            raise ValueError(f"slope must be a float in (0, 1), got {slope!r}")
        self.slope = float(slope)
        self.degree = theta.shape[-1] - 1
        step = 2 * self.bound / self.degree
        increments = step * (slope + F.softplus(theta[..., 1:] + derivative_offset(slope)))
        self._set_coefficients(theta[..., :1] - self.bound, increments)

    def _set_coefficients(self, start: Tensor, increments: Tensor) -> None:
        alpha = torch.cat((start, start + torch.cumsum(increments, dim=-1)), dim=-1)
        m = self.degree
        self._value = alpha * _binomials(m, alpha)
        self._derivative = increments * (_binomials(m - 1, alpha) * (m / (2 * self.bound)))
        self.phi = (self._value,)  # what the value depends on directly

    def inner(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u = (x + self.bound) / (2 * self.bound)
        exponents = torch.arange(self.degree + 1, dtype=x.dtype, device=x.device)
        up = u.unsqueeze(-1) ** exponents
        down = (1 - u).unsqueeze(-1) ** exponents.flip(0)  # (1 - u)^(M - k)
        value = (self._value * up * down).sum(-1)
        derivative = (self._derivative * up[..., :-1] * down[..., 1:]).sum(-1)
        return value, derivative

    def __repr__(self) -> str:
        return f"{type(self).__name__}(degree={self.degree}, bound={self.bound:g})"


class BoundedBernsteinTransform(BernsteinTransform):
    r"""A Bernstein polynomial mapping :math:`[-B, B]` onto itself, the identity outside.

    The coefficients run from :math:`\alpha_0 = -B` to :math:`\alpha_M = B`; the first and
    last increments are :math:`2B / M`, so the derivative is 1 at both ends and the joint with
    the identity is smooth. The :math:`M - 2` inner increments are a softmax of
    :math:`\theta` with a floor of ``slope`` (relative), so null parameters give the identity.

    Arguments:
        theta: The unconstrained inner increments, with shape :math:`(*, M - 2)`, degree
            :math:`M \geq 3`.
        bound: The half-width :math:`B` of the interval.
        slope: The smallest relative inner increment, in :math:`(0, 1 / (M - 2))`.
        eps: The tolerance of the inverse.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> t = BoundedBernsteinTransform(torch.randn(6), bound=5.0)
        >>> t(torch.tensor([-7.0, -5.0, 5.0, 7.0]))
        tensor([-7., -5.,  5.,  7.])
    """

    def __init__(
        self,
        theta: Tensor,
        bound: float = 5.0,
        slope: float = 1e-3,
        eps: float = 1e-6,
    ) -> None:
        LinearTailsTransform.__init__(self, bound, eps)
        if theta.dim() < 1 or theta.shape[-1] < 1:
            raise ValueError(
                f"theta must have shape (*, M - 2) with degree M >= 3, got {tuple(theta.shape)}"
            )
        inner = theta.shape[-1]
        if not isinstance(slope, (int, float)) or not 0.0 < slope * inner < 1.0:
            raise ValueError(
                f"slope must be a float in (0, 1 / (M - 2)) = (0, {1 / inner:g}), got {slope!r}"
            )
        self.slope = float(slope)
        self.degree = inner + 2
        step = 2 * self.bound / self.degree
        middle = torch.softmax(theta, dim=-1) * (1 - inner * slope) + slope
        middle = middle * (step * inner)
        ends = torch.full_like(theta[..., :1], step)
        increments = torch.cat((ends, middle, ends), dim=-1)
        self._set_coefficients(torch.full_like(theta[..., :1], -self.bound), increments)
