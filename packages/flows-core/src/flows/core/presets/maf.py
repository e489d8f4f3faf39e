r"""The masked autoregressive flow (MAF) preset."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from flows.core.layers import MaskedAutoregressiveTransform
from flows.core.lazy import Flow, LazyTransform, UnconditionalDistribution
from flows.core.presets.base import Preset
from flows.core.validation import check_choice, check_count

if TYPE_CHECKING:
    from flows.nn import MaskedLinear

__all__ = [
    "MAF",
    "NORMS",
    "alternating_orders",
    "check_norm",
    "interleave_norm",
    "masked_layers",
    "standard_normal_base",
]

#: The values of a preset's ``norm``: none, :class:`~flows.core.ActNorm` or
#: :class:`~flows.core.BatchNorm` between consecutive layers.
NORMS = (None, "act", "batch")


def alternating_orders(
    features: int, transforms: int, randperm: bool = False, order: Any = None
) -> list[Tensor]:
    r"""The autoregressive order (the rank of each feature) of each of ``transforms`` layers.

    Even layers take ``order`` (ascending by default) and odd ones its reverse, so each feature
    is eventually conditioned on every other; with ``randperm``, each layer a random order.

    Example:
        >>> alternating_orders(3, 2)
        [tensor([0, 1, 2]), tensor([2, 1, 0])]
    """
    if randperm:
        return [torch.randperm(features) for _ in range(transforms)]
    ascending = torch.arange(features) if order is None else torch.as_tensor(order)
    return [ascending if i % 2 == 0 else features - 1 - ascending for i in range(transforms)]


def standard_normal_base(features: int) -> UnconditionalDistribution:
    r"""The base :math:`\mathcal{N}(0, I)` of the presets, its tensors fixed buffers."""
    from flows.core.distributions import DiagNormal

    return UnconditionalDistribution(
        DiagNormal, torch.zeros(features), torch.ones(features), buffer=True
    )


def check_norm(norm: object, owner: str) -> str | None:
    """``norm``, if it is one of :data:`NORMS`."""
    return cast("str | None", check_choice("norm", norm, NORMS, owner=owner))


def interleave_norm(
    layers: Sequence[LazyTransform], norm: str | None, features: int
) -> list[LazyTransform]:
    r"""``layers`` with a normalization layer of ``features`` between each consecutive two.

    ``"act"`` inserts :class:`~flows.core.ActNorm`, ``"batch"``
    :class:`~flows.core.BatchNorm`; ``None`` nothing, so the layers keep their places (and
    their state dict keys).

    Example:
        >>> from flows.core import ElementWiseTransform
        >>> layers = interleave_norm([ElementWiseTransform(2), ElementWiseTransform(2)], "act", 2)
        >>> [type(layer).__name__ for layer in layers]
        ['ElementWiseTransform', 'ActNorm', 'ElementWiseTransform']
    """
    if norm is None:
        return list(layers)
    from flows.core.layers import ActNorm, BatchNorm

    make = ActNorm if norm == "act" else BatchNorm
    interleaved = list(layers[:1])
    for layer in layers[1:]:
        interleaved += [make(features), layer]
    return interleaved


class MAF(Preset, Flow):
    r"""A masked autoregressive flow (MAF): masked autoregressive transforms on a Gaussian.

    The flow stacks ``transforms`` :class:`MaskedAutoregressiveTransform` layers on the base
    :math:`\mathcal{N}(0, I)`. Unless ``randperm``, the features are in ascending order in even
    layers and descending order in odd ones, so each feature is eventually conditioned on every
    other; an explicit ``order`` is used in even layers and reversed in odd ones. With the
    default affine transforms, each layer starts as a random shift of unit scale rather than
    as the identity, which measured better fits.

    Arguments:
        features: The number of features :math:`F`.
        context: The number of context features :math:`C`.
        transforms: The number of autoregressive transforms.
        randperm: Whether each layer takes a random order of the features.
        kwargs: ``norm``, the normalization between consecutive layers: ``None`` (the
            default), ``"act"`` (:class:`~flows.core.ActNorm`) or ``"batch"``
            (:class:`~flows.core.BatchNorm`, as in the MAF paper). The rest is passed to
            :class:`MaskedAutoregressiveTransform`: ``passes`` (2 for coupling),
            ``order``, ``adjacency``, ``univariate`` and its hyper-parameters,
            ``hidden_features``, ``activation``, ``residual``.

    References:
        Masked Autoregressive Flow for Density Estimation (Papamakarios et al., 2017),
        https://arxiv.org/abs/1705.07057

    Example:
        >>> flow = MAF(features=3, context=4, transforms=2, hidden_features=[32, 32])
        >>> c = torch.randn(4)
        >>> x = flow(c).sample()
        >>> x.shape, flow(c).log_prob(x).shape
        (torch.Size([3]), torch.Size([]))
        >>> flow(torch.randn(10, 4)).sample().shape
        torch.Size([10, 3])
        >>> MAF(features=3, transforms=2, norm="batch").transform.transforms[1]
        BatchNorm(shape=(3,), momentum=0.1, eps=1e-05)
    """

    def __init__(
        self,
        features: int,
        context: int = 0,
        transforms: int = 3,
        randperm: bool = False,
        **kwargs: Any,
    ) -> None:
        name = type(self).__name__
        check_count("transforms", transforms, owner=name)
        check_count("features", features, owner=name)
        # A keyword argument, not a parameter: without it, arguments stay as they were.
        norm = check_norm(kwargs.pop("norm", None), name)
        layers = masked_layers(features, context, transforms, randperm, kwargs)
        if kwargs.get("univariate", "affine") == "affine":
            for layer in layers:
                _random_shifts(layer)
        super().__init__(interleave_norm(layers, norm, features), standard_normal_base(features))


def masked_layers(
    features: int, context: int, transforms: int, randperm: bool, kwargs: dict[str, Any]
) -> list[MaskedAutoregressiveTransform]:
    """MAF's layers: ``transforms`` masked autoregressive transforms in alternating orders.

    ``kwargs`` are the layers' keyword arguments; an ``order`` among them is the first
    layer's (the next ones alternate from it), and an ``adjacency`` gives every layer its
    dependencies (and its ``order``, if given) as they are.
    """
    kwargs = dict(kwargs)
    order = kwargs.pop("order", None)
    if "adjacency" in kwargs:
        orders = [{} if order is None else {"order": order}] * transforms
    else:
        orders = [{"order": o} for o in alternating_orders(features, transforms, randperm, order)]
    return [MaskedAutoregressiveTransform(features, context, **o, **kwargs) for o in orders]


def _random_shifts(layer: MaskedAutoregressiveTransform) -> None:
    """Start ``layer``'s affine transform as a random shift of unit scale.

    The layer starts its network's last layer near zero, so that its transform starts at the
    identity. For MAF's affine transforms, random shifts with log-scales still near zero fit
    better in the quality benchmark: the rows of the shifts get back their random initial
    weights, the rows of the log-scales keep their near-zero ones, and the bias is zero. The
    measurements behind this choice, and the variants that fitted worse, are in
    ``BENCHMARKS.md`` ("Design measurements").
    """
    if layer.hyper is None:
        return
    last = cast("MaskedLinear", layer.hyper[-1])
    # Row f * total + k of the output is parameter k (0: shift, 1: scale) of feature f.
    last.reset_parameters(rows=range(0, last.out_features, layer.layout.total))
    if last.bias is not None:
        with torch.no_grad():
            last.bias.zero_()
