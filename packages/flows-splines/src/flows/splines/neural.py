r"""Small per-feature monotonic networks whose weights are the parameter tensors.

These fit the registry's ``constructor(*params, **options)`` contract, so a hyper-network can
predict a monotonic network for every feature: ``MAF(3, univariate="monotonic")`` (a sum of
increasing tanh units, as in neural autoregressive flows) and ``univariate="umnn"`` (the
integral of a positive network, as in unconstrained monotonic neural networks). Both are
increasing on :math:`[-B, B]` and continue linearly beyond, so they are bijections of the real
line; null parameters give a map close to the identity on :math:`[-B, B]`.
"""

from __future__ import annotations

__all__ = ["IntegratedPositiveNetworkTransform", "MonotonicNetworkTransform"]

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flows.splines.tails import LinearTailsTransform
from flows.splines.unconstrained import integrate

_LOG2 = math.log(2.0)


def _check_units(name: str, *params: Tensor) -> None:
    shapes = {tuple(p.shape) for p in params}
    if len(shapes) != 1 or params[0].dim() < 1:
        raise ValueError(
            f"{name}: the parameters must share one shape (*, K), got "
            f"{[tuple(p.shape) for p in params]}"
        )


def _check_slope(slope: float) -> float:
    if not isinstance(slope, (int, float)) or not 0 < slope < 1:
        raise ValueError(f"slope must be a float in (0, 1), got {slope!r}")
    return float(slope)


class MonotonicNetworkTransform(LinearTailsTransform):
    r"""A one-hidden-layer monotonic network per feature: a sum of increasing tanh units.

    On :math:`[-B, B]`, with :math:`K` units,

    .. math:: f(x) = \epsilon x + \frac{B}{K \log^2 2} \sum_{k=1}^{K} \operatorname{softplus}(w_k)
        \tanh\left(\operatorname{softplus}(a_k) \frac{x}{B} + b_k\right),

    whose derivative is at least :math:`\epsilon`; the scale makes null parameters give
    :math:`f'(0) = 1 + \epsilon`. Beyond :math:`[-B, B]`, :math:`f` continues along its tangent.
    The inverse is found by bisection within ``eps``.

    Arguments:
        w: The unit weights :math:`w`, with shape :math:`(*, K)`.
        a: The unit slopes :math:`a`, with shape :math:`(*, K)`.
        b: The unit shifts :math:`b`, with shape :math:`(*, K)`.
        bound: The half-width :math:`B` of the network part.
        slope: The minimum slope :math:`\epsilon`.
        eps: The tolerance of the inverse.

    Example:
        >>> zeros = torch.zeros(4)
        >>> t = MonotonicNetworkTransform(zeros, zeros, zeros)
        >>> y = t(torch.tensor([-1.0, 0.0, 3.0]))
        >>> y
        tensor([-0.9946,  0.0000,  2.8412])
        >>> torch.allclose(t.inv(y), torch.tensor([-1.0, 0.0, 3.0]), atol=1e-5)
        True

    References:
        | Neural Autoregressive Flows (Huang et al., 2018)
        | https://arxiv.org/abs/1804.00779
    """

    def __init__(
        self,
        w: Tensor,
        a: Tensor,
        b: Tensor,
        bound: float = 5.0,
        slope: float = 1e-3,
        eps: float = 1e-6,
    ) -> None:
        super().__init__(bound, eps)
        _check_units(type(self).__name__, w, a, b)
        self.slope = _check_slope(slope)
        units = w.shape[-1]
        self.weight = F.softplus(w) * (self.bound / (units * _LOG2**2))
        self.gain = F.softplus(a) / self.bound
        self.shift = b
        self.phi = (self.weight, self.gain, self.shift)

    def inner(self, x: Tensor) -> tuple[Tensor, Tensor]:
        t = torch.tanh(torch.addcmul(self.shift, x.unsqueeze(-1), self.gain))
        y = self.slope * x + (self.weight * t).sum(dim=-1)
        dydx = self.slope + (self.weight * self.gain * (1 - t.square())).sum(dim=-1)
        return y, dydx

    def __repr__(self) -> str:
        return f"{type(self).__name__}(units={self.weight.shape[-1]}, bound={self.bound:g})"


class IntegratedPositiveNetworkTransform(LinearTailsTransform):
    r"""The integral of a positive one-hidden-layer network per feature, by quadrature.

    On :math:`[-B, B]`, with :math:`K` units and :math:`\lambda = -\log \epsilon`,

    .. math:: f(x) = C + \int_0^x g(t) \, dt, \qquad
        g(t) = \epsilon + \exp\left(\lambda \tanh \frac{h(t)}{\lambda}\right), \qquad
        h(t) = \frac{1}{K} \sum_{k=1}^{K} v_k
        \tanh\left(\operatorname{softplus}(a_k) \frac{t}{B} + b_k\right),

    so :math:`f' = g` lies within :math:`[2\epsilon, \epsilon + 1/\epsilon]` whatever the
    parameters; null parameters give :math:`f(x) = (1 + \epsilon) x`. The integral has no
    closed form and is computed by Gauss-Legendre quadrature; beyond :math:`[-B, B]`, :math:`f`
    continues along its tangent. The inverse is found by bisection within ``eps``.

    Arguments:
        v: The unit weights :math:`v`, with shape :math:`(*, K)`.
        a: The unit slopes :math:`a`, with shape :math:`(*, K)`.
        b: The unit shifts :math:`b`, with shape :math:`(*, K)`.
        C: The integration constant :math:`C`, with shape :math:`(*)`.
        bound: The half-width :math:`B` of the network part.
        slope: The minimum slope :math:`\epsilon`.
        eps: The tolerance of the inverse.
        nodes: The number of quadrature nodes.

    Example:
        >>> zeros = torch.zeros(4)
        >>> t = IntegratedPositiveNetworkTransform(zeros, zeros, zeros, torch.tensor(0.0))
        >>> t(torch.tensor([-1.0, 2.0]))
        tensor([-1.0010,  2.0020])

    References:
        | Unconstrained Monotonic Neural Networks (Wehenkel et al., 2019)
        | https://arxiv.org/abs/1908.05164
    """

    def __init__(
        self,
        v: Tensor,
        a: Tensor,
        b: Tensor,
        C: Tensor,
        bound: float = 5.0,
        slope: float = 1e-3,
        eps: float = 1e-6,
        nodes: int = 16,
    ) -> None:
        super().__init__(bound, eps)
        _check_units(type(self).__name__, v, a, b)
        if tuple(C.shape) != tuple(v.shape[:-1]):
            raise ValueError(
                f"C must have the batch shape of v, {tuple(v.shape[:-1])}, got {tuple(C.shape)}"
            )
        if not isinstance(nodes, int) or nodes < 1:
            raise ValueError(f"nodes must be a positive int, got {nodes!r}")
        self.slope = _check_slope(slope)
        self.log_bound = -math.log(self.slope)
        self.weight = v / v.shape[-1]
        self.gain = F.softplus(a) / self.bound
        self.shift = b
        self.C = C
        self.nodes = nodes
        self.phi = (self.weight, self.gain, self.shift, self.C)

    def integrand(self, t: Tensor) -> Tensor:
        """The positive function :math:`g(t)`, element-wise."""
        units = torch.tanh(torch.addcmul(self.shift, t.unsqueeze(-1), self.gain))
        h = (self.weight * units).sum(dim=-1)
        return self.slope + torch.exp(self.log_bound * torch.tanh(h / self.log_bound))

    def inner(self, x: Tensor) -> tuple[Tensor, Tensor]:
        parameters = (self.weight, self.gain, self.shift)
        integral = integrate(self.integrand, x, parameters, self.nodes, batch=self.C.shape)
        return integral + self.C, self.integrand(x)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(units={self.weight.shape[-1]}, bound={self.bound:g}, "
            f"nodes={self.nodes})"
        )
