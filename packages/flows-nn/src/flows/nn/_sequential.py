r"""A base for networks built as a sequence of layers."""

from __future__ import annotations

__all__ = ["LayerSequence"]

from collections import OrderedDict

import torch.nn as nn


class LayerSequence(nn.Sequential):
    r"""An :class:`torch.nn.Sequential` whose slices are plain :class:`torch.nn.Sequential`.

    :class:`torch.nn.Sequential` builds a slice by calling the constructor of its class with
    the layers, which subclasses with their own constructor arguments do not accept.
    """

    def __getitem__(self, idx: int | slice) -> nn.Module:
        if isinstance(idx, slice):
            return nn.Sequential(OrderedDict(list(self._modules.items())[idx]))
        return super().__getitem__(idx)
