r"""The continuous normalizing flow preset (CNF)."""

from __future__ import annotations

from typing import Any

import torch

from flows.core.distributions import DiagNormal
from flows.core.lazy import Flow, UnconditionalDistribution
from flows.core.presets import Preset
from flows.core.validation import check_count
from flows.ode.layers import FFJTransform

__all__ = ["CNF"]


class CNF(Preset, Flow):
    r"""A continuous normalizing flow: free-form Jacobian transforms over a standard Gaussian.

    Each transform integrates a neural vector field :math:`f(t, x | c)` from :math:`t = 0` to
    :math:`t = 1` (see :class:`~flows.ode.layers.FFJTransform`); densities follow from the
    instantaneous change of variables, and training gradients from the adjoint method.

    References:
        | Neural Ordinary Differential Equations (Chen et al., 2018)
        | https://arxiv.org/abs/1806.07366

        | FFJORD: Free-form Continuous Dynamics for Scalable Reversible Generative Models
          (Grathwohl et al., 2018)
        | https://arxiv.org/abs/1810.01367

    Arguments:
        features: The number of features :math:`D`.
        context: The number of context features :math:`C`.
        transforms: The number of transforms.
        kwargs: Keyword arguments of :class:`~flows.ode.layers.FFJTransform` (``freqs``,
            ``atol``, ``rtol``, ``exact``, ``hidden_features``, ...).

    Example:
        >>> flow = CNF(features=3, context=4, hidden_features=(16, 16))
        >>> flow.arguments
        {'features': 3, 'context': 4, 'transforms': 1, 'hidden_features': (16, 16)}
        >>> c = torch.randn(4)
        >>> x = flow(c).sample()
        >>> x.shape, flow(c).log_prob(x).shape
        (torch.Size([3]), torch.Size([]))
    """

    def __init__(
        self, features: int, context: int = 0, transforms: int = 1, **kwargs: Any
    ) -> None:
        check_count("transforms", transforms, owner="CNF")
        layers = [FFJTransform(features, context, **kwargs) for _ in range(transforms)]
        base = UnconditionalDistribution(
            DiagNormal, torch.zeros(features), torch.ones(features), buffer=True
        )
        super().__init__(layers, base)
