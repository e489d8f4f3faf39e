r"""Multi-scale image flows: the lazy :class:`ImageFlow` and the Glow and RealNVP presets.

A multi-scale flow transforms an image :math:`(C, H, W)` scale by scale: each scale squeezes
the image to half its height and width (four times the channels), transforms it, and factors
out half of its channels as latents; the last scale's output is the last latent. The latents
follow a :class:`~flows.image.distributions.FactoredLatents` base, each scale's under a
standard normal, or a learned normal prior computed from the channels kept (Glow).

Example:
    >>> flow = Glow((1, 8, 8), scales=2, depth=2, hidden_channels=8)
    >>> x = torch.rand(5, 1, 8, 8)
    >>> flow().log_prob(x).shape, flow().sample((3,)).shape
    (torch.Size([5]), torch.Size([3, 1, 8, 8]))
    >>> flow.latent_shapes
    [(2, 4, 4), (8, 2, 2)]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

import torch
from torch import Tensor, nn

from flows.core.distributions.flow import NormalizingFlow
from flows.core.lazy import LazyDistribution, LazyTransform
from flows.core.presets import Preset
from flows.core.transforms.base import ComposedTransform
from flows.image.distributions import FactoredLatents
from flows.image.layers import (
    AffineCoupling,
    ContextSpec,
    DiagonalPrior,
    InvertibleConv1x1,
    Prior,
    Squeeze,
    context_channels,
    image_shape,
)
from flows.image.transforms import MultiScaleTransform

__all__ = ["Glow", "ImageFlow", "RealNVPImage"]

Shape = tuple[int, int, int]
#: ``(shape, scale) -> lazy transforms`` of one scale, on images of ``shape``.
StepFactory = Callable[[Shape, int], list[LazyTransform]]
PRIORS = ("conditional", "diagonal", "standard")


class ImageFlow(LazyDistribution):
    r"""A lazy multi-scale flow over images :math:`(C, H, W)`.

    ``flow(c)`` is a :class:`~flows.core.distributions.NormalizingFlow` with event shape
    :math:`(C, H, W)`: ``log_prob`` of images :math:`(N, C, H, W)` has shape :math:`(N,)`, and
    ``sample(shape)`` returns :math:`(*\text{shape}, C, H, W)`; with a batch of contexts, the
    flow has their batch shape.

    Arguments:
        shape: The image shape :math:`(C, H, W)`.
        context: 0 for none, :math:`K` context features (a one-hot class, say), or the shape
            :math:`(K, H_c, W_c)` of a context image.
        scales: The number of scales :math:`L`; :math:`H` and :math:`W` must be multiples of
            :math:`2^L`.
        before: The lazy transforms of a scale before its squeeze, from the image shape and
            the scale's index.
        after: Those after the squeeze.
        prior: The prior of the latents: ``"conditional"``, a normal whose mean and scale a
            :class:`~flows.image.layers.Prior` network computes from the channels kept (and the
            context; the last scale's latents get one only with a context); ``"diagonal"``, a
            learned mean and scale per latent value (:class:`~flows.image.layers.DiagonalPrior`,
            every scale); or ``"standard"``, the standard normal.
        hidden_channels: Width of the prior networks.

    Raises:
        ValueError: A shape that the scales cannot halve (the message names the shape and
            the sizes that would work), or an invalid context or count.
    """

    zero: Tensor
    #: The rank of an event: what tells the command that a preset models images.
    event_rank: ClassVar[int] = 3

    def __init__(
        self,
        shape: Sequence[int],
        context: ContextSpec,
        scales: int,
        before: StepFactory,
        after: StepFactory,
        prior: str = "conditional",
        hidden_channels: int = 64,
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        if prior not in PRIORS:
            raise ValueError(f"{owner}: prior must be one of {', '.join(PRIORS)}, got {prior!r}")
        self.shape = image_shape("shape", shape, owner)
        extra, self.event = context_channels(context, owner)
        if not isinstance(scales, int) or isinstance(scales, bool) or scales < 1:
            raise ValueError(f"{owner}: scales must be a positive int, got {scales!r}")
        c, h, w = self.shape
        unit = 2**scales
        if h % unit or w % unit:
            fits = (c, max(unit, h - h % unit), max(unit, w - w % unit))
            raise ValueError(
                f"{owner}: images of shape (C, H, W) = {self.shape} cannot go through {scales} "
                f"scale(s): each squeezes H and W by half, so both must be multiples of "
                f"2**{scales} = {unit}; crop or pad them (e.g. to {fits}) or use fewer scales"
            )
        self.stages = nn.ModuleList()
        self.priors = nn.ModuleList()
        self.splits: list[int] = []
        self.stage_shapes: list[Shape] = []
        self.latent_shapes: list[Shape] = []
        for i in range(scales):
            steps = before((c, h, w), i)
            c, h, w = 4 * c, h // 2, w // 2
            steps = [*steps, Squeeze(), *after((c, h, w), i)]
            self.stages.append(nn.ModuleList(steps))
            self.stage_shapes.append((c, h, w))
            last = i == scales - 1
            split = c if last else c // 2
            self.splits.append(split)
            self.latent_shapes.append((split, h, w))
            if prior == "conditional" and (not last or extra):
                self.priors.append(Prior(split, c - split, context, hidden_channels))
            elif prior == "diagonal":
                self.priors.append(DiagonalPrior((split, h, w)))
            else:
                self.priors.append(nn.Identity())  # a standard normal
            c -= split
        self.register_buffer("zero", torch.zeros(()))

    @property
    def features(self) -> int:
        """:math:`C H W`, the values in an image."""
        return self.shape[0] * self.shape[1] * self.shape[2]

    def _context(self, c: Tensor | None) -> torch.Size:
        """The batch shape of a context, after checking its shape."""
        if not self.event:
            if c is not None:
                raise ValueError(f"{type(self).__name__} is unconditional; got a context c")
            return torch.Size()
        if (
            c is None
            or c.dim() < len(self.event)
            or tuple(c.shape[-len(self.event) :]) != (self.event)
        ):
            got = None if c is None else tuple(c.shape)
            raise ValueError(
                f"{type(self).__name__} is conditional: c must have shape "
                f"(*, {', '.join(map(str, self.event))}), got {got}"
            )
        return c.shape[: c.dim() - len(self.event)]

    def forward(self, c: Tensor | None = None) -> NormalizingFlow:
        r"""Return :math:`p(X | c)`, over images :math:`(C, H, W)`.

        Arguments:
            c: The context (of shape :math:`(*, K)` or :math:`(*, K, H_c, W_c)`), or ``None``.
        """
        batch = self._context(c)
        stages = []
        for steps, shape, split, prior in zip(
            self.stages, self.stage_shapes, self.splits, self.priors, strict=True
        ):
            transform = ComposedTransform(*(step(c) for step in cast(nn.ModuleList, steps)))
            conditioner = None
            if isinstance(prior, (Prior, DiagonalPrior)):
                conditioner = _bound(prior, c)
            stages.append((transform, shape, split, conditioner))
        base = FactoredLatents.standard(self.latent_shapes, self.zero.dtype, self.zero.device)
        if batch:
            base = base.expand(batch)
        return NormalizingFlow(MultiScaleTransform(self.shape, stages), base)


def _bound(
    prior: Prior | DiagonalPrior, c: Tensor | None
) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    return lambda x: prior(x, c)


def _check_count(owner: str, name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive int, got {value!r}")
    return value


class Glow(Preset, ImageFlow):
    r"""Glow: at each scale, a squeeze then ``depth`` steps of actnorm, invertible 1x1
    convolution and channel-wise affine coupling; half the channels factored out under a
    learned prior.

    Each step is :class:`flows.core.ActNorm` of shape :math:`(C, 1, 1)` (initialised from the
    first training batch), :class:`~flows.image.layers.InvertibleConv1x1` (LU) and
    :class:`~flows.image.layers.AffineCoupling` with a channel mask, whose network's last
    layer starts at zero. A context (a class as :math:`K` features, or an image) reaches every
    coupling and prior network; the last scale's latents then also get a learned prior.

    References:
        Glow: Generative Flow with Invertible 1x1 Convolutions (Kingma & Dhariwal, 2018),
        https://arxiv.org/abs/1807.03039

    Arguments:
        shape: The image shape :math:`(C, H, W)`.
        context: 0, :math:`K` context features, or a context image shape :math:`(K, H, W)`.
        scales: The number of scales :math:`L` (:math:`H` and :math:`W` multiples of
            :math:`2^L`).
        depth: Steps per scale :math:`K`.
        hidden_channels: Width of the coupling and prior networks.
        clamp: Bound of the couplings' log-scales.
        prior: The latents' prior, ``"conditional"`` (Glow's), ``"diagonal"`` or
            ``"standard"`` (see :class:`ImageFlow`).

    Example:
        >>> flow = Glow((3, 8, 8), context=10, scales=2, depth=1, hidden_channels=8)
        >>> label = torch.eye(10)[[3, 7]]
        >>> flow(label).sample((4,)).shape
        torch.Size([4, 2, 3, 8, 8])
    """

    def __init__(
        self,
        shape: Sequence[int],
        context: int | Sequence[int] = 0,
        scales: int = 2,
        depth: int = 8,
        hidden_channels: int = 64,
        clamp: float = 2.0,
        prior: str = "conditional",
    ) -> None:
        from flows.core import ActNorm

        _check_count("Glow", "depth", depth)

        def after(shape: Shape, scale: int) -> list[LazyTransform]:
            steps: list[LazyTransform] = []
            for _ in range(depth):
                steps += [
                    ActNorm((shape[0], 1, 1)),
                    InvertibleConv1x1(shape[0]),
                    AffineCoupling(
                        shape, context, "channel", hidden_channels=hidden_channels, clamp=clamp
                    ),
                ]
            return steps

        super().__init__(
            shape,
            context,
            scales,
            lambda shape, scale: [],
            after,
            prior=prior,
            hidden_channels=hidden_channels,
        )


class RealNVPImage(Preset, ImageFlow):
    r"""RealNVP for images: at each scale, ``depth`` checkerboard couplings, a squeeze, then
    ``depth`` channel-wise couplings; half the channels factored out under a standard normal.

    The masks alternate between couplings, and each coupling is followed by
    :class:`flows.core.ActNorm` of shape :math:`(C, 1, 1)` where the paper used batch
    normalization (ActNorm needs no batch statistics at sampling time). Coupling networks are
    :class:`~flows.image.layers.ConvNet`\ s whose last layer starts at zero.

    References:
        Density estimation using Real NVP (Dinh et al., 2017),
        https://arxiv.org/abs/1605.08803

    Arguments:
        shape: The image shape :math:`(C, H, W)`.
        context: 0, :math:`K` context features, or a context image shape :math:`(K, H, W)`.
        scales: The number of scales :math:`L`.
        depth: Couplings of each mask type per scale.
        hidden_channels: Width of the coupling networks.
        clamp: Bound of the couplings' log-scales.

    Example:
        >>> flow = RealNVPImage((1, 4, 4), scales=1, depth=2, hidden_channels=8)
        >>> flow().log_prob(torch.rand(2, 1, 4, 4)).shape
        torch.Size([2])
    """

    def __init__(
        self,
        shape: Sequence[int],
        context: int | Sequence[int] = 0,
        scales: int = 2,
        depth: int = 3,
        hidden_channels: int = 64,
        clamp: float = 2.0,
    ) -> None:
        from flows.core import ActNorm

        _check_count("RealNVPImage", "depth", depth)

        def couplings(mask: str) -> StepFactory:
            def steps(shape: Shape, scale: int) -> list[LazyTransform]:
                layers: list[LazyTransform] = []
                for i in range(depth):
                    layers += [
                        AffineCoupling(
                            shape,
                            context,
                            mask,
                            parity=i % 2,
                            hidden_channels=hidden_channels,
                            clamp=clamp,
                        ),
                        ActNorm((shape[0], 1, 1)),
                    ]
                return layers

            return steps

        super().__init__(
            shape,
            context,
            scales,
            couplings("checkerboard"),
            couplings("channel"),
            prior="conditional" if context_channels(context, "RealNVPImage")[0] else "standard",
            hidden_channels=hidden_channels,
        )
