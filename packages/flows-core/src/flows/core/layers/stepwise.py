r"""The stepwise inverse of a masked autoregressive layer: one group of features per pass.

The inverse of :class:`~flows.core.layers.MaskedAutoregressiveTransform` solves its features
group after group. Pass :math:`k` needs the network outputs of group :math:`k` only, and the
masks make those read only the hidden units whose receptive fields lie in groups before
:math:`k`. Each hidden unit is therefore *computable from* a pass: one more than the deepest
group it reads. Sorting each hidden layer's units by that pass makes the units pass :math:`k`
can compute a prefix of the layer, whose widths are planned once per layer.

A pass then evaluates the prefix of each hidden layer it can compute, the output rows of its
group only, and the inverse of its group's features only. The first layer's pre-activation is
kept and updated with each solved group's contribution, the context's share computed once.

(Evaluating each unit only once, in the first pass that can compute it, into buffers that
later passes read, saves multiply-adds but was measured slower on CPU at batch 1024: writing
the new units into column slices of the buffers cost more than the smaller products saved.)
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flows.core.transforms.base import Transform, inverse_and_ladj

if TYPE_CHECKING:
    from flows.core.layers.autoregressive import MaskedAutoregressiveTransform

__all__: list[str] = []


def plain_masked_layers(hyper: nn.Module | None) -> list[Any] | None:
    """The masked layers of a network alternating masked layers and activations, if so."""
    from flows.nn import MaskedLinear, MaskedResidualBlock

    if hyper is None:
        return None
    layers = list(hyper)
    linears, activations = layers[0::2], layers[1::2]
    if (
        len(layers) < 3
        or any(type(layer) is not MaskedLinear or layer.bias is None for layer in linears)
        or any(isinstance(a, (MaskedLinear, MaskedResidualBlock)) for a in activations)
    ):
        return None
    return linears


def plan_hidden_units(
    layer: MaskedAutoregressiveTransform, group: Tensor, rows: Tensor
) -> list[list[int]] | None:
    """Sort each hidden layer's units by the pass they are computable from.

    Registers the sorted unit indices of hidden layer :math:`i` as the buffer
    ``_hidden_units{i}`` of ``layer`` and returns, per hidden layer, the number of units
    computable by each pass; ``None`` if the network is not a plain masked MLP or if an
    output row reads a unit its pass cannot compute.

    Arguments:
        layer: The masked autoregressive layer.
        group: The group (pass) of each feature, of shape :math:`(F,)`.
        rows: The network's output rows in group order.
    """
    linears = plain_masked_layers(layer.hyper)
    if linears is None or layer.passes < 2:
        return None
    device = linears[0].weight.device
    from_pass = torch.cat((group + 1, torch.zeros(layer.context, dtype=torch.long)))
    widths = []
    for i, linear in enumerate(linears[:-1]):
        mask = linear.mask.detach().cpu() != 0
        from_pass = torch.where(mask, from_pass[None, :], 0).amax(dim=1)
        from_pass, units = torch.sort(from_pass, stable=True)
        layer.register_buffer(f"_hidden_units{i}", units.to(device), persistent=False)
        counts = torch.searchsorted(from_pass, torch.arange(layer.passes), right=True)
        widths.append(counts.tolist())
    # Group k's output rows must read only units computable in pass k.
    last = linears[-1].mask.detach().cpu()[rows] != 0
    output_group = torch.sort(group).values.repeat_interleave(layer.layout.total)
    if bool((last & ~(from_pass[None, :] <= output_group[:, None])).any()):
        return None
    return widths


class _Step(NamedTuple):
    """What pass :math:`k` reads."""

    width: int  # the number of units of the first hidden layer computable by this pass
    # The next hidden layers' computable units: their weights (over the previous layer's
    # computable units) and biases.
    hidden: list[tuple[Tensor, Tensor]]
    last: tuple[Tensor, Tensor]  # the output rows of the group, the last hidden layer's prefix
    feature_rows: Tensor  # the group's features' weights in the first layer, transposed


@dataclasses.dataclass
class StepwisePlan:
    """The weights the passes read, and the tensors they were computed from."""

    sources: list[tuple[Tensor, int, int]]
    bias: Tensor
    context_weight: Tensor | None
    steps: list[_Step]


def stepwise_plan(
    layer: MaskedAutoregressiveTransform, linears: list[Any], widths: list[list[int]]
) -> StepwisePlan:
    """The weights each pass reads, as views of the masked weights in plan order.

    Without gradients the plan is kept until a weight, mask or bias changes (in place, by its
    data or replaced): repeated sampling then skips its construction.
    """
    tensors = [t for linear in linears for t in (linear.weight, linear.mask, linear.bias)]
    cached = layer._plan_cache
    caching = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
    if (
        caching
        and cached is not None
        and len(cached.sources) == len(tensors)
        and all(
            t is source and t._version == version and t.data_ptr() == pointer
            for t, (source, version, pointer) in zip(tensors, cached.sources, strict=True)
        )
    ):
        return cached

    features, total, sizes = layer.features, layer.layout.total, layer._group_sizes
    weights, biases = [], []
    columns = None
    for i, linear in enumerate(linears):
        last = i + 1 == len(linears)
        rows = layer._group_rows if last else getattr(layer, f"_hidden_units{i}")
        weight = (linear.weight * linear.mask).index_select(0, rows)
        if columns is not None:
            weight = weight.index_select(1, columns)
        weights.append(weight)
        biases.append(linear.bias.index_select(0, rows))
        columns = rows
    first = weights[0]
    # The features' columns, transposed, in group order: group k's rows are a block.
    feature_rows = first[:, :features].T.index_select(0, layer._group_features).split(sizes)
    last_weights = weights[-1].split([size * total for size in sizes])
    last_biases = biases[-1].split([size * total for size in sizes])
    steps = []
    for k in range(len(sizes)):
        hidden = []
        for i in range(1, len(linears) - 1):
            width = widths[i][k]
            hidden.append((weights[i][:width, : widths[i - 1][k]], biases[i][:width]))
        width = widths[-1][k]
        steps.append(
            _Step(
                width=widths[0][k],
                hidden=hidden,
                last=(last_weights[k][:, :width], last_biases[k]),
                feature_rows=feature_rows[k],
            )
        )
    plan = StepwisePlan(
        sources=[(t, t._version, t.data_ptr()) for t in tensors],
        bias=biases[0].unsqueeze(0),
        context_weight=first[:, features:] if layer.context else None,
        steps=steps,
    )
    layer._plan_cache = plan if caching else None
    return plan


def stepwise_inverse(
    layer: MaskedAutoregressiveTransform, y: Tensor, c: Tensor | None, with_ladj: bool
) -> tuple[Tensor, Tensor | None] | None:
    r"""Invert group after group, evaluating only what each group's parameters need.

    Returns :math:`x` and, if ``with_ladj``, :math:`\log |\det \partial x / \partial y|`;
    ``None`` if the layer has no stepwise plan (the caller falls back to the fixed point).
    """
    widths = layer._hidden_widths
    if widths is None:
        return None
    modules = list(layer.hyper)  # type: ignore[arg-type]
    # Bound methods: the loop runs once per group, its Python overhead counts.
    activations = [activation.forward for activation in modules[1::2]]
    plan = stepwise_plan(layer, modules[0::2], widths)
    features, total = layer.features, layer.layout.total

    batch = y.shape[:-1]
    if c is not None and c.shape[:-1] != batch:
        batch = torch.broadcast_shapes(batch, c.shape[:-1])
        y = y.expand(*batch, features)
    y = y.reshape(-1, features).index_select(1, layer._group_features)
    n = y.shape[0]
    if plan.context_weight is None or c is None:
        # Nothing but the bias before the first group is solved: one row serves the batch.
        h = plan.bias
    else:
        c = c.expand(*batch, c.shape[-1]).reshape(-1, c.shape[-1])
        h = torch.addmm(plan.bias, c, plan.context_weight.T)

    pieces: list[Tensor] = []
    ladjs: list[Tensor] = []
    groups = len(plan.steps)
    in_place = not torch.is_grad_enabled()
    for k, (y_k, step) in enumerate(zip(y.split(layer._group_sizes, 1), plan.steps, strict=True)):
        a = _computable_prefix(step, h, activations)
        phi = F.linear(a, *step.last)
        size = y_k.shape[1]
        if phi.shape[0] != n:
            phi = phi.expand(n, size * total)
        transform = layer.layout.build(phi.view(n, size, total))
        if with_ladj:
            x_k, ladj = inverse_and_ladj(transform, y_k)
            ladjs.append(ladj if transform.domain.event_dim == 0 else ladj.unsqueeze(-1))
        elif isinstance(transform, Transform):
            x_k = transform._inverse(y_k)
        else:
            x_k = transform.inv(y_k)
        pieces.append(x_k)
        if k + 1 == groups:
            break
        if in_place and k > 0:
            h.addmm_(x_k, step.feature_rows)  # h is ours since pass 0, and nothing saved it
        else:
            h = torch.addmm(h, x_k, step.feature_rows)

    x = torch.cat(pieces, dim=-1).index_select(1, layer._group_inverse)
    x = x.reshape(*batch, features)
    if not with_ladj:
        return x, None
    return x, torch.cat(ladjs, dim=-1).sum(dim=-1).reshape(batch)


def _computable_prefix(step: _Step, h: Tensor, activations: list[Any]) -> Tensor:
    """The last hidden layer's units computable in this pass, evaluated from the first."""
    a = activations[0](h.narrow(1, 0, step.width))
    for activation, (weight, bias) in zip(activations[1:], step.hidden, strict=True):
        a = activation(F.linear(a, weight, bias))
    return a
