r"""Lazy image layers: invertible 1x1 convolutions, affine couplings, squeezes, priors.

Each is a :class:`~flows.core.lazy.LazyTransform` whose forward pass, given a context
:math:`c`, builds a transform of images :math:`(*, C, H, W)` from
:mod:`flows.image.transforms`. A context is either a vector of :math:`K` features (a one-hot
class, say), shape :math:`(*, K)`, given to the networks as :math:`K` constant channels, or an
image of shape :math:`(*, K, H_c, W_c)`, average-pooled to each layer's resolution. The batch
dimensions of images and contexts broadcast.

Example:
    >>> layer = AffineCoupling((4, 8, 8), context=3, hidden_channels=16)
    >>> x, c = torch.randn(5, 4, 8, 8), torch.eye(3)[[0, 1, 2, 0, 1]]
    >>> y, ladj = layer(c).call_and_ladj(x)
    >>> torch.equal(y, x), ladj.detach()  # the last convolution starts at zero: identity
    (True, tensor([0., 0., 0., 0., 0.]))
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flows.core.lazy import LazyTransform
from flows.image.transforms import (
    AffineCouplingTransform,
    InvertibleConv1x1Transform,
    SqueezeTransform,
)

__all__ = [
    "AffineCoupling",
    "ConvNet",
    "DiagonalPrior",
    "InvertibleConv1x1",
    "Prior",
    "Squeeze",
    "context_channels",
    "image_shape",
]

ContextSpec = int | Sequence[int]


def image_shape(name: str, shape: Any, owner: str) -> tuple[int, int, int]:
    """``shape`` as ``(C, H, W)``, positive ints, or a :class:`ValueError` naming it."""
    if (
        not isinstance(shape, (tuple, list, torch.Size))
        or len(shape) != 3
        or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)
    ):
        raise ValueError(
            f"{owner}: {name} must be an image shape (C, H, W) of three positive ints, "
            f"got {shape!r}"
        )
    return (shape[0], shape[1], shape[2])


def context_channels(context: ContextSpec, owner: str) -> tuple[int, tuple[int, ...]]:
    """The channels a context adds to a network's input, and the context's event shape."""
    if isinstance(context, int) and not isinstance(context, bool):
        if context < 0:
            raise ValueError(f"{owner}: context must be >= 0, got {context}")
        return context, ((context,) if context else ())
    shape = image_shape("context", context, owner)
    return shape[0], shape


def _with_context(
    x: Tensor, c: Tensor | None, event: tuple[int, ...]
) -> tuple[Tensor, torch.Size]:
    """``x`` (and the context as channels at its resolution) flattened to ``(B, C', H, W)``."""
    batch = x.shape[:-3]
    if c is None or not event:
        return x.reshape(batch.numel(), *x.shape[-3:]), batch
    batch = torch.broadcast_shapes(batch, c.shape[: c.dim() - len(event)])
    h, w = x.shape[-2:]
    # Explicit sizes: the last scale's prior reads an image of no channels.
    x = x.expand(*batch, *x.shape[-3:]).reshape(batch.numel(), *x.shape[-3:])
    c = c.expand(*batch, *event).reshape(batch.numel(), *event)
    if len(event) == 1:
        maps = c[:, :, None, None].expand(-1, -1, h, w)
    elif c.shape[-2:] != (h, w):
        maps = F.adaptive_avg_pool2d(c, (h, w))
    else:
        maps = c
    return torch.cat((x, maps.to(x.dtype)), dim=1), batch


def _unflat(y: Tensor, batch: torch.Size) -> Tensor:
    return y.reshape(*batch, *y.shape[1:])


class ConvNet(nn.Sequential):
    r"""The coupling network: 3x3 conv, ReLU, 1x1 conv, ReLU, 3x3 conv that starts at zero.

    Its output is zero until trained, so the affine map it parameterizes starts as the
    identity. It computes in the channels-last memory layout, where oneDNN's convolutions of
    small images skip a reorder per call (a third faster on 4x4 images; BENCHMARKS.md,
    Images); its output keeps that layout.

    Arguments:
        in_channels: Input channels.
        out_channels: Output channels.
        hidden_channels: Width of the hidden layers.

    Example:
        >>> net = ConvNet(2, 4, hidden_channels=8)
        >>> net(torch.randn(1, 2, 5, 5)).abs().max()
        tensor(0., grad_fn=<MaxBackward1>)
    """

    def __init__(self, in_channels: int, out_channels: int, hidden_channels: int = 64) -> None:
        last = nn.Conv2d(hidden_channels, out_channels, 3, padding=1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(cast(Tensor, last.bias))
        super().__init__(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels, 1),
            nn.ReLU(inplace=True),
            last,
        )
        for module in self:
            if isinstance(module, nn.Conv2d):
                module.weight.data = module.weight.data.contiguous(
                    memory_format=torch.channels_last
                )

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(x.contiguous(memory_format=torch.channels_last))
        return y


def _affine(
    net: nn.Module, x: Tensor, c: Tensor | None, event: tuple[int, ...], clamp: float
) -> tuple[Tensor, Tensor]:
    """Shift and log-scale from ``net`` on ``x`` (and the context), the log-scale soft-clamped."""
    h, batch = _with_context(x, c, event)
    shift, raw = net(h).chunk(2, dim=1)
    # A soft clamp, zero at zero: the identity at initialization, no exploding scales.
    log_scale = torch.tanh(raw / clamp) * clamp
    return _unflat(shift, batch), _unflat(log_scale, batch)


class Squeeze(LazyTransform):
    r"""The lazy :class:`~flows.image.transforms.SqueezeTransform`: :math:`(C, H, W) \to
    (4C, H/2, W/2)`.

    Example:
        >>> Squeeze()()(torch.zeros(3, 1, 4, 6)).shape
        torch.Size([3, 4, 2, 3])
    """

    def forward(self, c: Any | None = None) -> SqueezeTransform:
        return SqueezeTransform()


class InvertibleConv1x1(LazyTransform):
    r"""An invertible 1x1 convolution, LU-parameterized: :math:`W = P L (U + \operatorname{diag}(
    \sigma e^{s}))`.

    :math:`P` is a fixed permutation, :math:`L` unit lower-triangular, :math:`U` strictly
    upper-triangular, :math:`\sigma` fixed signs and :math:`s` learned log-magnitudes, so that
    :math:`\log |\det W| = \sum_i s_i` costs :math:`O(C)` and the inverse two triangular
    solves. :math:`W` starts as a random rotation (Kingma & Dhariwal, 2018).

    Arguments:
        channels: The channels :math:`C`.

    Example:
        >>> conv = InvertibleConv1x1(3)
        >>> x = torch.randn(2, 3, 4, 4)
        >>> y, ladj = conv().call_and_ladj(x)
        >>> torch.allclose(conv().inv(y), x, atol=1e-5), ladj.abs().max() < 1e-4
        (True, tensor(True))
    """

    permutation: Tensor
    sign: Tensor
    lower_mask: Tensor

    def __init__(self, channels: int) -> None:
        super().__init__()
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise ValueError(
                f"InvertibleConv1x1: channels must be a positive int, got {channels!r}"
            )
        rotation, _ = torch.linalg.qr(torch.randn(channels, channels, dtype=torch.float64))
        p, lower, upper = torch.linalg.lu(rotation)
        diagonal = upper.diagonal()
        dtype = torch.get_default_dtype()  # drawn in float64, kept as every other parameter
        self.register_buffer("permutation", p.to(dtype))
        self.register_buffer("sign", diagonal.sign().to(dtype))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.lower = nn.Parameter(lower.to(dtype) * self.lower_mask)
        self.upper = nn.Parameter(upper.triu(1).to(dtype))
        self.log_diagonal = nn.Parameter(diagonal.abs().log().to(dtype))

    def _factors(self) -> tuple[Tensor, Tensor]:
        eye = torch.eye(self.lower.shape[0], dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        # The diagonal as a broadcast product with the identity: cheaper than torch.diag.
        upper = self.upper * self.lower_mask.T + eye * (self.sign * self.log_diagonal.exp())
        return lower, upper

    def weight(self) -> Tensor:
        """:math:`W = P L U`."""
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def inverse_weight(self) -> Tensor:
        r""":math:`W^{-1} = U^{-1} L^{-1} P^\top`, by triangular solves."""
        lower, upper = self._factors()
        inverse = torch.linalg.solve_triangular(
            lower, self.permutation.T, upper=False, unitriangular=True
        )
        return torch.linalg.solve_triangular(upper, inverse, upper=True)

    def log_abs_det(self) -> Tensor:
        return self.log_diagonal.sum()

    def forward(self, c: Any | None = None) -> InvertibleConv1x1Transform:
        return InvertibleConv1x1Transform(self.weight, self.inverse_weight, self.log_abs_det)


class AffineCoupling(LazyTransform):
    r"""An affine coupling of images whose shift and log-scale come from a :class:`ConvNet`.

    With ``mask="channel"``, half the channels (the first half if ``parity`` is 0, else the
    second) condition an affine map of the other half; with ``mask="checkerboard"``, the
    pixels where :math:`(i + j + \text{parity})` is even condition the others. The log-scale is
    soft-clamped to :math:`(-\text{clamp}, \text{clamp})` by a tanh.

    Arguments:
        shape: The image shape :math:`(C, H, W)`.
        context: The context: 0 for none, :math:`K` features, or an image shape
            :math:`(K, H_c, W_c)`.
        mask: ``"channel"`` or ``"checkerboard"``.
        parity: 0 or 1, which half conditions the other.
        hidden_channels: Width of the network.
        clamp: Bound of the log-scale.
    """

    checkerboard: Tensor

    def __init__(
        self,
        shape: Sequence[int],
        context: ContextSpec = 0,
        mask: str = "channel",
        parity: int = 0,
        hidden_channels: int = 64,
        clamp: float = 2.0,
    ) -> None:
        super().__init__()
        owner = "AffineCoupling"
        self.shape = image_shape("shape", shape, owner)
        extra, self.event = context_channels(context, owner)
        c, h, w = self.shape
        if mask not in ("channel", "checkerboard"):
            raise ValueError(f"{owner}: mask must be 'channel' or 'checkerboard', got {mask!r}")
        if parity not in (0, 1):
            raise ValueError(f"{owner}: parity must be 0 or 1, got {parity!r}")
        if mask == "channel" and c < 2:
            raise ValueError(f"{owner}: a channel mask needs at least 2 channels, got {c}")
        self.mask = mask
        self.clamp = float(clamp)
        if mask == "channel":
            half = c // 2
            self.moved = (half, c) if parity == 0 else (0, c - half)
            kept = c - (self.moved[1] - self.moved[0])
            self.net = ConvNet(kept + extra, 2 * (c - kept), hidden_channels)
        else:
            i, j = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            self.register_buffer("checkerboard", ((i + j + parity) % 2 == 0).float())
            self.net = ConvNet(c + extra, 2 * c, hidden_channels)

    def forward(self, c: Tensor | None = None) -> AffineCouplingTransform:
        if self.mask == "channel":

            def conditioner(x: Tensor) -> tuple[Tensor, Tensor]:
                return _affine(self.net, x, c, self.event, self.clamp)

            return AffineCouplingTransform(conditioner, self.moved)
        keep = self.checkerboard

        def masked(x: Tensor) -> tuple[Tensor, Tensor]:
            shift, log_scale = _affine(self.net, x, c, self.event, self.clamp)
            return shift * (1 - keep), log_scale * (1 - keep)

        return AffineCouplingTransform(masked, keep)


class Prior(nn.Module):
    r"""The learned prior :math:`\mathcal{N}(\mu, \sigma^2)` of factored-out latents.

    Computes :math:`(\mu, \log \sigma)` of ``channels`` latent channels from the channels kept
    (``kept`` of them; 0 for the last scale) and the context, with a :class:`ConvNet` that
    starts at zero: a standard normal prior until trained.

    Arguments:
        channels: The latent channels.
        kept: The channels it reads.
        context: As for :class:`AffineCoupling`.
        hidden_channels: Width of the network.
    """

    def __init__(
        self, channels: int, kept: int, context: ContextSpec = 0, hidden_channels: int = 64
    ) -> None:
        super().__init__()
        extra, self.event = context_channels(context, "Prior")
        self.net = ConvNet(kept + extra, 2 * channels, hidden_channels)

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h, batch = _with_context(x, c, self.event)
        shift, log_scale = self.net(h).chunk(2, dim=1)
        return _unflat(shift, batch), _unflat(log_scale, batch)


class DiagonalPrior(nn.Module):
    r"""A learned normal prior of latents, one mean and scale per value, starting standard.

    Arguments:
        shape: The latents' shape :math:`(C, H, W)`.
    """

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        shape = image_shape("shape", shape, "DiagonalPrior")
        self.loc = nn.Parameter(torch.zeros(shape))
        self.log_scale = nn.Parameter(torch.zeros(shape))

    def forward(self, x: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return self.loc, self.log_scale
