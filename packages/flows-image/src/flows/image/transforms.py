r"""Bijections of images: tensors of shape :math:`(*, C, H, W)`, one event per image.

Every transform here treats the last three dimensions as one event: ``call_and_ladj`` returns
the image and its log-determinant of shape :math:`(*)`, summed over the image.

Example:
    >>> x = torch.arange(8.0).reshape(2, 1, 2, 2)
    >>> y, ladj = SqueezeTransform().call_and_ladj(x)
    >>> y.shape, ladj
    (torch.Size([2, 4, 1, 1]), tensor([0., 0.]))
    >>> torch.equal(SqueezeTransform().inv(y), x)
    True
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Size, Tensor
from torch.distributions import Transform as _TorchTransform
from torch.distributions import constraints

from flows.core.transforms.base import OnePassTransform, call_and_ladj, inverse_and_ladj

__all__ = [
    "AffineCouplingTransform",
    "InvertibleConv1x1Transform",
    "MultiScaleTransform",
    "SqueezeTransform",
    "check_image_shape",
]

_IMAGE = constraints.independent(constraints.real, 3)

#: ``(x) -> (shift, log_scale)`` of an affine map, from what the map may read.
Conditioner = Callable[[Tensor], tuple[Tensor, Tensor]]


def check_image_shape(name: str, x: Tensor, shape: Sequence[int]) -> None:
    """Raise :class:`ValueError` unless ``x`` has shape :math:`(*, C, H, W)` = ``(*, *shape)``."""
    if x.dim() < 3 or tuple(x.shape[-3:]) != tuple(shape):
        c, h, w = shape
        raise ValueError(
            f"{name} must hold images of shape (*, C, H, W) = (*, {c}, {h}, {w}), "
            f"got shape {tuple(x.shape)}"
        )


def _batch_zeros(x: Tensor) -> Tensor:
    return x.new_zeros(x.shape[:-3])


class _ImageTransform(OnePassTransform):
    domain = _IMAGE
    codomain = _IMAGE


class SqueezeTransform(_ImageTransform):
    r"""Trade space for channels: :math:`(C, H, W) \to (4C, H/2, W/2)`, volume preserved.

    Each :math:`2 \times 2` patch of a channel becomes four channels at one position, so that
    channel-wise layers after it see neighbouring pixels. ``inv`` undoes it exactly.

    Raises:
        ValueError: An image whose height or width is odd (the message names its shape).

    Example:
        >>> x = torch.arange(4.0).reshape(1, 2, 2)
        >>> SqueezeTransform()(x).flatten()
        tensor([0., 1., 2., 3.])
    """

    def forward_shape(self, shape: Sequence[int]) -> Size:
        *batch, c, h, w = shape
        return Size((*batch, 4 * c, h // 2, w // 2))

    def inverse_shape(self, shape: Sequence[int]) -> Size:
        *batch, c, h, w = shape
        return Size((*batch, c // 4, 2 * h, 2 * w))

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        *batch, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ValueError(
                f"squeeze splits each image into 2x2 patches, so its height and width must be "
                f"even; got images of shape (C, H, W) = {(c, h, w)} (crop or pad to "
                f"{(c, h + h % 2, w + w % 2)})"
            )
        y = x.reshape(*batch, c, h // 2, 2, w // 2, 2).movedim((-3, -1), (-4, -3))
        if x.dim() == 4:
            # Copied once into the channels-last layout that the coupling networks and the
            # 1x1 convolutions after it read without reordering (values as in (4C, H, W)).
            y = y.permute(0, 4, 5, 1, 2, 3).reshape(x.shape[0], h // 2, w // 2, 4 * c)
            return y.permute(0, 3, 1, 2), _batch_zeros(x)
        return y.reshape(*batch, 4 * c, h // 2, w // 2), _batch_zeros(x)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        *batch, c, h, w = y.shape
        x = y.reshape(*batch, c // 4, 2, 2, h, w).movedim((-4, -3), (-3, -1))
        x = x.reshape(*batch, c // 4, 2 * h, 2 * w)
        return x, _batch_zeros(y)


class InvertibleConv1x1Transform(_ImageTransform):
    r"""An invertible :math:`1 \times 1` convolution: :math:`y_{:, i, j} = W x_{:, i, j}`.

    The same channel mixing :math:`W` at every pixel, so
    :math:`\log |\det J| = H W \log |\det W|`.

    Arguments:
        weight: A function returning :math:`W`, of shape :math:`(C, C)`.
        inverse: A function returning :math:`W^{-1}`.
        log_abs_det: A function returning :math:`\log |\det W|`, a scalar.

    Example:
        >>> w = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
        >>> t = InvertibleConv1x1Transform(
        ...     lambda: w, lambda: torch.linalg.inv(w), lambda: w.det().abs().log()
        ... )
        >>> y, ladj = t.call_and_ladj(torch.ones(2, 3, 3))
        >>> y[:, 0, 0], ladj  # 9 pixels, each scaled in volume by 2
        (tensor([2., 2.]), tensor(6.2383))
    """

    def __init__(
        self,
        weight: Callable[[], Tensor],
        inverse: Callable[[], Tensor],
        log_abs_det: Callable[[], Tensor],
    ) -> None:
        super().__init__()
        self.weight = weight
        self.inverse = inverse
        self.log_abs_det = log_abs_det

    @staticmethod
    def _mix(w: Tensor, x: Tensor) -> Tensor:
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            # Channels-last pixels are the rows of an (N H W, C) matrix: one product, no copy.
            return F.linear(x.permute(0, 2, 3, 1), w).permute(0, 3, 1, 2)
        return torch.matmul(w, x.flatten(-2)).view(x.shape)

    def _ladj(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        return (self.log_abs_det() * (h * w)).expand(x.shape[:-3])

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self._mix(self.weight(), x), self._ladj(x)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self._mix(self.inverse(), y), -self._ladj(y)


def _kept(x: Tensor, start: int, stop: int) -> Tensor:
    """The channels outside ``start:stop``: a view when they are contiguous, no copy."""
    if start == 0:
        return x[..., stop:, :, :]
    if stop == x.shape[-3]:
        return x[..., :start, :, :]
    return torch.cat((x[..., :start, :, :], x[..., stop:, :, :]), dim=-3)


def _joined(x: Tensor, moved: Tensor, start: int, stop: int) -> Tensor:
    """``x`` with its channels ``start:stop`` replaced by ``moved``: one cat, no empty parts."""
    parts = [x[..., :start, :, :]] if start else []
    parts.append(moved)
    if stop < x.shape[-3]:
        parts.append(x[..., stop:, :, :])
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-3)


class AffineCouplingTransform(_ImageTransform):
    r"""An affine coupling of images: the pixels ``mask`` selects condition the others.

    With :math:`m` the mask, :math:`(b, s) = g(m \odot x)` and both zero where :math:`m = 1`,

    .. math:: y = m \odot x + (1 - m) \odot (x \exp(s) + b), \qquad
        \log |\det J| = \sum s .

    A channel-wise mask is given as a slice of channels (``mask=(start, stop)``: the channels
    transformed) so that only those are computed; a spatial mask as a tensor of shape
    :math:`(C, H, W)` or broadcastable to it.

    Arguments:
        conditioner: :math:`g`, from the masked image (the kept channels, for a slice) to the
            shift and log-scale of the transformed part.
        mask: ``(start, stop)``, the channels transformed, or a 0/1 tensor, 1 where kept.

    Example:
        >>> shift = lambda x: (torch.ones_like(x), torch.zeros_like(x))
        >>> t = AffineCouplingTransform(shift, mask=(1, 2))
        >>> t(torch.zeros(2, 1, 1)).flatten()
        tensor([0., 1.])
    """

    def __init__(self, conditioner: Conditioner, mask: tuple[int, int] | Tensor) -> None:
        super().__init__()
        self.conditioner = conditioner
        self.mask = mask

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if isinstance(self.mask, tuple):
            start, stop = self.mask
            shift, log_scale = self.conditioner(_kept(x, start, stop))
            moved = torch.addcmul(shift, x[..., start:stop, :, :], log_scale.exp())
            y = _joined(x, moved, start, stop)
        else:
            shift, log_scale = self.conditioner(x * self.mask)
            y = x * log_scale.exp() + shift
        return y, log_scale.sum(dim=(-3, -2, -1)).expand(y.shape[:-3])

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        if isinstance(self.mask, tuple):
            start, stop = self.mask
            shift, log_scale = self.conditioner(_kept(y, start, stop))
            moved = (y[..., start:stop, :, :] - shift) * (-log_scale).exp()
            x = _joined(y, moved, start, stop)
        else:
            shift, log_scale = self.conditioner(y * self.mask)
            x = (y - shift) * (-log_scale).exp()
        return x, -log_scale.sum(dim=(-3, -2, -1)).expand(x.shape[:-3])


class MultiScaleTransform(OnePassTransform):
    r"""A multi-scale image flow: stages of image transforms, each factoring out channels.

    Stage :math:`i` applies its transform to what is left of the image, then factors out its
    first ``split[i]`` channels as latents :math:`z_i`, normalized by a prior computed from the
    channels kept, :math:`z_i' = (z_i - \mu(h)) \exp(-\log \sigma(h))` (the learned prior
    :math:`p(z_i | h) = \mathcal{N}(\mu(h), \sigma(h)^2)` of Glow, written as a transform). The
    last stage's output is the last latent. The output is every latent, flattened and joined
    in stage order: a vector of :math:`C H W` values, the event of
    :class:`~flows.image.distributions.FactoredLatents`.

    Arguments:
        shape: The image shape :math:`(C, H, W)`.
        stages: Per stage, ``(transform, shape, split, prior)``: an image transform, the shape
            :math:`(C_i, H_i, W_i)` of its output, the channels factored out after it (all
            :math:`C_i` at the last stage) and the conditioner giving the prior's
            :math:`(\mu, \log \sigma)` from the channels kept, or ``None`` for a standard
            normal prior.

    Raises:
        ValueError: Images of another shape (the message names both).
    """

    domain = _IMAGE
    codomain = constraints.independent(constraints.real, 1)

    def __init__(
        self,
        shape: Sequence[int],
        stages: Sequence[tuple[_TorchTransform, tuple[int, int, int], int, Conditioner | None]],
    ) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.stages = list(stages)
        self.features = self.shape[0] * self.shape[1] * self.shape[2]

    def forward_shape(self, shape: Sequence[int]) -> Size:
        return Size((*shape[:-3], self.features))

    def inverse_shape(self, shape: Sequence[int]) -> Size:
        return Size((*shape[:-1], *self.shape))

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_image_shape("x", x, self.shape)
        latents = []
        total = None
        for transform, _, split, prior in self.stages:
            x, ladj = call_and_ladj(transform, x)
            z, x = x[..., :split, :, :], x[..., split:, :, :]
            if prior is not None:
                shift, log_scale = prior(x)
                z = (z - shift) * (-log_scale).exp()
                ladj = ladj - log_scale.sum(dim=(-3, -2, -1))
            total = ladj if total is None else total + ladj
            latents.append(z.flatten(-3))
        batch = torch.broadcast_shapes(*(z.shape[:-1] for z in latents))
        z = torch.cat([z.expand(*batch, z.shape[-1]) for z in latents], dim=-1)
        assert total is not None
        return z, total.expand(batch)

    def inverse_and_ladj(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if z.shape[-1] != self.features:
            raise ValueError(
                f"z must have shape (*, {self.features}) for images of shape {self.shape}, "
                f"got {tuple(z.shape)}"
            )
        shapes = [(split, h, w) for _, (_, h, w), split, _ in self.stages]
        parts = z.split([c * h * w for c, h, w in shapes], dim=-1)
        x = z.new_zeros((*z.shape[:-1], 0, *shapes[-1][1:]))
        total = None
        for (transform, _, _, prior), part, shape in zip(
            reversed(self.stages), reversed(parts), reversed(shapes), strict=True
        ):
            latent = part.unflatten(-1, shape)
            ladj = None
            if prior is not None:
                shift, log_scale = prior(x)
                latent = latent * log_scale.exp() + shift
                ladj = log_scale.sum(dim=(-3, -2, -1))
            batch = torch.broadcast_shapes(latent.shape[:-3], x.shape[:-3])
            x = torch.cat(
                (latent.expand(*batch, *latent.shape[-3:]), x.expand(*batch, *x.shape[-3:])),
                dim=-3,
            )
            x, back = inverse_and_ladj(transform, x)
            ladj = back if ladj is None else back + ladj
            total = ladj if total is None else total + ladj
        assert total is not None
        return x, total.expand(x.shape[:-3])
