r"""flows-core: lazy distributions and transforms, autoregressive and coupling flows, presets.

Names are imported on first use, so ``import flows.core`` is cheap and does no plugin
discovery; ``flows.core.MAF`` or ``from flows.core import MAF`` imports what it needs.

Example:
    >>> import torch
    >>> from flows.core import MAF
    >>> flow = MAF(features=3, context=4, transforms=2)
    >>> flow(torch.randn(4)).sample().shape
    torch.Size([3])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.core.deferred import deferred_exports

__version__ = "0.1.0"

_EXPORTS = {
    # Lazy modules
    "Flow": "flows.core.lazy",
    "LazyComposedTransform": "flows.core.lazy",
    "LazyDistribution": "flows.core.lazy",
    "LazyInverse": "flows.core.lazy",
    "LazyTransform": "flows.core.lazy",
    "UnconditionalDistribution": "flows.core.lazy",
    "UnconditionalTransform": "flows.core.lazy",
    # Lazy transforms with hyper-networks
    "ElementWiseTransform": "flows.core.layers",
    "GeneralCouplingTransform": "flows.core.layers",
    "MaskedAutoregressiveTransform": "flows.core.layers",
    # Normalization layers
    "ActNorm": "flows.core.layers",
    "BatchNorm": "flows.core.layers",
    # Presets
    "GF": "flows.core.presets",
    "GMM": "flows.core.presets",
    "IAF": "flows.core.presets",
    "MAF": "flows.core.presets",
    "NICE": "flows.core.presets",
    "Planar": "flows.core.presets",
    "Preset": "flows.core.presets",
    "Radial": "flows.core.presets",
    "RealNVP": "flows.core.presets",
    "Sylvester": "flows.core.presets",
    # Training and checkpoints
    "fit": "flows.core.training",
    "FitDivergedError": "flows.core.training",
    "FitResult": "flows.core.training",
    "compile_sampler": "flows.core.compiling",
    "load": "flows.core.checkpoint",
    "save": "flows.core.checkpoint",
    "BayesianFlow": "flows.core.bayesian",
    "fit_bayesian": "flows.core.bayesian",
    "fit_to_target": "flows.core.variational",
    "VariationalResult": "flows.core.variational",
    "importance_diagnostics": "flows.core.diagnostics",
    "psis": "flows.core.diagnostics",
    # Supports
    "with_support": "flows.core.support",
}

_SUBMODULES = (
    "bayesian",
    "checkpoint",
    "compiling",
    "diagnostics",
    "distributions",
    "layers",
    "lazy",
    "plugins",
    "presets",
    "support",
    "testing",
    "training",
    "transforms",
    "validation",
    "variational",
)

__all__ = [
    "GF",
    "GMM",
    "IAF",
    "MAF",
    "NICE",
    "ActNorm",
    "BatchNorm",
    "BayesianFlow",
    "ElementWiseTransform",
    "FitDivergedError",
    "FitResult",
    "Flow",
    "GeneralCouplingTransform",
    "LazyComposedTransform",
    "LazyDistribution",
    "LazyInverse",
    "LazyTransform",
    "MaskedAutoregressiveTransform",
    "Planar",
    "Preset",
    "Radial",
    "RealNVP",
    "Sylvester",
    "UnconditionalDistribution",
    "UnconditionalTransform",
    "VariationalResult",
    "compile_sampler",
    "fit",
    "fit_bayesian",
    "fit_to_target",
    "importance_diagnostics",
    "load",
    "psis",
    "save",
    "with_support",
]


if TYPE_CHECKING:
    from flows.core.bayesian import BayesianFlow, fit_bayesian
    from flows.core.checkpoint import load, save
    from flows.core.compiling import compile_sampler
    from flows.core.diagnostics import importance_diagnostics, psis
    from flows.core.layers import (
        ActNorm,
        BatchNorm,
        ElementWiseTransform,
        GeneralCouplingTransform,
        MaskedAutoregressiveTransform,
    )
    from flows.core.lazy import (
        Flow,
        LazyComposedTransform,
        LazyDistribution,
        LazyInverse,
        LazyTransform,
        UnconditionalDistribution,
        UnconditionalTransform,
    )
    from flows.core.presets import (
        GF,
        GMM,
        IAF,
        MAF,
        NICE,
        Planar,
        Preset,
        Radial,
        RealNVP,
        Sylvester,
    )
    from flows.core.support import with_support
    from flows.core.training import FitDivergedError, FitResult, fit
    from flows.core.variational import VariationalResult, fit_to_target


__getattr__, __dir__ = deferred_exports(__name__, _EXPORTS, _SUBMODULES)
