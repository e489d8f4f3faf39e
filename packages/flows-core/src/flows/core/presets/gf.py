r"""The Gaussianization flow (GF) preset."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from flows.core.layers import ElementWiseTransform
from flows.core.lazy import Flow, LazyTransform, UnconditionalTransform
from flows.core.presets.base import Preset
from flows.core.presets.maf import standard_normal_base
from flows.core.validation import check_count

__all__ = ["GF"]


class GF(Preset, Flow):
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
        check_count("features", features, owner="GF")
        check_count("transforms", transforms, owner="GF")
        check_count("components", components, owner="GF")
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


def _spread_components(layer: ElementWiseTransform, components: int) -> None:
    """Start the mixture components at different shifts, so they do not learn alike."""
    shift = torch.randn(layer.features, components)
    with torch.no_grad():
        if layer.context == 0:
            layer.phi[:, :components] = shift
        else:
            biases = [getattr(m, "bias", None) for m in layer.hyper.modules()]
            bias: Tensor = [b for b in biases if b is not None][-1]
            bias.view(layer.features, -1)[:, :components] = shift
