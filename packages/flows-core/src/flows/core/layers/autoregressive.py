r"""The masked autoregressive lazy transform (MAF's building block)."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn
from torch.distributions import Transform

from flows.core.layers.stepwise import StepwiseInverse
from flows.core.layers.univariate import (
    cat_context,
    checked_context,
    init_near_zero,
    resolve_univariate,
)
from flows.core.lazy import LazyTransform
from flows.core.transforms import AutoregressiveTransform
from flows.core.validation import check_count

if TYPE_CHECKING:
    from flows.nn import MaskedLinear, MaskedMLP

__all__ = ["MaskedAutoregressiveTransform", "autoregressive_depth"]

_NETWORK_ARGUMENTS = ("activation", "hidden_features", "residual")
_OWNER = "MaskedAutoregressiveTransform"


class MaskedAutoregressiveTransform(LazyTransform):
    r"""A masked autoregressive transform :math:`y_i = f(x_i; \phi_i(x_{<i}, c))`.

    One masked MLP (a MADE hyper-network) reads :math:`[x, c]` and predicts the parameters of
    every feature's univariate transform at once, each feature seeing only the features
    before it in the autoregressive ``order``, so the Jacobian is triangular in that order and
    the forward pass is a single network call. With ``passes=k``, the features are split into
    :math:`k` groups of consecutive ranks and each group is transformed given the groups before
    it: ``passes=2`` is a coupling transform. The inverse takes one pass per group; pass
    :math:`k` evaluates only the network outputs of group :math:`k` and inverts only its
    features, and without gradients (sampling) every hidden unit is evaluated once per
    inverse, in the first pass that can compute it (:mod:`flows.core.layers.stepwise`).

    Arguments:
        features: The number of features :math:`F`.
        context: The number of context features :math:`C`.
        passes: The number of groups (and inverse passes); ``None`` for fully autoregressive
            (:math:`F`).
        order: The rank of each feature in the autoregressive order, a permutation of
            :math:`0, \dots, F - 1`; ``None`` for ascending.
        adjacency: A custom dependency structure instead of ``order`` and ``passes``: a boolean
            matrix of shape :math:`(F, F)` or :math:`(F, F + C)` whose entry :math:`(i, j)` says
            whether feature :math:`i`'s parameters depend on input :math:`j`; its feature part
            must be acyclic (triangular up to a permutation, with a false diagonal).
        univariate: A registered univariate transform name, or a constructor taking the
            parameter tensors.
        shapes: The parameter shapes of a univariate constructor (only with a constructor).
        kwargs: The univariate's hyper-parameters (by name) and the masked MLP's arguments
            (``hidden_features``, ``activation``, ``residual``).

    Example:
        >>> t = MaskedAutoregressiveTransform(3, context=2, hidden_features=[16, 16])
        >>> f = t(torch.randn(2))
        >>> x = torch.randn(3)
        >>> torch.allclose(f.inv(f(x)), x, atol=1e-5)
        True
        >>> torch.autograd.functional.jacobian(f, x).triu(diagonal=1).abs().sum()
        tensor(0.)
    """

    order: Tensor

    def __init__(
        self,
        features: int,
        context: int = 0,
        passes: int | None = None,
        order: Tensor | Sequence[int] | None = None,
        adjacency: Tensor | None = None,
        univariate: str | Callable[..., Transform] = "affine",
        shapes: Sequence[Sequence[int]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        check_count("features", features, minimum=1, owner=_OWNER)
        check_count("context", context, minimum=0, owner=_OWNER)
        self.layout, network = resolve_univariate(
            _OWNER, univariate, shapes, kwargs, _NETWORK_ARGUMENTS
        )
        self.features = features
        # The network's output, viewed as one row of parameters per feature.
        self.unflattened = (features, self.layout.total)
        self.context = context

        context_part = None
        if adjacency is None:
            order = _check_order(order, features)
            if passes is None:
                passes = features
            check_count("passes", passes, minimum=1, owner=_OWNER)
            group = torch.div(order, math.ceil(features / passes), rounding_mode="floor")
            dependency = group[:, None] > group[None, :]
            self.register_buffer("order", order)
        else:
            if order is not None or passes is not None:
                raise ValueError(
                    f"{_OWNER}: adjacency determines the dependencies and the passes; pass "
                    f"adjacency alone, not with order={order!r} or passes={passes!r}"
                )
            dependency, context_part = _check_adjacency(adjacency, features, context)
            group = autoregressive_depth(dependency)
        # The inverse fixes one more group per pass: as many passes as groups, no more.
        self.passes = int(group.max()) + 1
        # Ranks per group, to regroup an order loaded from a state dict (None with adjacency).
        self._ranks_per_group = None if passes is None else math.ceil(features / passes)

        if context_part is not None:
            full = torch.cat((dependency, context_part), dim=1)
        else:
            full = torch.cat((dependency, torch.ones(features, context, dtype=torch.bool)), 1)
        self.hyper: MaskedMLP | None
        if full.any():
            from flows.nn import MaskedMLP

            # Row i * total + k is the k-th parameter of feature i: a reshape splits features.
            self.hyper = MaskedMLP(full.repeat_interleave(self.layout.total, dim=0), **network)
            init_near_zero(self.hyper)
        else:
            # Nothing to depend on (one feature, or one group, and no context): free parameters.
            self.hyper = None
            self.phi = nn.Parameter(torch.randn(features, self.layout.total) * 1e-2)
        # Worth it for vector parameters (spline bins), which the transform reads row by row.
        self._parameters_first = (
            self.hyper is not None
            and not self.layout.scalars
            and cast("MaskedLinear", self.hyper[-1]).bias is not None
        )
        self._group_of_features = group
        # The inverse, group after group; None: the generic fixed point (one pass, residual).
        self.stepwise = StepwiseInverse.plan(self.hyper, group, context, self.layout)
        self.register_load_state_dict_post_hook(MaskedAutoregressiveTransform._regroup)

    def _regroup(self, incompatible_keys: Any) -> None:
        # A loaded order and masks (a preset built with randperm=True) regroup the features.
        if self._ranks_per_group is not None:
            ranks = self.order.cpu()
            self._group_of_features = torch.div(
                ranks, self._ranks_per_group, rounding_mode="floor"
            )
        # Planned on the network's device.
        self.stepwise = StepwiseInverse.plan(
            self.hyper, self._group_of_features, self.context, self.layout
        )

    def _meta(self, c: Tensor | None, x: Tensor) -> Transform:
        if c is not None:
            x = cat_context(x, c)
        if self.hyper is None:
            return self.layout.build(self.phi)
        if not self._parameters_first:
            phi = self.hyper(x)
            if phi.dtype != x.dtype:  # autocast: the network's output back to the data's dtype
                phi = phi.to(x.dtype)
            return self.layout.build(phi.reshape(phi.shape[:-1] + self.unflattened))
        # The last layer computed transposed, its rows in parameter-major order: each
        # parameter's values come out contiguous over features and samples, for the cost of
        # reordering a small weight.
        hidden = self.hyper.forward_hidden(x)
        last = cast("MaskedLinear", self.hyper[-1])
        features, total = self.unflattened
        weight = last.effective_weight().view(features, total, -1).transpose(0, 1)
        bias = cast(Tensor, last.bias).view(features, total).T.reshape(-1, 1)
        flat = hidden.reshape(-1, hidden.shape[-1])
        rows = torch.addmm(bias, weight.reshape(total * features, -1), flat.T)
        if rows.dtype != x.dtype:  # autocast: the transform's arithmetic in the data's dtype
            rows = rows.to(x.dtype)
        batch = hidden.shape[:-1]
        return self.layout.build_parameters_first(rows.view(total, features, -1), batch)

    def forward(self, c: Tensor | None = None) -> Transform:
        r"""Return the transform :math:`y = f(x | c)`.

        Arguments:
            c: A context of shape :math:`(*, C)`, required when ``context > 0``.
        """
        c = checked_context(_OWNER, self.context, c)
        return _MaskedAutoregressive(self, functools.partial(self._meta, c), c)

    def extra_repr(self) -> str:
        return (
            f"features={self.features}, context={self.context}, passes={self.passes}, "
            f"univariate={self.layout}"
        )


class _MaskedAutoregressive(AutoregressiveTransform):
    """An autoregressive transform whose inverse knows its masked network (stepwise passes)."""

    def __init__(
        self,
        layer: MaskedAutoregressiveTransform,
        meta: Callable[[Tensor], Transform],
        c: Tensor | None,
    ) -> None:
        super().__init__(meta, layer.passes)
        self.layer = layer
        self.context = c

    def _inverse(self, y: Tensor) -> Tensor:
        stepwise, hyper = self.layer.stepwise, self.layer.hyper
        if stepwise is None or hyper is None:
            return super()._inverse(y)
        return stepwise.invert(hyper, y, self.context)[0]

    def inverse_and_ladj(self, y: Tensor) -> tuple[Tensor, Tensor]:
        stepwise, hyper = self.layer.stepwise, self.layer.hyper
        if stepwise is None or hyper is None:
            return super().inverse_and_ladj(y)
        x, ladj = stepwise.invert(hyper, y, self.context, with_ladj=True)
        return x, cast(Tensor, ladj)

    def __repr__(self) -> str:
        return f"AutoregressiveTransform(passes={self.passes})"


def _check_order(order: Tensor | Sequence[int] | None, features: int) -> Tensor:
    if order is None:
        return torch.arange(features)
    as_tensor = torch.as_tensor(order)
    valid = (
        as_tensor.dim() == 1
        and not as_tensor.is_floating_point()
        and as_tensor.dtype is not torch.bool
        and as_tensor.numel() == features
        and bool((as_tensor.sort().values.cpu() == torch.arange(features)).all())
    )
    if not valid:
        raise ValueError(
            f"{_OWNER}: order must be a permutation of 0, ..., {features - 1} (the rank of each "
            f"feature), got {order!r}"
        )
    return as_tensor.detach().to(device="cpu", dtype=torch.long).clone()


def _check_adjacency(
    adjacency: Tensor, features: int, context: int
) -> tuple[Tensor, Tensor | None]:
    shapes = [(features, features), (features, features + context)]
    if (
        not isinstance(adjacency, Tensor)
        or adjacency.dtype is not torch.bool
        or tuple(adjacency.shape) not in shapes
    ):
        described = (
            f"a {adjacency.dtype} tensor of shape {tuple(adjacency.shape)}"
            if isinstance(adjacency, Tensor)
            else repr(adjacency)
        )
        raise ValueError(
            f"{_OWNER}: adjacency must be a boolean tensor of shape {shapes[0]} or {shapes[1]}, "
            f"got {described}"
        )
    adjacency = adjacency.detach().cpu()
    dependency = adjacency[:, :features]
    context_part = adjacency[:, features:] if adjacency.shape[1] > features else None
    if bool(dependency.diagonal().any()):
        raise ValueError(
            f"{_OWNER}: adjacency must have a false diagonal (a feature cannot depend on "
            f"itself), got true at features {dependency.diagonal().nonzero().flatten().tolist()}"
        )
    return dependency, context_part


def autoregressive_depth(dependency: Tensor) -> Tensor:
    r"""The depth of each feature in an acyclic dependency graph.

    Feature :math:`i` depends on feature :math:`j` if ``dependency[i, j]``; features of depth
    0 depend on none, and a feature's depth is one more than its deepest dependency. An
    autoregressive inverse needs ``depth.max() + 1`` fixed-point passes.

    Raises:
        ValueError: The graph has a cycle, so it is not triangular under any permutation.

    Example:
        >>> dependency = torch.tensor(
        ...     [[False, True, False], [False, False, False], [True, True, False]]
        ... )
        >>> autoregressive_depth(dependency)
        tensor([1, 0, 2])
    """
    features = dependency.shape[0]
    depth = torch.zeros(features, dtype=torch.long)
    for _ in range(features):
        # A feature is one deeper than its deepest dependency; converges in at most F steps.
        deeper = torch.where(dependency, depth[None, :] + 1, 0).amax(dim=1)
        if torch.equal(deeper, depth):
            return depth
        depth = deeper
    raise ValueError(
        f"{_OWNER}: adjacency has a cycle among its features, so no order makes it triangular; "
        f"got {dependency.int().tolist()}"
    )
