r"""The neural spline flow (NSF) and neural circular spline flow (NCSF) presets."""

from __future__ import annotations

__all__ = ["NCSF", "NSF"]

import math
from typing import Any

import torch

from flows.core.layers import MaskedAutoregressiveTransform
from flows.core.lazy import Flow, LazyTransform, UnconditionalDistribution, UnconditionalTransform
from flows.core.presets import MAF, Preset
from flows.core.presets.maf import alternating_orders
from flows.core.validation import check_count


class NSF(MAF):
    r"""A neural spline flow: masked autoregressive rational-quadratic splines on a Gaussian.

    Each layer is a :class:`flows.core.MaskedAutoregressiveTransform` whose univariate
    transform is a :class:`flows.splines.MonotonicRQSTransform` with ``bins`` bins on
    :math:`[-B, B]` (the identity outside). ``passes=2`` makes coupling layers (fast
    sampling); the default is fully autoregressive.

    Arguments:
        features: The number of features :math:`F`.
        context: The number of context features :math:`C`.
        transforms: The number of autoregressive transforms.
        bins: The number of spline bins :math:`K`.
        bound: The spline interval's half-width :math:`B`.
        slope: The smallest derivative and relative bin size of the splines.
        passes: The number of passes (2 for coupling), ``None`` for fully autoregressive.
        kwargs: Passed to :class:`flows.core.presets.MAF`: ``randperm``, ``order``,
            ``hidden_features``, ``activation``, ``residual``, and ``norm``, the
            normalization between consecutive layers (``None``, ``"act"`` or ``"batch"``).

    Example:
        >>> flow = NSF(features=3, context=4, transforms=2, hidden_features=[32, 32])
        >>> c = torch.randn(4)
        >>> x = flow(c).sample()
        >>> x.shape, flow(c).log_prob(x).shape
        (torch.Size([3]), torch.Size([]))

    References:
        | Neural Spline Flows (Durkan et al., 2019)
        | https://arxiv.org/abs/1906.04032
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        bins: int = 8,
        bound: float = 5.0,
        slope: float = 1e-3,
        passes: int | None = None,
        **kwargs: Any,
    ) -> None:
        if passes is not None:
            kwargs["passes"] = passes
        super().__init__(
            features,
            context,
            transforms,
            univariate="rqs",
            bins=bins,
            bound=bound,
            slope=slope,
            **kwargs,
        )


class NCSF(Preset, Flow):
    r"""A neural circular spline flow, for data on the torus :math:`[-\pi, \pi]^F`.

    Each layer is a masked autoregressive transform with circular rational-quadratic splines
    (:class:`flows.splines.CircularRQSTransform`), followed by a half-turn
    :class:`flows.core.transforms.CircularShiftTransform` that moves the cut of the circle;
    the base is uniform on :math:`[-\pi, \pi]^F`.

    Arguments:
        features: The number of features :math:`F`.
        context: The number of context features :math:`C`.
        transforms: The number of autoregressive transforms.
        bins: The number of spline bins :math:`K`.
        slope: The smallest derivative and relative bin size of the splines.
        randperm: Whether each layer takes a random order of the features, rather than
            ascending and descending orders alternately.
        kwargs: Passed to :class:`flows.core.MaskedAutoregressiveTransform`: ``passes``,
            ``hidden_features``, ``activation``, ``residual``.

    Example:
        >>> flow = NCSF(features=2, transforms=2, hidden_features=[16])
        >>> x = flow().sample((100,))
        >>> bool(x.abs().max() <= math.pi)
        True

    References:
        | Normalizing Flows on Tori and Spheres (Rezende et al., 2020)
        | https://arxiv.org/abs/2002.02428
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        bins: int = 8,
        slope: float = 1e-3,
        randperm: bool = False,
        **kwargs: Any,
    ) -> None:
        from flows.core.distributions import BoxUniform
        from flows.core.transforms import CircularShiftTransform

        check_count("transforms", transforms, owner="NCSF")
        check_count("features", features, owner="NCSF")
        layers: list[LazyTransform] = []
        for order in alternating_orders(features, transforms, randperm):
            layers.append(
                MaskedAutoregressiveTransform(
                    features,
                    context,
                    order=order,
                    univariate="circular-rqs",
                    bins=bins,
                    slope=slope,
                    **kwargs,
                )
            )
            layers.append(UnconditionalTransform(CircularShiftTransform, bound=math.pi))
        base = UnconditionalDistribution(
            BoxUniform,
            torch.full((features,), -math.pi),
            torch.full((features,), math.pi),
            buffer=True,
        )
        super().__init__(layers, base)
