r"""The Gaussianization transform: a Gaussian mixture CDF followed by the normal quantile."""

from __future__ import annotations

__all__ = ["GaussianizationTransform"]

import math
from typing import Any

import torch
from torch import Tensor
from torch.special import log_ndtr, ndtri

from flows.core.transforms.base import UnivariateTransform

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
_LOG_HALF = math.log(0.5)


def _normal_log_pdf(z: Tensor) -> Tensor:
    return -0.5 * z * z - _HALF_LOG_2PI


def _d_log_ndtr(z: Tensor) -> Tensor:
    r"""The derivative :math:`\phi(z) / \Phi(z)` of :math:`\log \Phi(z)`.

    In the far left tail the ratio of logs cancels catastrophically; there the asymptotic
    series :math:`|z| / (1 - z^{-2} + 3 z^{-4} - 15 z^{-6} + 105 z^{-8})` is exact to 1e-10.
    """
    direct = torch.exp(_normal_log_pdf(z) - log_ndtr(z))
    w = 1 / (z * z).clamp(min=400.0)
    series = -z.clamp(max=-20.0) / (1 - w * (1 - w * (3 - w * (15 - 105 * w))))
    return torch.where(z < -20.0, series, direct)


class _LogNdtr(torch.autograd.Function):
    r""":math:`\log \Phi(z)` with a gradient accurate in the far tails (torch's is not)."""

    @staticmethod
    def forward(z: Tensor) -> Tensor:
        return log_ndtr(z)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:
        ctx.save_for_backward(inputs[0])

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (z,) = ctx.saved_tensors
        return grad * _d_log_ndtr(z)


def _log_ndtr(z: Tensor) -> Tensor:
    return _LogNdtr.apply(z) if z.requires_grad else log_ndtr(z)


def _ndtri_lower(log_p: Tensor) -> Tensor:
    r"""The normal quantile :math:`\Phi^{-1}(p) \leq 0` from :math:`\log p \leq \log(1/2)`.

    Accurate for arbitrarily small :math:`p` (where :math:`p` itself underflows): an initial
    guess (``ndtri``, or the asymptotic tail expansion) refined by Newton steps on
    :math:`\log \Phi(z) = \log p`; gradients flow through ``log_p`` only, exactly
    (:math:`dz / d \log p = \Phi(z) / \phi(z)`).
    """
    with torch.no_grad():
        moderate = log_p > -40.0
        central = ndtri(torch.exp(log_p.clamp(min=-40.0)))
        t = -2 * log_p.clamp(max=-40.0)
        tail = -torch.sqrt(t - torch.log(t) - 2 * _HALF_LOG_2PI)
        z = torch.where(moderate, central, tail)
        for _ in range(2):
            z = z - (log_ndtr(z) - log_p) / _d_log_ndtr(z)
        z = z.clamp(max=0.0)
        slope = _d_log_ndtr(z)
    # One more Newton step, with the gradient of the implicit function attached.
    return z + (log_p - log_ndtr(z)) / slope


class GaussianizationTransform(UnivariateTransform):
    r"""The Gaussianization :math:`y = \Phi^{-1}(F(x))` of a Gaussian mixture CDF :math:`F`.

    .. math:: F(x) = \frac{1}{K} \sum_{k=1}^K \Phi(a_k x + b_k),
        \qquad a_k = \exp(\lambda \tanh(s_k / \lambda)), \quad \lambda = \log 10^3 ,

    so every :math:`a_k` lies in :math:`[10^{-3}, 10^3]`. It is computed in log space (each tail
    in its own, so :math:`y` is finite for any finite :math:`x`) with
    :math:`\log |dy/dx| = \log F'(x) - \log \phi(y)`. The inverse is a bisection of :math:`F`
    within the bracket :math:`[\min_k (y - b_k) / a_k, \max_k (y - b_k) / a_k]`, halved
    (mantissa bits + 8) times (60 in float64, 31 in float32; so :math:`x` is within
    :math:`2^{-60}` or :math:`2^{-31}` of the bracket width), then one Newton step.

    Arguments:
        shift: The shifts :math:`b_k`, of shape :math:`(*, K)`.
        scale: The unconstrained log-scales :math:`s_k`, of shape :math:`(*, K)`.

    References:
        | Gaussianization Flows (Meng et al., 2020)
        | https://arxiv.org/abs/2003.01941

    Example:
        >>> t = GaussianizationTransform(torch.tensor([0.0, 2.0]), torch.tensor([0.0, 0.0]))
        >>> y, ladj = t.call_and_ladj(torch.tensor([-2.0, 1.0, 3.0]))
        >>> y
        tensor([-0.6391,  1.4051,  3.2051])
        >>> t.inv(y)
        tensor([-2.0000,  1.0000,  3.0000])
    """

    def __init__(self, shift: Tensor, scale: Tensor) -> None:
        super().__init__()
        shift, scale = torch.as_tensor(shift), torch.as_tensor(scale)
        if shift.dim() < 1 or scale.dim() < 1:
            raise ValueError(
                "shift and scale must have at least one dimension (the K components), "
                f"got shapes {tuple(shift.shape)} and {tuple(scale.shape)}"
            )
        bound = math.log(1e3)
        self.shift = shift
        self.log_scale = torch.tanh(scale / bound) * bound
        self.components = torch.broadcast_shapes(shift.shape, scale.shape)[-1]

    def _log_cdfs(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        r""":math:`\log F(x)`, :math:`\log (1 - F(x))` and :math:`\log F'(x)`."""
        log_k = math.log(self.components)
        z = torch.addcmul(self.shift, x.unsqueeze(-1), self.log_scale.exp())
        log_cdf = torch.logsumexp(_log_ndtr(z), dim=-1) - log_k
        log_sf = torch.logsumexp(_log_ndtr(-z), dim=-1) - log_k
        log_pdf = torch.logsumexp(self.log_scale + _normal_log_pdf(z), dim=-1) - log_k
        return log_cdf, log_sf, log_pdf

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        log_cdf, log_sf, log_pdf = self._log_cdfs(x)
        # Work in the tail that holds x: its probability is at most 1/2, never rounded to 1.
        lower = log_cdf < log_sf
        magnitude = _ndtri_lower(torch.minimum(log_cdf, log_sf).clamp(max=_LOG_HALF))
        y = torch.where(lower, magnitude, -magnitude)
        return y, log_pdf - _normal_log_pdf(y)

    def _bisect(self, y: Tensor) -> Tensor:
        with torch.no_grad():
            scale = self.log_scale.exp()
            roots = (y.unsqueeze(-1) - self.shift) / scale
            low, high = roots.amin(dim=-1), roots.amax(dim=-1)
            lower = y < 0
            target_cdf, target_sf = log_ndtr(y), log_ndtr(-y)
            for _ in range(8 - round(math.log2(torch.finfo(y.dtype).eps))):
                middle = (low + high) / 2
                log_cdf, log_sf, _ = self._log_cdfs(middle)
                below = torch.where(lower, log_cdf < target_cdf, log_sf > target_sf)
                low = torch.where(below, middle, low)
                high = torch.where(below, high, middle)
            return (low + high) / 2

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        x = self._bisect(y)
        y_x, ladj = self.call_and_ladj(x)
        # A Newton step; it also gives x its gradient with respect to y and the parameters.
        step = torch.exp(-ladj.detach().clamp(min=-80.0))
        return x + (y - y_x) * step, -ladj

    def __repr__(self) -> str:
        return f"{type(self).__name__}(components={self.components})"
