r"""Coupling flows: alternating coupling layers on a Gaussian (the base of NICE and RealNVP)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor

from flows.core.layers import GeneralCouplingTransform
from flows.core.lazy import Flow
from flows.core.presets.base import Preset
from flows.core.presets.maf import check_norm, interleave_norm, standard_normal_base
from flows.core.validation import check_count

__all__ = ["CouplingFlow", "coupling_masks"]


def coupling_masks(features: int, transforms: int, randmask: bool) -> list[Tensor]:
    r"""One mask per coupling layer, ``True`` for the kept features.

    Consecutive layers keep complementary features, so every feature is transformed by every
    other layer: even and odd features alternately, or a random half and its complement.

    Example:
        >>> for mask in coupling_masks(4, 3, randmask=False):
        ...     print(mask)
        tensor([ True, False,  True, False])
        tensor([False,  True, False,  True])
        tensor([ True, False,  True, False])
    """
    masks: list[Tensor] = []
    for i in range(transforms):
        if i % 2 == 1:
            masks.append(~masks[-1])
        elif randmask:
            masks.append(torch.randperm(features) < features // 2)
        else:
            masks.append(torch.arange(features) % 2 == 0)
    return masks


class CouplingFlow(Preset, Flow):
    r"""A flow of coupling transforms with alternating masks, on a standard Gaussian.

    Each layer keeps part of the features, :math:`y_a = x_a`, and maps the others element-wise
    given them, :math:`y_b = f(x_b; \phi(x_a, c))`. Consecutive layers keep complementary
    halves (even and odd features, or random halves with ``randmask``), so every feature is
    transformed.

    Arguments:
        features: The number of features :math:`F` (at least 2).
        context: The number of context features :math:`C`.
        transforms: The number of coupling transforms.
        randmask: Whether the kept halves are random rather than even/odd features.
        kwargs: ``norm``, the normalization between consecutive layers: ``None`` (the
            default), ``"act"`` (:class:`~flows.core.ActNorm`) or ``"batch"``
            (:class:`~flows.core.BatchNorm`). The rest is passed to
            :class:`GeneralCouplingTransform`: ``univariate`` (default
            ``"affine"``) and its hyper-parameters, ``hidden_features``, ``activation``,
            ``normalize``.

    Example:
        >>> flow = CouplingFlow(features=3, transforms=2, hidden_features=[16])
        >>> flow().sample((5,)).shape
        torch.Size([5, 3])
        >>> CouplingFlow(features=3, transforms=2, norm="act").transform.transforms[1]
        ActNorm(shape=(3,))
    """

    default_univariate: ClassVar[str] = "affine"

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        randmask: bool = False,
        **kwargs: Any,
    ) -> None:
        name = type(self).__name__
        check_count("features", features, minimum=2, owner=name)
        check_count("transforms", transforms, owner=name)
        # A keyword argument, not a parameter: without it, arguments stay as they were.
        norm = check_norm(kwargs.pop("norm", None), name)
        kwargs.setdefault("univariate", self.default_univariate)
        layers = [
            GeneralCouplingTransform(features, context, mask=mask, **kwargs)
            for mask in coupling_masks(features, transforms, randmask)
        ]
        super().__init__(interleave_norm(layers, norm, features), standard_normal_base(features))
