r"""The NPE estimator's training step written out by hand in plain torch: the speed baseline.

*bare* is what the bench's NSF costs in eager PyTorch with no library around it: theta and x
standardized as sbi's ``z_score_*="independent"`` does, five masked autoregressive transforms
(MADE networks of hidden (50, 50), ReLU, context into every layer's input), each a
rational-quadratic spline of 10 bins on [-5, 5] (identity outside, derivatives 1 at the
edges), the feature order reversed between transforms, a standard normal base. Everything is
recorded by autograd; the spline is the textbook algebra (softmax widths, cumulative knots,
``searchsorted``, gathers). *floor* is bare's five networks alone, no spline, no base: the
least any step with these networks can cost.

Both expose ``loss(theta, x)`` and ``parameters()``, the two things ``steps.py`` calls.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["BareNSF", "NetworksFloor"]

BINS, BOUND, MIN_SIZE, MIN_DERIVATIVE = 10, 5.0, 1e-3, 1e-3
PARAMETERS_PER_FEATURE = 3 * BINS - 1  # widths, heights, interior derivatives
LOG_TWO_PI = math.log(2 * math.pi)


class MADE(nn.Module):
    """A masked MLP: output block ``i`` sees the context and features ``< i`` only."""

    def __init__(self, features: int, context: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        inputs = torch.cat([torch.arange(1, features + 1), torch.zeros(context, dtype=torch.long)])
        degrees = [inputs] + [torch.arange(h) % features for h in hidden]
        outputs = torch.arange(1, features + 1).repeat_interleave(PARAMETERS_PER_FEATURE)
        self.layers = nn.ModuleList()
        for i, (before, after) in enumerate(zip(degrees, [*degrees[1:], outputs], strict=True)):
            last = i == len(hidden)
            mask = (
                (before[None, :] < after[:, None]) if last else (before[None, :] <= after[:, None])
            )
            layer = nn.Linear(len(before), len(after))
            layer.register_buffer("mask", mask.float())
            self.layers.append(layer)

    def forward(self, h: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            if i:
                h = torch.relu(h)
            h = F.linear(h, layer.weight * layer.mask, layer.bias)
        return h


def _knots(unnormalized: Tensor) -> Tensor:
    sizes = MIN_SIZE + (1 - MIN_SIZE * BINS) * torch.softmax(unnormalized, dim=-1)
    return F.pad(torch.cumsum(sizes, dim=-1), (1, 0)) * 2 * BOUND - BOUND


def spline(x: Tensor, params: Tensor) -> tuple[Tensor, Tensor]:
    """The rational-quadratic spline and its log-derivative, element-wise over ``x``."""
    xs = _knots(params[..., :BINS])
    ys = _knots(params[..., BINS : 2 * BINS])
    interior = MIN_DERIVATIVE + F.softplus(params[..., 2 * BINS :])
    ds = F.pad(interior, (1, 1), value=1.0)
    inside = (x > -BOUND) & (x < BOUND)
    xc = x.clamp(-BOUND, BOUND)
    k = torch.searchsorted(xs[..., 1:-1].contiguous(), xc[..., None]).clamp(max=BINS - 1)
    x0, x1 = xs.gather(-1, k)[..., 0], xs.gather(-1, k + 1)[..., 0]
    y0, y1 = ys.gather(-1, k)[..., 0], ys.gather(-1, k + 1)[..., 0]
    d0, d1 = ds.gather(-1, k)[..., 0], ds.gather(-1, k + 1)[..., 0]
    w, h = x1 - x0, y1 - y0
    s = h / w
    xi = (xc - x0) / w
    between = xi * (1 - xi)
    denominator = s + (d0 + d1 - 2 * s) * between
    y = y0 + h * (s * xi**2 + d0 * between) / denominator
    slope = s**2 * (d1 * xi**2 + 2 * s * between + d0 * (1 - xi) ** 2) / denominator**2
    return torch.where(inside, y, x), torch.where(inside, slope.log(), torch.zeros_like(x))


class _Standardized(nn.Module):
    def __init__(self, theta: Tensor, x: Tensor) -> None:
        super().__init__()
        self.register_buffer("theta_mean", theta.mean(0))
        self.register_buffer("theta_std", theta.std(0))
        self.register_buffer("x_mean", x.mean(0))
        self.register_buffer("x_std", x.std(0))

    def standardize(self, theta: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Standardized theta and x, and the log-determinant of theta's standardization."""
        return (
            (theta - self.theta_mean) / self.theta_std,
            (x - self.x_mean) / self.x_std,
            -self.theta_std.log().sum(),
        )


class BareNSF(_Standardized):
    """The bench's NSF estimator in plain torch, trained by ``loss``: ``-log p(theta | x)``."""

    def __init__(self, theta: Tensor, x: Tensor, transforms: int = 5) -> None:
        super().__init__(theta, x)
        self.features = theta.shape[-1]
        self.networks = nn.ModuleList(
            MADE(self.features, x.shape[-1], (50, 50)) for _ in range(transforms)
        )

    def loss(self, theta: Tensor, x: Tensor) -> Tensor:
        z, c, log_det = self.standardize(theta, x)
        for i, network in enumerate(self.networks):
            if i:
                z = z.flip(-1)
            params = network(torch.cat([z, c], -1)).unflatten(-1, (self.features, -1))
            z, ladj = spline(z, params)
            log_det = log_det + ladj.sum(-1)
        log_base = -0.5 * (z**2).sum(-1) - 0.5 * self.features * LOG_TWO_PI
        return -(log_base + log_det)


class NetworksFloor(BareNSF):
    """Bare's networks alone on the same inputs: the step's cost without any spline."""

    def loss(self, theta: Tensor, x: Tensor) -> Tensor:
        z, c, _ = self.standardize(theta, x)
        total = z.new_zeros(z.shape[0])
        for network in self.networks:
            total = total + network(torch.cat([z, c], -1)).square().mean(-1)
        return total
