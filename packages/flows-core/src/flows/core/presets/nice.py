r"""The NICE preset: additive (volume-preserving) coupling transforms."""

from __future__ import annotations

from typing import Any

from flows.core.layers import GeneralCouplingTransform
from flows.core.layers.elementwise import _check_count
from flows.core.lazy import Flow
from flows.core.presets.maf import standard_normal_base
from flows.core.presets.masks import coupling_masks

__all__ = ["NICE"]


class NICE(Flow):
    r"""A NICE flow: additive coupling transforms :math:`y_b = x_b + t(x_a, c)` on a Gaussian.

    Consecutive layers keep complementary halves of the features (even and odd features, or
    random halves with ``randmask``). Additive coupling preserves volume: the log-determinant
    is zero.

    Arguments:
        features: The number of features :math:`F` (at least 2).
        context: The number of context features :math:`C`.
        transforms: The number of coupling transforms.
        randmask: Whether the kept halves are random rather than even/odd features.
        kwargs: Passed to :class:`GeneralCouplingTransform`: ``univariate`` (default
            ``"additive"``) and its hyper-parameters, ``hidden_features``, ``activation``,
            ``normalize``.

    References:
        NICE: Non-linear Independent Components Estimation (Dinh et al., 2014),
        https://arxiv.org/abs/1410.8516

    Example:
        >>> flow = NICE(features=4, transforms=2, hidden_features=[32])
        >>> x = flow().sample((5,))
        >>> flow().log_prob(x).shape
        torch.Size([5])
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        randmask: bool = False,
        **kwargs: Any,
    ) -> None:
        arguments = {
            "features": features,
            "context": context,
            "transforms": transforms,
            "randmask": randmask,
            **kwargs,
        }
        _check_count("NICE", "features", features, minimum=2)
        _check_count("NICE", "transforms", transforms, minimum=1)
        kwargs.setdefault("univariate", "additive")
        layers = [
            GeneralCouplingTransform(features, context, mask=mask, **kwargs)
            for mask in coupling_masks(features, transforms, randmask)
        ]
        super().__init__(layers, standard_normal_base(features))
        self.arguments: dict[str, Any] = arguments
