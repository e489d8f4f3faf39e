r"""Distributions: normalizing flows, simple bases, joints, mixtures, truncations and order
statistics. All are :class:`torch.distributions.Distribution` objects."""

from flows.core.distributions.flow import NormalizingFlow
from flows.core.distributions.joint import Joint
from flows.core.distributions.mixture import Mixture
from flows.core.distributions.order import Maximum, Minimum, Sort, TopK
from flows.core.distributions.simple import BoxUniform, DiagNormal, GeneralizedNormal
from flows.core.distributions.truncated import TransformedUniform, Truncated

__all__ = [
    "BoxUniform",
    "DiagNormal",
    "GeneralizedNormal",
    "Joint",
    "Maximum",
    "Minimum",
    "Mixture",
    "NormalizingFlow",
    "Sort",
    "TopK",
    "TransformedUniform",
    "Truncated",
]
