r"""flows-ode: continuous normalizing flows, whose transforms solve an ODE (with torchdiffeq).

Names are imported on first use, so ``import flows.ode`` imports no torch; the ``cnf`` preset
is also found by name through :func:`flows.core.plugins.get_preset`.

Example:
    >>> import torch
    >>> from flows.ode import CNF
    >>> flow = CNF(features=2, context=1, transforms=1, hidden_features=(8, 8))
    >>> flow(torch.randn(1)).sample((3,)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.core.deferred import deferred_exports

__version__ = "0.1.0"

_EXPORTS = {
    "FreeFormJacobianTransform": "flows.ode.ffj",
    "SolverUnderflowError": "flows.ode.ffj",
    "FFJTransform": "flows.ode.layers",
    "CNF": "flows.ode.presets",
}

_SUBMODULES = ("ffj", "layers", "plugin", "presets")

__all__ = ["CNF", "FFJTransform", "FreeFormJacobianTransform", "SolverUnderflowError"]

if TYPE_CHECKING:
    from flows.ode.ffj import FreeFormJacobianTransform, SolverUnderflowError
    from flows.ode.layers import FFJTransform
    from flows.ode.presets import CNF


__getattr__, __dir__ = deferred_exports(__name__, _EXPORTS, _SUBMODULES)
