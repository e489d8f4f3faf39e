r"""The signed power transform."""

from __future__ import annotations

__all__ = ["SignedPowerTransform"]

import torch
from torch import Tensor

from flows.core.transforms.base import UnivariateTransform


class SignedPowerTransform(UnivariateTransform):
    r"""The signed power :math:`y = \operatorname{sign}(x) |x|^{\exp(\alpha)}`.

    An odd, strictly increasing bijection of the real line, with
    :math:`\log |dy/dx| = \alpha + (\exp(\alpha) - 1) \log |x|` and inverse
    :math:`x = \operatorname{sign}(y) |y|^{\exp(-\alpha)}`. At :math:`x = 0` the derivative
    is 0 or infinite (unless :math:`\alpha = 0`), so the log-determinant is infinite there.

    Arguments:
        alpha: The log-exponent :math:`\alpha`.

    Example:
        >>> t = SignedPowerTransform(torch.tensor(0.6931472))  # exponent 2
        >>> y, ladj = t.call_and_ladj(torch.tensor([-3.0, 0.5]))
        >>> y, ladj
        (tensor([-9.0000,  0.2500]), tensor([1.7918, 0.0000]))
        >>> t.inv(y)
        tensor([-3.0000,  0.5000])
    """

    def __init__(self, alpha: Tensor | float) -> None:
        super().__init__()
        self.alpha = torch.as_tensor(alpha)

    # Each alone, cheaper than call_and_ladj and inverse_and_ladj.
    def _call(self, x: Tensor) -> Tensor:
        return torch.sign(x) * x.abs() ** self.alpha.exp()

    def _inverse(self, y: Tensor) -> Tensor:
        return torch.sign(y) * y.abs() ** torch.exp(-self.alpha)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.alpha + torch.expm1(self.alpha) * torch.log(x.abs())

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_abs = torch.log(x.abs())
        exponent = self.alpha.exp()
        y = torch.sign(x) * torch.exp(exponent * log_abs)
        return y, self.alpha + (exponent - 1) * log_abs

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        log_abs = torch.log(y.abs())
        exponent = torch.exp(-self.alpha)
        x = torch.sign(y) * torch.exp(exponent * log_abs)
        return x, -self.alpha + (exponent - 1) * log_abs
