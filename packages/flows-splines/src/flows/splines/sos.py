r"""The sum-of-squares (SOS) polynomial transform."""

from __future__ import annotations

__all__ = ["SOSPolynomialTransform"]

import torch
from torch import Tensor

from flows.splines.tails import LinearTailsTransform


class SOSPolynomialTransform(LinearTailsTransform):
    r"""The integral of a sum of squared polynomials, linear beyond :math:`[-B, B]`.

    With :math:`u = x / B` and :math:`p_k(u) = K^{-1/2} + \sum_{l=0}^{L} a_{kl} u^l`,

    .. math:: f(x) = C + \epsilon x + B \int_0^{u} \sum_{k=1}^{K} p_k(s)^2 \, ds,
        \qquad f'(x) = \epsilon + \sum_k p_k(u)^2,

    an increasing polynomial of degree :math:`2L + 1`, computed in closed form. The offset
    :math:`K^{-1/2}` makes null coefficients give a unit slope (a shift, as flows start); the
    minimum slope :math:`\epsilon` keeps the log-derivative finite. The inverse is found by
    bisection within ``eps``.

    Arguments:
        a: The polynomial coefficients :math:`a`, with shape :math:`(*, K, L + 1)`.
        C: The constant :math:`C`, with shape :math:`(*)`.
        bound: The half-width :math:`B` of the polynomial part.
        slope: The minimum slope :math:`\epsilon`.
        eps: The tolerance of the inverse.

    Example:
        >>> t = SOSPolynomialTransform(torch.tensor([[-1.0, 1.0]]), torch.tensor(0.0), bound=1.0)
        >>> y, ladj = t.call_and_ladj(torch.tensor([0.5, 1.0, 2.0]))  # x^3 / 3 (+ x / 1000)
        >>> y
        tensor([0.0422, 0.3343, 1.3353])
        >>> t.inv(y).round(decimals=4)
        tensor([0.5000, 1.0000, 2.0000])

    References:
        | Sum-of-Squares Polynomial Flow (Jaini et al., 2019)
        | https://arxiv.org/abs/1905.02325
    """

    def __init__(
        self,
        a: Tensor,
        C: Tensor,
        bound: float = 5.0,
        slope: float = 1e-3,
        eps: float = 1e-6,
    ) -> None:
        super().__init__(bound, eps)
        if a.dim() < 2:
            raise ValueError(f"a must have shape (*, K, L + 1), got {tuple(a.shape)}")
        if not isinstance(slope, (int, float)) or not slope > 0:
            raise ValueError(f"slope must be a positive float, got {slope!r}")
        self.slope = float(slope)
        self.degree = a.shape[-1] - 1
        self.C = torch.as_tensor(C)
        # Coefficients of sum_k p_k^2: sum the products a_kl a_km along anti-diagonals l + m.
        terms = self.degree + 1
        offset = torch.zeros(terms, dtype=a.dtype, device=a.device)
        offset[0] = a.shape[-2] ** -0.5
        a = a + offset
        products = torch.einsum("...kl,...km->...lm", a, a).flatten(-2)
        n = torch.arange(terms, device=a.device)
        anti = (n[:, None] + n[None, :]).flatten()
        scatter = (anti[:, None] == torch.arange(2 * terms - 1, device=a.device)).to(a.dtype)
        self._square = products @ scatter  # (*, 2L + 1), the derivative's coefficients
        self._integral = self._square / torch.arange(1, 2 * terms, device=a.device, dtype=a.dtype)
        self.phi = (self._integral, self.C)  # what the value depends on directly

    def inner(self, x: Tensor) -> tuple[Tensor, Tensor]:
        u = x / self.bound
        powers = u.unsqueeze(-1) ** torch.arange(
            2 * self.degree + 2, dtype=x.dtype, device=x.device
        )
        value = (self._integral * powers[..., 1:]).sum(-1)
        derivative = (self._square * powers[..., :-1]).sum(-1)
        y = self.C + self.slope * x + self.bound * value
        return y, self.slope + derivative

    def __repr__(self) -> str:
        return f"{type(self).__name__}(degree={self.degree}, bound={self.bound:g})"
