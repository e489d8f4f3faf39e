"""The presets of flows-splines: flows built on spline and monotonic transforms.

Each is a :class:`flows.core.presets.Preset`, which records the keyword arguments that rebuild
it in ``arguments``: ``type(flow)(**flow.arguments)`` gives the same architecture.
"""

from flows.splines.presets.naf import NAF, UNAF
from flows.splines.presets.nsf import NCSF, NSF
from flows.splines.presets.polynomial import BPF, SOSPF

__all__ = ["BPF", "NAF", "NCSF", "NSF", "SOSPF", "UNAF"]
