r"""flows-image: normalizing flows over images, Glow and RealNVP, with dequantization.

Images are events of shape :math:`(C, H, W)`: ``flow().log_prob`` of a batch
:math:`(N, C, H, W)` has shape :math:`(N,)`. Names are imported on first use, so
``import flows.image`` imports no torch; the ``glow`` and ``realnvp-image`` presets are also
found by name through :func:`flows.core.plugins.get_preset`.

Example:
    >>> import torch
    >>> from flows.image import Glow, UniformDequantization, bits_per_dim
    >>> flow = Glow((1, 8, 8), scales=2, depth=1, hidden_channels=8)
    >>> k = torch.randint(17, (4, 1, 8, 8))
    >>> x, log_q = UniformDequantization(17)(k)
    >>> bits_per_dim(flow().log_prob(x) - log_q, dims=64, levels=17).shape
    torch.Size([4])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.core.deferred import deferred_exports

__version__ = "0.1.0"

_EXPORTS = {
    "load_digits": "flows.image.data",
    "Dequantization": "flows.image.dequantization",
    "UniformDequantization": "flows.image.dequantization",
    "VariationalDequantization": "flows.image.dequantization",
    "bits_per_dim": "flows.image.dequantization",
    "quantize": "flows.image.dequantization",
    "FactoredLatents": "flows.image.distributions",
    "AffineCoupling": "flows.image.layers",
    "ConvNet": "flows.image.layers",
    "DiagonalPrior": "flows.image.layers",
    "InvertibleConv1x1": "flows.image.layers",
    "Prior": "flows.image.layers",
    "Squeeze": "flows.image.layers",
    "Glow": "flows.image.presets",
    "ImageFlow": "flows.image.presets",
    "RealNVPImage": "flows.image.presets",
    "AffineCouplingTransform": "flows.image.transforms",
    "InvertibleConv1x1Transform": "flows.image.transforms",
    "MultiScaleTransform": "flows.image.transforms",
    "SqueezeTransform": "flows.image.transforms",
}

_SUBMODULES = (
    "data",
    "dequantization",
    "distributions",
    "layers",
    "plugin",
    "presets",
    "transforms",
)

__all__ = [
    "AffineCoupling",
    "AffineCouplingTransform",
    "ConvNet",
    "Dequantization",
    "DiagonalPrior",
    "FactoredLatents",
    "Glow",
    "ImageFlow",
    "InvertibleConv1x1",
    "InvertibleConv1x1Transform",
    "MultiScaleTransform",
    "Prior",
    "RealNVPImage",
    "Squeeze",
    "SqueezeTransform",
    "UniformDequantization",
    "VariationalDequantization",
    "bits_per_dim",
    "load_digits",
    "quantize",
]

if TYPE_CHECKING:
    from flows.image.data import load_digits
    from flows.image.dequantization import (
        Dequantization,
        UniformDequantization,
        VariationalDequantization,
        bits_per_dim,
        quantize,
    )
    from flows.image.distributions import FactoredLatents
    from flows.image.layers import (
        AffineCoupling,
        ConvNet,
        DiagonalPrior,
        InvertibleConv1x1,
        Prior,
        Squeeze,
    )
    from flows.image.presets import Glow, ImageFlow, RealNVPImage
    from flows.image.transforms import (
        AffineCouplingTransform,
        InvertibleConv1x1Transform,
        MultiScaleTransform,
        SqueezeTransform,
    )


__getattr__, __dir__ = deferred_exports(__name__, _EXPORTS, _SUBMODULES)
