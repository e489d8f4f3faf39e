r"""Lazy transforms with hyper-networks: element-wise, masked autoregressive and coupling.

Each takes its univariate transform as a registered name with hyper-parameters
(``univariate="affine"``) or as a constructor with the shapes of its parameters.

Example:
    >>> import torch
    >>> from flows.core.layers import MaskedAutoregressiveTransform
    >>> t = MaskedAutoregressiveTransform(features=3, context=2)
    >>> t(torch.randn(2))(torch.randn(3)).shape
    torch.Size([3])
"""

from flows.core.layers.autoregressive import MaskedAutoregressiveTransform
from flows.core.layers.coupling import GeneralCouplingTransform
from flows.core.layers.elementwise import ElementWiseTransform
from flows.core.layers.normalization import ActNorm, BatchNorm

__all__ = [
    "ActNorm",
    "BatchNorm",
    "ElementWiseTransform",
    "GeneralCouplingTransform",
    "MaskedAutoregressiveTransform",
]
