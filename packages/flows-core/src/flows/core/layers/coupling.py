r"""The general coupling lazy transform (NICE's and RealNVP's building block)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Transform

from flows.core.layers.univariate import (
    cat_context,
    checked_context,
    init_near_zero,
    resolve_univariate,
)
from flows.core.lazy import LazyTransform
from flows.core.transforms import CouplingTransform
from flows.core.validation import check_count

__all__ = ["GeneralCouplingTransform"]

_NETWORK_ARGUMENTS = ("activation", "hidden_features", "normalize")
_OWNER = "GeneralCouplingTransform"


class GeneralCouplingTransform(LazyTransform):
    r"""A coupling transform :math:`y_a = x_a`, :math:`y_b = f(x_b; \phi(x_a, c))`.

    The features selected by ``mask`` (:math:`x_a`) are kept; an MLP of :math:`[x_a, c]`
    predicts the parameters of the univariate transforms of the others (:math:`x_b`). The
    Jacobian is block-triangular and the inverse is exact in one pass.

    Arguments:
        features: The number of features :math:`F` (at least 2).
        context: The number of context features :math:`C`.
        mask: A boolean vector of the :math:`F` features, ``True`` for those kept; ``None``
            keeps the first half, :math:`\lfloor F / 2 \rfloor` features.
        univariate: A registered univariate transform name, or a constructor taking the
            parameter tensors.
        shapes: The parameter shapes of a univariate constructor (only with a constructor).
        kwargs: The univariate's hyper-parameters (by name) and the MLP's arguments
            (``hidden_features``, ``activation``, ``normalize``).

    Example:
        >>> t = GeneralCouplingTransform(4, hidden_features=[16])
        >>> t.mask
        tensor([ True,  True, False, False])
        >>> x = torch.randn(4)
        >>> bool((t()(x)[:2] == x[:2]).all())
        True
    """

    mask: Tensor
    kept: Tensor
    changed: Tensor

    def __init__(
        self,
        features: int,
        context: int = 0,
        mask: Tensor | None = None,
        univariate: str | Callable[..., Transform] = "affine",
        shapes: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_count("features", features, minimum=2, owner=_OWNER)
        check_count("context", context, minimum=0, owner=_OWNER)
        self.layout, network = resolve_univariate(
            _OWNER, univariate, shapes, kwargs, _NETWORK_ARGUMENTS
        )
        self.features = features
        self.context = context
        if mask is None:
            mask = torch.arange(features) < features // 2
        mask = _check_mask(mask, features)
        self.register_buffer("mask", mask)
        # The feature indices, computed once (not per call: nonzero would break compiled graphs).
        self.register_buffer("kept", mask.nonzero().flatten(), persistent=False)
        self.register_buffer("changed", (~mask).nonzero().flatten(), persistent=False)
        self.register_load_state_dict_post_hook(_reindex)
        kept = int(mask.sum())
        # The network's output, viewed as one row of parameters per transformed feature.
        self.unflattened = (features - kept, self.layout.total)
        self.hyper = _mlp(kept + context, (features - kept) * self.layout.total, network)
        init_near_zero(self.hyper)

    def _meta(self, c: Tensor | None, x_a: Tensor) -> Transform:
        if c is not None:
            x_a = cat_context(x_a, c)
        phi = self.hyper(x_a)
        if phi.dtype != x_a.dtype:  # autocast: the transform's arithmetic in the data's dtype
            phi = phi.to(x_a.dtype)
        phi = phi.reshape(phi.shape[:-1] + self.unflattened)
        return self.layout.build(phi)

    def forward(self, c: Tensor | None = None) -> Transform:
        r"""Return the transform :math:`y = f(x | c)`.

        Arguments:
            c: A context of shape :math:`(*, C)`, required when ``context > 0``.
        """
        c = checked_context(_OWNER, self.context, c)
        return CouplingTransform(
            functools.partial(self._meta, c), self.mask, indices=(self.kept, self.changed)
        )

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, context={self.context}, "
            f"mask={self.mask.int().tolist()}, univariate={self.layout}"
        )


def _reindex(module: GeneralCouplingTransform, incompatible_keys: Any) -> None:
    # A loaded mask (e.g. a random one) brings its own feature indices.
    module.kept = module.mask.nonzero().flatten()
    module.changed = (~module.mask).nonzero().flatten()


def _mlp(in_features: int, out_features: int, network: dict[str, Any]) -> torch.nn.Module:
    from flows.nn import MLP

    return MLP(in_features, out_features, **network)


def _check_mask(mask: Any, features: int) -> Tensor:
    valid = (
        isinstance(mask, Tensor)
        and mask.dtype is torch.bool
        and tuple(mask.shape) == (features,)
        and bool(mask.any())
        and not bool(mask.all())
    )
    if not valid:
        raise ValueError(
            f"{_OWNER}: mask must be a boolean tensor of shape ({features},) with some features "
            f"kept (True) and some transformed (False), got {mask!r}"
        )
    return mask.detach().cpu().clone()
