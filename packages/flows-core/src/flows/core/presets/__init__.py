r"""Ready-made flows: MAF, NICE, RealNVP, GMM, GF; for VI, IAF, Planar, Radial and Sylvester.

Each is a :class:`Preset`, which records the keyword arguments that rebuild it in
``arguments``: ``type(flow)(**flow.arguments)`` gives the same architecture.

Example:
    >>> import torch
    >>> from flows.core.presets import MAF
    >>> flow = MAF(features=2, transforms=2)
    >>> flow().sample((3,)).shape
    torch.Size([3, 2])
"""

from flows.core.presets.base import Preset
from flows.core.presets.coupling import CouplingFlow
from flows.core.presets.gf import GF
from flows.core.presets.gmm import GMM
from flows.core.presets.iaf import IAF
from flows.core.presets.maf import MAF
from flows.core.presets.nice import NICE
from flows.core.presets.realnvp import RealNVP
from flows.core.presets.residual import Planar, Radial, Sylvester

__all__ = [
    "GF",
    "GMM",
    "IAF",
    "MAF",
    "NICE",
    "CouplingFlow",
    "Planar",
    "Preset",
    "Radial",
    "RealNVP",
    "Sylvester",
]
