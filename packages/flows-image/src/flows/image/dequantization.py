r"""From discrete images to densities: dequantization and bits per dimension.

An image of :math:`D` values on :math:`K` levels, :math:`k \in \{0, \dots, K - 1\}^D`, has a
probability, not a density. A flow models the continuous
:math:`x = (k + u) / K \in [0, 1)^D`, with noise :math:`u \in [0, 1)^D` drawn from
:math:`q(u | k)`; then (Theis et al., 2016; Ho et al., 2019)

.. math:: \log P(k) \geq \mathbb{E}_{q(u | k)} \left[ \log p(x) - D \log K - \log q(u | k)
    \right],

where :math:`-D \log K` is the log-determinant of :math:`x \mapsto K x`, the discrete-to-continuous
correction. The bound is reported in bits per dimension,
:math:`-\log_2 P(k) / D`. Uniform dequantization takes :math:`q = \mathcal{U}[0, 1)^D`
(:math:`\log q = 0`); variational dequantization learns :math:`q` as a flow conditioned on
:math:`k`.

Example:
    >>> # A density uniform on the unit cube: each value is one of 256 levels, 8 bits.
    >>> bits_per_dim(torch.zeros(2), dims=3 * 32 * 32, levels=256)
    tensor([8., 8.])
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from flows.image.layers import image_shape

__all__ = [
    "Dequantization",
    "UniformDequantization",
    "VariationalDequantization",
    "bits_per_dim",
    "check_levels",
    "quantize",
]


def check_levels(levels: Any, owner: str) -> int:
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 2:
        raise ValueError(f"{owner}: levels must be an int >= 2, got {levels!r}")
    return levels


def bits_per_dim(log_prob: Tensor, dims: int, levels: int) -> Tensor:
    r"""Bits per dimension of discrete images from the log-density of their dequantization.

    .. math:: \text{bpd} = -\frac{\log p(x) - \log q(u | k) - D \log K}{D \log 2}

    Arguments:
        log_prob: :math:`\log p(x) - \log q(u | k)` in nats, for :math:`x = (k + u) / K`
            (any shape).
        dims: The values :math:`D` per image, :math:`C H W`.
        levels: The levels :math:`K` of each value.

    Example:
        >>> # A standard normal density at x = 0 on 17 levels (8x8 digits, one channel):
        >>> log_p = torch.tensor(-64 * 0.5 * math.log(2 * math.pi))
        >>> bits_per_dim(log_p, dims=64, levels=17)  # (log(2 pi) / 2 + log 17) / log 2
        tensor(5.4132)
    """
    dims = int(dims)
    return -(log_prob - dims * math.log(levels)) / (dims * math.log(2))


def quantize(x: Tensor, levels: int) -> Tensor:
    r"""The levels :math:`\lfloor K x \rfloor`, clamped to :math:`\{0, \dots, K - 1\}`, as
    integers: what a sample :math:`x \in [0, 1]^D` is as a discrete image.

    Example:
        >>> quantize(torch.tensor([-0.2, 0.0, 0.49, 0.99, 1.3]), levels=2)
        tensor([0, 0, 0, 1, 1])
    """
    return (x * levels).floor().clamp(0, levels - 1).long()


def _dequantize(k: Tensor, u: Tensor, levels: int) -> Tensor:
    r""":math:`x = (k + u) / K`, kept strictly below :math:`(k + 1) / K`, in the level's cell.

    For :math:`u` within rounding of 1 (a uniform draw near 1, a saturated sigmoid), ``k + u``
    and the division round up onto :math:`(k + 1) / K`: the next level's value, and 1 at the
    top level, outside :math:`[0, 1)`. Such values go to the float just below.
    """
    x = (k + u) / levels
    upper = torch.nextafter((k + 1) / levels, x.new_zeros(()))
    return torch.minimum(x, upper)


class Dequantization(nn.Module):
    r"""Base of dequantizers: ``forward(k, c)`` returns :math:`x = (k + u) / K` and
    :math:`\log q(u | k)`, shape :math:`(*)`.

    Arguments:
        levels: The levels :math:`K`.
    """

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.levels = check_levels(levels, type(self).__name__)

    def forward(self, k: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class UniformDequantization(Dequantization):
    r"""Uniform noise: :math:`u \sim \mathcal{U}[0, 1)^D`, :math:`\log q(u | k) = 0`.

    Example:
        >>> k = torch.tensor([[[[0, 3]]]])  # one image of shape (1, 1, 2)
        >>> x, log_q = UniformDequantization(levels=4)(k)
        >>> bool(0 <= x[..., 0] < 0.25), bool(0.75 <= x[..., 1] < 1), log_q
        (True, True, tensor([0.]))
    """

    def forward(self, k: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        dtype = k.dtype if k.is_floating_point() else torch.get_default_dtype()
        u = torch.rand(k.shape, dtype=dtype, device=k.device)
        return _dequantize(k.to(dtype), u, self.levels), u.new_zeros(k.shape[:-3])


class VariationalDequantization(Dequantization):
    r"""Learned noise: :math:`u = \operatorname{sigmoid}(v)`, :math:`v` from a flow conditioned
    on the image :math:`k` (Ho et al., 2019, Flow++).

    :math:`q(v | k)` is an image flow (by default a one-scale :class:`~flows.image.Glow`)
    whose every network reads :math:`k / K - 1/2` as a context image; the log-density of
    :math:`u` subtracts the sigmoid's log-derivative,
    :math:`\log q(u | k) = \log q(v | k) - \sum \log \sigma(v) \sigma(-v)`. Its samples are
    reparameterized, so training the model's bound trains :math:`q` too.

    Arguments:
        levels: The levels :math:`K`.
        shape: The image shape :math:`(C, H, W)`.
        flow: The flow :math:`q(v | k)`, a lazy distribution over images ``shape`` taking a
            context image of that shape, or ``None`` for a Glow with the options below.
        depth: Steps of the default Glow.
        hidden_channels: Width of its networks.

    Example:
        >>> deq = VariationalDequantization(17, (1, 4, 4), depth=1, hidden_channels=8)
        >>> x, log_q = deq(torch.randint(17, (5, 1, 4, 4)))
        >>> x.shape, log_q.shape
        (torch.Size([5, 1, 4, 4]), torch.Size([5]))
    """

    def __init__(
        self,
        levels: int,
        shape: Sequence[int],
        flow: nn.Module | None = None,
        depth: int = 2,
        hidden_channels: int = 32,
    ) -> None:
        super().__init__(levels)
        self.shape = image_shape("shape", shape, "VariationalDequantization")
        if flow is None:
            from flows.image.presets import Glow

            flow = Glow(
                self.shape, self.shape, scales=1, depth=depth, hidden_channels=hidden_channels
            )
        self.flow = flow

    def forward(self, k: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        zero = getattr(self.flow, "zero", None)  # an ImageFlow's buffer: its dtype
        dtype = zero.dtype if isinstance(zero, Tensor) else torch.get_default_dtype()
        context = k.to(dtype) / self.levels - 0.5
        v, log_q = self.flow(context).rsample_and_log_prob()
        u = torch.sigmoid(v)
        log_q = log_q - (nn.functional.logsigmoid(v) + nn.functional.logsigmoid(-v)).sum(
            dim=(-3, -2, -1)
        )
        return _dequantize(k.to(dtype), u, self.levels), log_q
