r"""Coupling transforms: half the features transformed given the other half."""

from __future__ import annotations

__all__ = ["CouplingTransform"]

from collections.abc import Callable

import torch
from torch import Tensor
from torch.distributions import Transform as _TorchTransform
from torch.distributions import constraints

from flows.core.transforms.base import (
    OnePassTransform,
    call_and_ladj,
    inverse_and_ladj,
    sum_rightmost,
)


class CouplingTransform(OnePassTransform):
    r"""A coupling transformation :math:`y_a = x_a`, :math:`y_b = f_{x_a}(x_b)`.

    The features selected by ``mask`` (:math:`x_a`) are kept; the others (:math:`x_b`) go
    through the transform :math:`f_{x_a}` returned by the meta-function given :math:`x_a`.
    The Jacobian is block-triangular, so :math:`\log |\det J| = \log |\det J_{f_{x_a}}(x_b)|`,
    and the inverse is exact in one pass: :math:`x_b = f_{x_a}^{-1}(y_b)`.

    The feature indices are computed when the transform is built, from ``mask`` (a device
    synchronization when the mask is on a GPU), unless given as ``indices``: a lazy layer that
    builds a transform per forward pass computes them once and passes them.

    Arguments:
        meta: A function :math:`x_a \mapsto f_{x_a}` returning a transformation.
        mask: A boolean vector of the features, ``True`` for those kept.
        indices: The index tensors ``(kept, changed)`` of ``mask.nonzero()`` and
            ``(~mask).nonzero()``, if already known; they are not checked.

    Example:
        >>> from flows.core.transforms import AdditiveTransform
        >>> mask = torch.tensor([True, False, True])
        >>> t = CouplingTransform(lambda xa: AdditiveTransform(xa.sum(-1, keepdim=True)), mask)
        >>> y, ladj = t.call_and_ladj(torch.tensor([1.0, 2.0, 3.0]))
        >>> y, ladj
        (tensor([1., 6., 3.]), tensor(0.))
        >>> t.inv(y)
        tensor([1., 2., 3.])
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector

    def __init__(
        self,
        meta: Callable[[Tensor], _TorchTransform],
        mask: Tensor,
        *,
        indices: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        super().__init__()
        if not callable(meta):
            raise TypeError(f"meta must be callable, got {type(meta).__name__}")
        if not isinstance(mask, Tensor) or mask.dtype is not torch.bool or mask.dim() != 1:
            raise TypeError(f"mask must be a 1-D boolean tensor, got {_describe(mask)}")
        self.meta = meta
        self.mask = mask
        if indices is not None:
            # Precomputed once by the caller (e.g. a lazy layer): no work, no device sync.
            self.kept, self.changed = indices
            return
        self.kept = mask.nonzero().squeeze(-1)
        self.changed = (~mask).nonzero().squeeze(-1)
        if self.kept.numel() == 0 or self.changed.numel() == 0:
            raise ValueError(
                f"mask must keep some features and transform others, got {mask.tolist()}"
            )

    def _split(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x.index_select(-1, self.kept), x.index_select(-1, self.changed)

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x_a, x_b = self._split(x)
        transform = self.meta(x_a)
        y_b, ladj = call_and_ladj(transform, x_b)
        y = _merge(x, self.changed, y_b)
        return y, sum_rightmost(ladj, 1 - transform.domain.event_dim)

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        y_a, y_b = self._split(y)
        transform = self.meta(y_a)
        x_b, ladj = inverse_and_ladj(transform, y_b)
        x = _merge(y, self.changed, x_b)
        return x, sum_rightmost(ladj, 1 - transform.domain.event_dim)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(mask={self.mask.tolist()})"


def _merge(full: Tensor, index: Tensor, part: Tensor) -> Tensor:
    # The meta transform may broadcast (batched parameters): bring the kept part along.
    batch = torch.broadcast_shapes(full.shape[:-1], part.shape[:-1])
    full = full.expand(*batch, full.shape[-1])
    part = part.expand(*batch, part.shape[-1])
    return full.index_copy(-1, index, part)


def _describe(value: object) -> str:
    if isinstance(value, Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return repr(value)
