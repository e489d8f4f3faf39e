r"""The Gaussianization flow (GF) preset."""

from __future__ import annotations

from typing import Any

import torch

from flows.core.layers import ElementWiseTransform
from flows.core.layers.elementwise import _check_count
from flows.core.lazy import Flow, LazyTransform, UnconditionalTransform
from flows.core.presets.maf import standard_normal_base

__all__ = ["GF"]


class GF(Flow):
    r"""A Gaussianization flow: element-wise Gaussianizations alternated with rotations.

    Each layer maps every feature through :math:`y = \Phi^{-1}(F(x))`, where :math:`F` is the
    CDF of a mixture of ``components`` Gaussians (a
    :class:`~flows.core.transforms.GaussianizationTransform`), then rotates the features with a
    learned rotation :math:`R = \exp(A - A^\top)`. With a context, an MLP predicts the mixtures.

    Arguments:
        features: The number of features :math:`F`.
        context: The number of context features :math:`C`.
        transforms: The number of Gaussianization layers.
        components: The number of mixture components :math:`K` per feature.
        kwargs: The MLP's arguments (``hidden_features``, ``activation``, ``normalize``).

    References:
        Gaussianization Flows (Meng et al., 2020), https://arxiv.org/abs/2003.01941

    Example:
        >>> flow = GF(features=2, transforms=2, components=4)
        >>> x = flow().sample((3,))
        >>> flow().log_prob(x).shape
        torch.Size([3])
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        components: int = 8,
        **kwargs: Any,
    ) -> None:
        arguments = {
            "features": features,
            "context": context,
            "transforms": transforms,
            "components": components,
            **kwargs,
        }
        _check_count("GF", "features", features, minimum=1)
        _check_count("GF", "transforms", transforms, minimum=1)
        _check_count("GF", "components", components, minimum=1)
        from flows.core.transforms import GaussianizationTransform, RotationTransform

        layers: list[LazyTransform] = []
        for i in range(transforms):
            layer = ElementWiseTransform(
                features,
                context,
                univariate=GaussianizationTransform,
                shapes=[(components,), (components,)],
                **kwargs,
            )
            _spread_components(layer, components)
            layers.append(layer)
            if i < transforms - 1:
                layers.append(
                    UnconditionalTransform(RotationTransform, torch.randn(features, features))
                )
        super().__init__(layers, standard_normal_base(features))
        self.arguments: dict[str, Any] = arguments


def _spread_components(layer: ElementWiseTransform, components: int) -> None:
    """Start the mixture components at different shifts, so they do not learn alike."""
    shift = torch.randn(layer.features, components)
    with torch.no_grad():
        if layer.context == 0:
            layer.phi[:, :components] = shift
        else:
            bias = [m for m in layer.hyper.modules() if getattr(m, "bias", None) is not None][
                -1
            ].bias
            bias.view(layer.features, -1)[:, :components] = shift
