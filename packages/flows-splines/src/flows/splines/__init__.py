r"""flows-splines: spline and monotonic univariate transforms, and the flows built on them.

Names are imported on first use, so ``import flows.splines`` imports no torch.

Example:
    >>> import torch
    >>> from flows.splines import NSF
    >>> flow = NSF(features=3, context=4, transforms=2)
    >>> flow(torch.randn(4)).sample((2,)).shape
    torch.Size([2, 3])
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flows.core.deferred import deferred_exports

__version__ = "0.1.0"

_EXPORTS = {
    # Univariate transforms
    "MonotonicRQSTransform": "flows.splines.rqs",
    "CircularRQSTransform": "flows.splines.circular",
    "MonotonicTransform": "flows.splines.monotonic",
    "MonotonicNetworkTransform": "flows.splines.neural",
    "IntegratedPositiveNetworkTransform": "flows.splines.neural",
    "UnconstrainedMonotonicTransform": "flows.splines.unconstrained",
    "SOSPolynomialTransform": "flows.splines.sos",
    "BernsteinTransform": "flows.splines.bernstein",
    "BoundedBernsteinTransform": "flows.splines.bernstein",
    "bisection_inverse": "flows.splines.bisection",
    # Presets
    "NSF": "flows.splines.presets",
    "NCSF": "flows.splines.presets",
    "NAF": "flows.splines.presets",
    "UNAF": "flows.splines.presets",
    "SOSPF": "flows.splines.presets",
    "BPF": "flows.splines.presets",
}

_SUBMODULES = (
    "bernstein",
    "bisection",
    "circular",
    "monotonic",
    "neural",
    "plugin",
    "presets",
    "rqs",
    "sos",
    "tails",
    "unconstrained",
)

__all__ = [
    "BPF",
    "NAF",
    "NCSF",
    "NSF",
    "SOSPF",
    "UNAF",
    "BernsteinTransform",
    "BoundedBernsteinTransform",
    "CircularRQSTransform",
    "IntegratedPositiveNetworkTransform",
    "MonotonicNetworkTransform",
    "MonotonicRQSTransform",
    "MonotonicTransform",
    "SOSPolynomialTransform",
    "UnconstrainedMonotonicTransform",
    "bisection_inverse",
]

if TYPE_CHECKING:
    from flows.splines.bernstein import BernsteinTransform, BoundedBernsteinTransform
    from flows.splines.bisection import bisection_inverse
    from flows.splines.circular import CircularRQSTransform
    from flows.splines.monotonic import MonotonicTransform
    from flows.splines.neural import IntegratedPositiveNetworkTransform, MonotonicNetworkTransform
    from flows.splines.presets import BPF, NAF, NCSF, NSF, SOSPF, UNAF
    from flows.splines.rqs import MonotonicRQSTransform
    from flows.splines.sos import SOSPolynomialTransform
    from flows.splines.unconstrained import UnconstrainedMonotonicTransform


__getattr__, __dir__ = deferred_exports(__name__, _EXPORTS, _SUBMODULES)
