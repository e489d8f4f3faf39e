r"""The stepwise inverse of a masked autoregressive layer: one group of features per pass.

The inverse of :class:`~flows.core.layers.MaskedAutoregressiveTransform` solves its features
group after group. Pass :math:`k` needs the network outputs of group :math:`k` only, and the
masks make those read only the hidden units whose receptive fields lie in groups before
:math:`k`. Each hidden unit is therefore *computable from* a pass: one more than the deepest
group it reads. Sorting each hidden layer's units by that pass makes the units pass :math:`k`
can compute a prefix of the layer, whose widths are planned once per layer.

A pass then evaluates only the hidden units it needs, the output rows of its group, and the
inverse of its group's features. The first layer's pre-activation is kept and updated with
each solved group's contribution, the context's share computed once.

- Without gradients (sampling), each hidden unit is evaluated once, in the first pass that can
  compute it, into a buffer that later passes read: over the whole inverse the hidden layers
  cost one forward call. The buffers are laid out units first, ``(H, N)``, so that a pass's
  new units are a block of rows that a product writes in place, and its output rows come out
  parameters first, the layout :meth:`UnivariateLayout.build_parameters_first` takes whole.
- With gradients (no in-place writes), a pass evaluates the prefix of each hidden layer it can
  compute.
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
    """What pass :math:`k` reads, with gradients: the prefixes of the hidden layers."""

    width: int  # the number of units of the first hidden layer computable by this pass
    # The next hidden layers' computable units: their weights (over the previous layer's
    # computable units) and biases.
    hidden: list[tuple[Tensor, Tensor]]
    last: tuple[Tensor, Tensor]  # the output rows of the group, the last hidden layer's prefix
    feature_rows: Tensor  # the group's features' weights in the first layer, transposed


class _NewUnitsStep(NamedTuple):
    """What pass :math:`k` reads, without gradients: the units first computable in it."""

    start: int  # the first hidden layer's units start:stop are first computable in this pass
    stop: int
    # The next hidden layers': (start, stop, their weights over the previous layer's
    # computable units, their biases as a column).
    hidden: list[tuple[int, int, Tensor, Tensor]]
    # The output rows of the group, parameters first, over the last hidden layer's computable
    # units, and their biases as a column.
    last: tuple[Tensor, Tensor]
    feature_columns: Tensor  # the group's features' weights in the first layer (H, size)


@dataclasses.dataclass
class StepwisePlan:
    """The weights the passes read, and the tensors they were computed from."""

    sources: list[tuple[Tensor, int, int]]
    new_units: bool  # the plan of the passes without gradients
    bias: Tensor  # the first layer's bias, a row (with gradients) or a column (without)
    context_weight: Tensor | None
    steps: list[Any]  # _Step with gradients, _NewUnitsStep without


def stepwise_plan(
    layer: MaskedAutoregressiveTransform, linears: list[Any], widths: list[list[int]]
) -> StepwisePlan:
    """The weights each pass reads, as views of the masked weights in plan order.

    Without gradients the plan is kept until a weight, mask or bias changes (in place, by its
    data or replaced): repeated sampling then skips its construction.
    """
    tensors = [t for linear in linears for t in (linear.weight, linear.mask, linear.bias)]
    cached = layer._plan_cache
    new_units = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
    if (
        new_units
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
    # The features' columns in group order: group k's columns are a block.
    feature_columns = first[:, :features].index_select(1, layer._group_features).split(sizes, 1)
    last_weights = weights[-1].split([size * total for size in sizes])
    last_biases = biases[-1].split([size * total for size in sizes])
    steps: list[Any] = []
    for k, size in enumerate(sizes):
        width = widths[-1][k]
        if new_units:
            hidden = []
            for i in range(1, len(linears) - 1):
                start, stop = widths[i][k - 1] if k else 0, widths[i][k]
                weight = weights[i][start:stop, : widths[i - 1][k]]
                hidden.append((start, stop, weight, biases[i][start:stop, None]))
            # The group's output rows, feature-major, reordered parameters first.
            weight = last_weights[k][:, :width].unflatten(0, (size, total)).transpose(0, 1)
            bias = last_biases[k].view(size, total).T
            steps.append(
                _NewUnitsStep(
                    start=widths[0][k - 1] if k else 0,
                    stop=widths[0][k],
                    hidden=hidden,
                    last=(weight.reshape(total * size, width), bias.reshape(-1, 1)),
                    feature_columns=feature_columns[k],
                )
            )
        else:
            hidden = [
                (weights[i][: widths[i][k], : widths[i - 1][k]], biases[i][: widths[i][k]])
                for i in range(1, len(linears) - 1)
            ]
            steps.append(
                _Step(
                    width=widths[0][k],
                    hidden=hidden,
                    last=(last_weights[k][:, :width], last_biases[k]),
                    feature_rows=feature_columns[k].T,
                )
            )
    plan = StepwisePlan(
        sources=[(t, t._version, t.data_ptr()) for t in tensors],
        new_units=new_units,
        bias=biases[0].unsqueeze(1 if new_units else 0),
        context_weight=first[:, features:] if layer.context else None,
        steps=steps,
    )
    layer._plan_cache = plan if new_units else None
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
    modules = list(layer.hyper)
    activations = modules[1::2]
    plan = stepwise_plan(layer, modules[0::2], widths)
    features = layer.features

    batch = y.shape[:-1]
    if c is not None and c.shape[:-1] != batch:
        batch = torch.broadcast_shapes(batch, c.shape[:-1])
        y = y.expand(*batch, features)
    y = y.reshape(-1, features).index_select(1, layer._group_features)
    if c is not None:
        c = c.expand(*batch, c.shape[-1]).reshape(-1, c.shape[-1])
    passes = _passes_on_new_units if plan.new_units else _passes_on_prefixes
    pieces, ladjs = passes(layer, plan, activations, y, c, with_ladj)

    x = torch.cat(pieces, dim=-1).index_select(1, layer._group_inverse)
    x = x.reshape(*batch, features)
    if not with_ladj:
        return x, None
    return x, torch.cat(ladjs, dim=-1).sum(dim=-1).reshape(batch)


def _invert_group(transform: Any, y_k: Tensor, with_ladj: bool, ladjs: list[Tensor]) -> Tensor:
    """The group's features from its outputs; appends the log-determinant to ``ladjs``."""
    if with_ladj:
        x_k, ladj = inverse_and_ladj(transform, y_k)
        ladjs.append(ladj if transform.domain.event_dim == 0 else ladj.unsqueeze(-1))
        return x_k
    if isinstance(transform, Transform):
        return transform._inverse(y_k)
    return transform.inv(y_k)


def _passes_on_prefixes(
    layer: MaskedAutoregressiveTransform,
    plan: StepwisePlan,
    activations: list[Any],
    y: Tensor,
    c: Tensor | None,
    with_ladj: bool,
) -> tuple[list[Tensor], list[Tensor]]:
    """The passes with gradients: each evaluates the hidden prefixes it can compute."""
    n, total = y.shape[0], layer.layout.total
    # Bound methods: the loop runs once per group, its Python overhead counts.
    activations = [activation.forward for activation in activations]
    if plan.context_weight is None or c is None:
        # Nothing but the bias before the first group is solved: one row serves the batch.
        h = plan.bias
    else:
        h = torch.addmm(plan.bias, c, plan.context_weight.T)
    pieces: list[Tensor] = []
    ladjs: list[Tensor] = []
    groups = len(plan.steps)
    for k, (y_k, step) in enumerate(zip(y.split(layer._group_sizes, 1), plan.steps, strict=True)):
        a = _computable_prefix(step, h, activations)
        phi = F.linear(a, *step.last)
        size = y_k.shape[1]
        if phi.shape[0] != n:
            phi = phi.expand(n, size * total)
        transform = layer.layout.build(phi.view(n, size, total))
        pieces.append(x_k := _invert_group(transform, y_k, with_ladj, ladjs))
        if k + 1 < groups:
            h = torch.addmm(h, x_k, step.feature_rows)
    return pieces, ladjs


def _passes_on_new_units(
    layer: MaskedAutoregressiveTransform,
    plan: StepwisePlan,
    activations: list[Any],
    y: Tensor,
    c: Tensor | None,
    with_ladj: bool,
) -> tuple[list[Tensor], list[Tensor]]:
    """The passes without gradients: each hidden unit once, into units-first buffers."""
    n, total = y.shape[0], layer.layout.total
    if plan.context_weight is None or c is None:
        h = plan.bias  # a column shared by the batch until the first group is solved
        owned = False
    else:
        h = torch.addmm(plan.bias, plan.context_weight, c.T)  # (H, N)
        owned = True
    in_place = [_in_place(activation) for activation in activations]
    buffers = [y.new_empty(widths[-1], n) for widths in layer._hidden_widths[1:]]
    pieces: list[Tensor] = []
    ladjs: list[Tensor] = []
    groups = len(plan.steps)
    for k, (y_k, step) in enumerate(zip(y.split(layer._group_sizes, 1), plan.steps, strict=True)):
        if step.stop > step.start:
            if not owned:
                h, owned = h.expand(-1, n).clone(), True
            # These pre-activations are final: no later group feeds these units.
            in_place[0](h[step.start : step.stop])
        a, width = h, step.stop
        for (start, stop, weight, bias), buffer, activate in zip(
            step.hidden, buffers, in_place[1:], strict=True
        ):
            if stop > start:
                rows = buffer[start:stop]
                torch.addmm(bias, weight, a[:width], out=rows)
                activate(rows)
            a, width = buffer, stop
        phi = torch.addmm(step.last[1], step.last[0], a[:width])
        size = y_k.shape[1]
        if phi.shape[1] != n:
            phi = phi.expand(total * size, n)
        transform = layer.layout.build_parameters_first(phi.view(total, size, n), (n,))
        pieces.append(x_k := _invert_group(transform, y_k, with_ladj, ladjs))
        if k + 1 == groups:
            break
        if owned:
            # Only the units not computed yet read this group's features.
            later = step.feature_columns[step.stop :]
            h[step.stop :].addmm_(later, x_k.T)
        else:
            h, owned = torch.addmm(h, step.feature_columns, x_k.T), True
    return pieces, ladjs


def _in_place(activation: nn.Module) -> Any:
    """A function applying ``activation`` in place to a block of a buffer."""
    if type(activation) is nn.ReLU:
        return torch.relu_

    def apply(block: Tensor) -> None:
        block.copy_(activation(block))

    return apply


def _computable_prefix(step: _Step, h: Tensor, activations: list[Any]) -> Tensor:
    """The last hidden layer's units computable in this pass, evaluated from the first."""
    a = activations[0](h.narrow(1, 0, step.width))
    for activation, (weight, bias) in zip(activations[1:], step.hidden, strict=True):
        a = activation(F.linear(a, weight, bias))
    return a
