r"""Neural network building blocks for normalizing flows.

Multi-layer perceptrons (:class:`MLP`), stacked linear layers (:class:`Linear`), masked
networks with a prescribed Jacobian zero pattern (:class:`MaskedMLP`) and monotonic networks
(:class:`MonotonicMLP`). This package imports only :mod:`torch`.
"""

__version__ = "0.1.0"

__all__ = [
    "MLP",
    "Linear",
    "MaskedLinear",
    "MaskedMLP",
    "MaskedResidualBlock",
    "MonotonicLinear",
    "MonotonicMLP",
    "TwoWayELU",
    "adjacency_masks",
    "mask_connectivity",
]

from .linear import Linear
from .masked import MaskedLinear, MaskedMLP, MaskedResidualBlock
from .masking import adjacency_masks, mask_connectivity
from .mlp import MLP
from .monotonic import MonotonicLinear, MonotonicMLP, TwoWayELU
