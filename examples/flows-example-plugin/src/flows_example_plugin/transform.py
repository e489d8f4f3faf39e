r"""The sinh-arcsinh transform :math:`y = \sinh(b \operatorname{asinh}(x) - a)`."""

import math

import torch
from torch import Tensor
from torch.distributions import constraints

from flows.core.transforms import Transform

__all__ = ["SinhArcsinhTransform"]


class SinhArcsinhTransform(Transform):
    r"""Sinh-arcsinh transform, which changes skewness (:math:`a`) and tail weight (:math:`b`).

    .. math:: y = \sinh(b \operatorname{asinh}(x) - a)

    with :math:`a = 3 \tanh(\alpha / 3)` and :math:`b = \exp(2 \tanh(\beta / 2))`, so that any
    real parameters give a well-conditioned bijection of the real line.

    Arguments:
        alpha: The unconstrained skewness :math:`\alpha`.
        beta: The unconstrained log-tail-weight :math:`\beta`.

    Example:
        >>> t = SinhArcsinhTransform(torch.tensor(0.0), torch.tensor(0.0))
        >>> t(torch.tensor([-1.0, 2.0]))
        tensor([-1.,  2.])
    """

    domain = constraints.real
    codomain = constraints.real
    bijective = True
    sign = +1

    def __init__(self, alpha: Tensor, beta: Tensor) -> None:
        super().__init__()
        self.a = 3 * torch.tanh(alpha / 3)
        self.log_b = 2 * torch.tanh(beta / 2)

    def _call(self, x: Tensor) -> Tensor:
        return torch.sinh(self.log_b.exp() * torch.asinh(x) - self.a)

    def _inverse(self, y: Tensor) -> Tensor:
        return torch.sinh((torch.asinh(y) + self.a) / self.log_b.exp())

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.call_and_ladj(x)[1]

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z = self.log_b.exp() * torch.asinh(x) - self.a
        # log cosh(z) computed without overflow for large |z|
        log_cosh = z.abs() + torch.log1p(torch.exp(-2 * z.abs())) - math.log(2)
        ladj = log_cosh + self.log_b - 0.5 * torch.log1p(x.square())
        return torch.sinh(z), ladj
