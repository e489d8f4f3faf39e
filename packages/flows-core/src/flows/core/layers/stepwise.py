r"""The stepwise inverse of a masked autoregressive layer: one group of features per pass.

The inverse of :class:`~flows.core.layers.MaskedAutoregressiveTransform` solves its features
group after group. Pass :math:`k` needs the network outputs of group :math:`k` only, and the
masks make those read only the inputs of the groups before :math:`k` and the context. The
layer's :class:`~flows.nn.MaskedMLP` is therefore evaluated in pieces
(:meth:`~flows.nn.MaskedMLP.forward_pieces`): the context is known at the start, pass
:math:`k` computes the parameters of group :math:`k`, inverts its features and hands them back
as the next stage of inputs.

Without gradients (sampling), each hidden unit is evaluated once over the whole inverse, so
the hidden layers cost one forward call, and each group's parameters come out parameters
first, the layout :meth:`~flows.core.layers.univariate.UnivariateLayout.build_parameters_first`
takes whole. With gradients, a pass evaluates every hidden unit it can compute.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.distributions import Transform as TorchTransform

from flows.core.transforms.base import Transform, inverse_and_ladj

if TYPE_CHECKING:
    from flows.core.layers.univariate import UnivariateLayout
    from flows.nn import MaskedMLP

__all__ = ["StepwiseInverse"]


class StepwiseInverse(nn.Module):
    r"""The inverse of :math:`y_i = f(x_i; \phi_i(x_{<i}, c))`, one group of features per pass.

    Features are sorted by group, so group :math:`k` is a contiguous block of the inputs and
    its parameters a block of the network's output rows, laid out parameters first. The
    network's plan (:class:`~flows.nn.masked.MaskedPieces`) and the sorting are buffers of this
    module, which the layer registers beside its network.

    Arguments:
        network: The layer's masked network, reading :math:`[x, c]` and giving row
            :math:`i T + p` for the parameter :math:`p` of feature :math:`i`, :math:`T` per
            feature.
        group: The group of each feature (the pass that solves it), of shape :math:`(F,)`.
        context: The number of context features :math:`C`.
        layout: The univariate transform and its parameters' layout.

    Raises:
        ValueError: If the network cannot be evaluated in pieces (residual blocks), or an
            output row of group :math:`k` reads a feature of group :math:`k` or later.

    Example:
        >>> from flows.core.layers import MaskedAutoregressiveTransform
        >>> layer = MaskedAutoregressiveTransform(3, hidden_features=[8, 8])
        >>> layer.stepwise.sizes  # one feature per group: three passes
        [1, 1, 1]
        >>> y = torch.randn(4, 3)
        >>> x, _ = layer.stepwise.invert(layer.hyper, y, None)
        >>> torch.allclose(layer()(x), y, atol=1e-5)
        True
    """

    order: Tensor
    restore: Tensor

    def __init__(
        self, network: MaskedMLP, group: Tensor, context: int, layout: UnivariateLayout
    ) -> None:
        super().__init__()
        group = group.detach().cpu()
        features, total = len(group), layout.total
        order = torch.sort(group, stable=True).indices
        self.sizes: list[int] = torch.bincount(group).tolist()
        blocks = torch.split(order, self.sizes)
        # Group k's parameters, parameters first: parameter p of each of its features, then p + 1.
        rows = [(torch.arange(total)[:, None] + block * total).flatten() for block in blocks]
        self.pieces = network.pieces([torch.arange(features, features + context), *blocks], rows)
        self.features = features
        self.layout = layout
        device = self.pieces.rows.device
        # Not persistent: they follow from the groups.
        self.register_buffer("order", order.to(device), persistent=False)
        self.register_buffer("restore", torch.argsort(order).to(device), persistent=False)

    @classmethod
    def plan(
        cls, network: MaskedMLP | None, group: Tensor, context: int, layout: UnivariateLayout
    ) -> StepwiseInverse | None:
        """The stepwise inverse, or ``None`` where the generic fixed point has to do.

        ``None`` for a single pass or a network that cannot be evaluated in pieces.
        """
        if network is None or int(group.max()) < 1:
            return None
        try:
            return cls(network, group, context, layout)
        except ValueError:
            return None

    def invert(
        self, network: MaskedMLP, y: Tensor, c: Tensor | None, with_ladj: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        r"""Invert group after group, evaluating only what each group's parameters need.

        Arguments:
            network: The network the inverse was planned for.
            y: The outputs, of shape :math:`(*, F)`.
            c: The context, of shape :math:`(*, C)`, or ``None`` without context.
            with_ladj: Whether to return :math:`\log |\det \partial x / \partial y|` too.

        Returns:
            :math:`x` of shape :math:`(*, F)`, the batch shapes of :math:`y` and :math:`c`
            broadcast, and the log-determinant of that batch shape if ``with_ladj``, else
            ``None``.
        """
        features = self.features
        batch = y.shape[:-1]
        if c is not None and c.shape[:-1] != batch:
            batch = torch.broadcast_shapes(batch, c.shape[:-1])
            y = y.expand(*batch, features)
        y = y.reshape(-1, features).index_select(1, self.order)
        n = y.shape[0]
        if c is None:
            first = y.new_empty(n, 0)
        else:
            first = c.expand(*batch, c.shape[-1]).reshape(-1, c.shape[-1])
        groups = y.split_with_sizes(self.sizes, dim=1)
        build, total = self.layout.build_parameters_first, self.layout.total
        ladjs: list[Tensor] = []

        def solve(k: int, phi: Tensor) -> Tensor:
            y_k = groups[k]
            transform = build(phi.view(total, y_k.shape[1], n), (n,))
            return _invert_group(transform, y_k, with_ladj, ladjs)

        pieces = network.forward_pieces(self.pieces, first, solve)
        x = torch.cat(pieces, dim=-1).index_select(1, self.restore).reshape(*batch, features)
        if not with_ladj:
            return x, None
        return x, torch.cat(ladjs, dim=-1).sum(dim=-1).reshape(batch)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"


def _invert_group(
    transform: TorchTransform, y_k: Tensor, with_ladj: bool, ladjs: list[Tensor]
) -> Tensor:
    """The group's features from its outputs; appends the log-determinant to ``ladjs``."""
    if with_ladj:
        x_k, ladj = inverse_and_ladj(transform, y_k)
        ladjs.append(ladj if transform.domain.event_dim == 0 else ladj.unsqueeze(-1))
        return x_k
    # The subclass protocol's method, without the cache bookkeeping of ``inv``.
    inverse: Tensor = (
        transform._inverse(y_k) if isinstance(transform, Transform) else transform.inv(y_k)
    )
    return inverse
