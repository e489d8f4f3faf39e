r"""Element-wise affine transforms: a monotonic affine map and a pure shift."""

from __future__ import annotations

__all__ = ["AdditiveTransform", "MonotonicAffineTransform"]

import math

import torch
from torch import Tensor

from flows.core.constants import cached_constants
from flows.core.transforms.base import UnivariateTransform


class MonotonicAffineTransform(UnivariateTransform):
    r"""The monotonic affine map :math:`y = x \exp(s) + b`, its log-scale soft-bounded.

    The raw (unconstrained) log-scale :math:`a` is squashed smoothly into
    :math:`s = \lambda \tanh(a / \lambda)` with :math:`\lambda = -\log(\text{slope})`, so that the
    slope :math:`\exp(s)` stays within :math:`[\text{slope}, 1 / \text{slope}]` and
    :math:`s \approx a` for small :math:`a`. The log-determinant is :math:`s`.

    Arguments:
        shift: The shift :math:`b`.
        scale: The unconstrained log-scale :math:`a`.
        slope: The smallest slope, in :math:`(0, 1)`.

    Example:
        >>> t = MonotonicAffineTransform(torch.tensor(1.0), torch.tensor(0.5))
        >>> y, ladj = t.call_and_ladj(torch.tensor([0.0, 2.0]))
        >>> y, ladj
        (tensor([1.0000, 4.2946]), tensor([0.4991, 0.4991]))
        >>> t.inv(y)
        tensor([0., 2.])
    """

    def __init__(
        self,
        shift: Tensor | float,
        scale: Tensor | float,
        slope: float = 1e-3,
    ) -> None:
        super().__init__()
        if not isinstance(slope, (int, float)) or not 0.0 < slope < 1.0:
            raise ValueError(f"slope must be a float in (0, 1), got {slope!r}")
        # Built once per layer call, in training and per inverse pass: no needless conversion.
        self.shift = shift if isinstance(shift, Tensor) else torch.as_tensor(shift)
        scale = scale if isinstance(scale, Tensor) else torch.as_tensor(scale)
        self.slope = float(slope)
        inverse, bound = _bounds(self.slope, like=scale)
        self.log_scale = torch.tanh(scale * inverse) * bound

    # Each alone, cheaper than call_and_ladj and inverse_and_ladj.
    def _call(self, x: Tensor) -> Tensor:
        return torch.addcmul(self.shift, x, self.log_scale.exp())

    def _inverse(self, y: Tensor) -> Tensor:
        return (y - self.shift) / self.log_scale.exp()

    def _log_scale_like(self, x: Tensor) -> Tensor:
        log_scale = self.log_scale
        # In a flow the shapes agree: an expand would be one more autograd node per layer.
        return log_scale if log_scale.shape == x.shape else log_scale.expand(x.shape)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self._log_scale_like(y)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = self._call(x)
        return y, self._log_scale_like(y)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = self._inverse(y)
        return x, -self._log_scale_like(x)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(slope={self.slope:g})"


@cached_constants
def _bounds(slope: float) -> tuple[float, float]:
    """``1 / bound`` and ``bound = -log(slope)``: the transform is built at every layer call
    and inverse pass, so its numbers are cached tensors."""
    bound = -math.log(slope)
    return 1 / bound, bound


class AdditiveTransform(UnivariateTransform):
    r"""The shift :math:`y = x + b`, which preserves volume (null log-determinant).

    Arguments:
        shift: The shift :math:`b`.

    Example:
        >>> t = AdditiveTransform(torch.tensor([1.0, -1.0]))
        >>> t.call_and_ladj(torch.tensor([0.5, 0.5]))
        (tensor([ 1.5000, -0.5000]), tensor([0., 0.]))
    """

    def __init__(self, shift: Tensor | float) -> None:
        super().__init__()
        self.shift = torch.as_tensor(shift)

    # Each alone, cheaper than call_and_ladj and inverse_and_ladj.
    def _call(self, x: Tensor) -> Tensor:
        return x + self.shift

    def _inverse(self, y: Tensor) -> Tensor:
        return y - self.shift

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return torch.zeros_like(y)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y = x + self.shift
        return y, torch.zeros_like(y)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = y - self.shift
        return x, torch.zeros_like(x)
