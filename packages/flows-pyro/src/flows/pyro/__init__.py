r"""flows-pyro: any flows preset as a Pyro guide, fitted by stochastic variational inference.

Names are imported on first use, so ``import flows.pyro`` imports neither torch nor Pyro.

Example:
    >>> import pyro, torch
    >>> import pyro.distributions as dist
    >>> from flows.pyro import FlowGuide
    >>> def model():
    ...     pyro.sample("scale", dist.LogNormal(0.0, 1.0))
    >>> guide = FlowGuide(model, "iaf", transforms=1, hidden_features=(8,))
    >>> sorted(guide().keys())
    ['scale']
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.core.deferred import deferred_exports

__version__ = "0.1.0"

_EXPORTS = {
    "FlowGuide": "flows.pyro.guide",
    "FlowPosterior": "flows.pyro.guide",
}

_SUBMODULES = ("guide",)

__all__ = ["FlowGuide", "FlowPosterior"]

if TYPE_CHECKING:
    from flows.pyro.guide import FlowGuide, FlowPosterior


__getattr__, __dir__ = deferred_exports(__name__, _EXPORTS, _SUBMODULES)
