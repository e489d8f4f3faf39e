r"""Coupling masks for the coupling presets (NICE, RealNVP)."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["coupling_masks"]


def coupling_masks(features: int, transforms: int, randmask: bool) -> list[Tensor]:
    r"""One mask per coupling layer, ``True`` for the kept features.

    Consecutive layers keep complementary features, so every feature is transformed by every
    other layer: even and odd features alternately, or a random half and its complement.

    Example:
        >>> for mask in coupling_masks(4, 3, randmask=False):
        ...     print(mask)
        tensor([ True, False,  True, False])
        tensor([False,  True, False,  True])
        tensor([ True, False,  True, False])
    """
    masks = []
    for i in range(transforms):
        if i % 2 == 1:
            masks.append(~masks[-1])
        elif randmask:
            masks.append(torch.randperm(features) < features // 2)
        else:
            masks.append(torch.arange(features) % 2 == 0)
    return masks
