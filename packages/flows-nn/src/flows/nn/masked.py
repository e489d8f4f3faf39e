r"""Masked networks, whose Jacobian is null wherever an adjacency matrix says so.

A masked network can also be evaluated in pieces (:meth:`MaskedMLP.pieces`,
:meth:`MaskedMLP.forward_pieces`): its inputs given stage by stage, each step computing only
the outputs that the inputs known so far determine, each hidden unit once over all steps.
"""

from __future__ import annotations

__all__ = [
    "MaskedLinear",
    "MaskedMLP",
    "MaskedPieces",
    "MaskedResidualBlock",
    "PiecesStep",
    "PiecesWeights",
]

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._checks import check_hidden_features
from ._sequential import LayerSequence, in_place_activation
from .masking import adjacency_masks, check_adjacency, mask_connectivity


class MaskedLinear(nn.Module):
    r"""Creates a linear layer whose weight is multiplied by a fixed binary mask.

    .. math:: y = x (W \odot \Delta)^T + b

    Output :math:`k` depends on input :math:`j` only if :math:`\Delta_{kj} = 1`. The mask is a
    buffer in the dtype of the weight, so the forward pass is one product and one matmul. Each
    row of :math:`W` is initialized like :class:`torch.nn.Linear` with its actual fan-in, the
    number of inputs its mask lets through.

    Arguments:
        mask: The boolean mask :math:`\Delta`, of shape :math:`(C', C)`.
        bias: Whether the layer learns an additive bias :math:`b`.

    Example:
        >>> layer = MaskedLinear(torch.tensor([[True, False], [True, True]]))
        >>> layer
        MaskedLinear(in_features=2, out_features=2, bias=True)
        >>> jacobian = torch.autograd.functional.jacobian(layer, torch.randn(2))
        >>> jacobian[0, 1]
        tensor(0.)
    """

    # Its output is a new tensor: a following activation may run in place (LayerSequence).
    _returns_new_tensor = True

    mask: Tensor
    bias: Tensor | None

    def __init__(self, mask: Tensor, bias: bool = True) -> None:
        super().__init__()

        mask = check_adjacency(mask, name="mask")
        self.out_features, self.in_features = mask.shape

        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features))
        else:
            self.register_parameter("bias", None)
        mask = mask.to(self.weight)
        if _few_features(self.in_features, self.out_features):
            # Column-major, as forward reads it transposed: no copy per call.
            mask = mask.T.contiguous().T
        self.register_buffer("mask", mask)

        self.reset_parameters()

    def reset_parameters(self, rows: Tensor | Sequence[int] | None = None) -> None:
        r"""Draws the weights and biases of row :math:`k` from :math:`\mathcal{U}(-1 /
        \sqrt{n_k}, 1 / \sqrt{n_k})`, where :math:`n_k` is the number of ones in row :math:`k`
        of the mask.

        Arguments:
            rows: The output rows to draw again, the others kept; :py:`None` for all. The
                whole layer is drawn either way and only these rows are kept, so a row gets
                the same values whichever rows are drawn with it.

        Example:
            >>> layer = MaskedLinear(torch.tensor([[True, False], [True, True]]))
            >>> before = layer.weight.detach().clone()
            >>> layer.reset_parameters(rows=[1])
            >>> torch.equal(layer.weight[0], before[0]), torch.equal(layer.weight[1], before[1])
            (True, False)
        """

        with torch.no_grad():
            bound = self.mask.sum(dim=1).clamp(min=1).rsqrt()
            if rows is None:
                self.weight.uniform_(-1, 1).mul_(bound[:, None])
                if self.bias is not None:
                    self.bias.uniform_(-1, 1).mul_(bound)
                return
            rows = torch.as_tensor(rows, dtype=torch.long, device=self.weight.device)
            # Drawn in the order and amounts of a full reset: the random stream is the same.
            weight = torch.empty_like(self.weight).uniform_(-1, 1).mul_(bound[:, None])
            self.weight[rows] = weight[rows]
            if self.bias is not None:
                bias = torch.empty_like(self.bias).uniform_(-1, 1).mul_(bound)
                self.bias[rows] = bias[rows]

    def effective_weight(self) -> Tensor:
        r"""Returns the weight actually applied to the inputs, :math:`W \odot \Delta`."""

        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        r"""
        Arguments:
            x: The input vectors, with shape :math:`(*, C)`.

        Returns:
            The output vectors, with shape :math:`(*, C')`.
        """

        # Each attribute read once: module attribute lookups show in a flow's training step.
        weight, mask, bias = self.weight, self.mask, self.bias
        if bias is not None and x.dim() == 2 and _few_inputs(self, x):
            # CPU BLAS computes the gradients of a layer with few inputs several times faster
            # when the masked weight is laid out transposed (inputs x outputs, contiguous).
            return torch.addmm(bias, x, torch.mul(mask.T.contiguous(), weight.T))
        return F.linear(x, weight * mask, bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


def _few_inputs(layer: MaskedLinear, x: Tensor) -> bool:
    return _few_features(layer.in_features, layer.out_features) and x.is_cpu


def _few_features(in_features: int, out_features: int) -> bool:
    return in_features <= 12 and in_features < out_features


class MaskedResidualBlock(nn.Module):
    r"""Creates a residual block around an activation and a masked linear layer.

    .. math:: y = x + (a(x) (W \odot \Delta)^T + b)

    The skip connection links each feature to itself, so the block keeps the masking if the
    diagonal of the mask :math:`\Delta` is allowed (each hidden unit may depend on itself).

    Arguments:
        activation: The activation module :math:`a`.
        linear: A square masked linear layer.
    """

    def __init__(self, activation: nn.Module, linear: MaskedLinear) -> None:
        super().__init__()

        if linear.in_features != linear.out_features:
            raise ValueError(
                "linear must be square in a residual block, got "
                f"in_features={linear.in_features}, out_features={linear.out_features}"
            )

        self.activation = activation
        self.linear = linear

    def forward(self, x: Tensor) -> Tensor:
        y: Tensor = self.linear(self.activation(x))
        return x + y


class MaskedMLP(LayerSequence):
    r"""Creates a masked multi-layer perceptron, whose Jacobian is null wherever an adjacency
    matrix is.

    The network is a transformation :math:`y = f(x)` from :math:`\mathbb{R}^N` to
    :math:`\mathbb{R}^M` such that

    .. math:: A_{ij} = 0 \implies \frac{\partial y_i}{\partial x_j} = 0 ,

    exactly and for any weights. Its linear layers are masked (:class:`MaskedLinear`) with a
    generalization of the MADE degree construction to arbitrary adjacencies, described in
    :mod:`flows.nn.masking`: hidden units are given the distinct rows of :math:`A` as receptive
    sets. If every hidden layer is at least as wide as the number of distinct rows of
    :math:`A`, every allowed dependency :math:`A_{ij} = 1` is realized.

    Arguments:
        adjacency: The adjacency matrix :math:`A \in \{0, 1\}^{M \times N}`, a boolean tensor.
        hidden_features: The numbers of hidden features of the hidden layers.
        activation: The activation function constructor. If :py:`None`, use
            :class:`torch.nn.ReLU` instead.
        residual: Whether to use residual blocks or not. If :py:`True`, every hidden layer as
            wide as the one before it becomes a :class:`MaskedResidualBlock`, :math:`h + W
            a(h)`; units of equal width share their receptive sets, so the skip connections
            keep the masking.

    Raises:
        TypeError: if :py:`adjacency` is not a boolean tensor.
        ValueError: if :py:`adjacency` is not a non-empty matrix, or has no true entry (the
            Jacobian would be null, every output a constant).

    Example:
        >>> adjacency = torch.tensor(
        ...     [
        ...         [False, True, True],
        ...         [False, True, True],
        ...         [False, False, True],
        ...         [True, True, False],
        ...     ]
        ... )
        >>> net = MaskedMLP(adjacency, [16, 32], activation=nn.ELU)
        >>> x = torch.randn(3)
        >>> net(x).shape
        torch.Size([4])
        >>> jacobian = torch.autograd.functional.jacobian(net, x)
        >>> jacobian != 0
        tensor([[False,  True,  True],
                [False,  True,  True],
                [False, False,  True],
                [ True,  True, False]])
    """

    def __init__(
        self,
        adjacency: Tensor,
        hidden_features: Sequence[int] = (64, 64),
        activation: Callable[[], nn.Module] | None = None,
        residual: bool = False,
    ) -> None:
        adjacency = check_adjacency(adjacency)
        hidden_features = check_hidden_features(hidden_features)
        if activation is None:
            activation = nn.ReLU
        elif not callable(activation):
            raise TypeError(
                f"activation must be a module constructor such as torch.nn.ELU, got {activation!r}"
            )

        masks = adjacency_masks(adjacency, hidden_features)

        layers: list[nn.Module] = [MaskedLinear(masks[0])]
        for mask in masks[1:-1]:
            if residual and mask.shape[0] == mask.shape[1]:
                layers.append(MaskedResidualBlock(activation(), MaskedLinear(mask)))
            else:
                layers.extend((activation(), MaskedLinear(mask)))
        if len(masks) > 1:
            layers.extend((activation(), MaskedLinear(masks[-1])))

        super().__init__(*layers)

        self.in_features = adjacency.shape[1]
        self.out_features = adjacency.shape[0]

    def pieces(
        self,
        inputs: Sequence[Tensor | Sequence[int]],
        outputs: Sequence[Tensor | Sequence[int]],
    ) -> MaskedPieces:
        r"""Plans evaluating the network in pieces, for :meth:`forward_pieces`.

        The inputs arrive in stages :math:`S_0, S_1, \dots, S_K`: :math:`x_{S_0}` is known at
        the start and step :math:`k` returns :math:`x_{S_{k + 1}}`. Step :math:`k` computes the
        block :math:`y_{O_k}` of the outputs, which may depend only on the inputs known by
        then:

        .. math:: i \in O_k, \; j \in S_l, \; l > k \implies
            \frac{\partial y_i}{\partial x_j} = 0

        through the masks, whatever the weights. A hidden unit :math:`u` is computable from
        step :math:`s(u)`, the latest stage of the inputs it reads (0 if none); inputs in no
        stage are never known. Each hidden layer's units are sorted by :math:`s`, so the
        units computable at step :math:`k` are a prefix of the layer.

        Arguments:
            inputs: The indices of the inputs of each stage :math:`S_0, \dots, S_K`
                (:math:`K + 1` disjoint lists).
            outputs: The indices of the outputs of each step :math:`O_0, \dots, O_{K - 1}`,
                in the order :meth:`forward_pieces` returns them.

        Returns:
            The plan, a module of index buffers: register it beside the network (or move it
            with it), so that it follows the network's device.

        Raises:
            TypeError: if an entry of :py:`inputs` or :py:`outputs` is not a list of integers.
            ValueError: if the indices are out of range, the stages overlap, an output of step
                :math:`k` reads an input of a later stage, there are not :math:`K + 1` stages
                for :math:`K \geq 1` steps, or the network has residual blocks, a layer
                without bias or no hidden layer.

        Example:
            >>> adjacency = torch.ones(3, 3, dtype=torch.bool).tril(diagonal=-1)
            >>> net = MaskedMLP(adjacency, [16, 16])
            >>> pieces = net.pieces(inputs=[[], [0], [1], [2]], outputs=[[0], [1], [2]])
            >>> pieces.steps, pieces.widths
            (3, [[0, 8, 16], [0, 8, 16]])
        """

        return MaskedPieces(self, inputs, outputs)

    def forward_pieces(
        self,
        pieces: MaskedPieces,
        first: Tensor,
        step: Callable[[int, Tensor], Tensor],
    ) -> list[Tensor]:
        r"""Evaluates the network in pieces, one block of outputs per step.

        With the stages and blocks of :meth:`pieces`, step :math:`k` computes

        .. math:: y_{O_k} = f(x)_{O_k}, \quad \text{given } x_{S_0}, \dots, x_{S_k} ,

        and calls :py:`step(k, y)`, which returns :math:`x_{S_{k + 1}}`: the inverse of an
        autoregressive transform solves its features block after block this way. The first
        layer's pre-activations are kept and updated with each stage's contribution.

        - Without gradients, each hidden unit :math:`u` is evaluated once, at step
          :math:`s(u)`, into a buffer that later steps read: over all steps the hidden layers
          cost one forward call. The buffers are laid out units first, :math:`(H, N)`, so a
          step's new units are a block of rows that a product writes in place.
        - With gradients, or while compiling, step :math:`k` evaluates every prefix of
          computable units anew, without in-place writes.

        Either way the outputs equal :math:`f(x)` up to rounding. Activations must act element
        by element (as those of any masked network must, for the masks to hold); they run as
        functions, in place where :func:`in_place_activation` allows, and module hooks are not
        called.

        Arguments:
            pieces: The plan, from :meth:`pieces` on this network.
            first: The inputs known at the start :math:`x_{S_0}`, of shape
                :math:`(N, |S_0|)` (:math:`(N, 0)` if none: it gives the batch size).
            step: Called as :py:`step(k, y)` with :math:`y_{O_k}` rows first, of shape
                :math:`(|O_k|, N)` in the order of :py:`outputs[k]`; returns
                :math:`x_{S_{k + 1}}` of shape :math:`(N, |S_{k + 1}|)`.

        Returns:
            What :py:`step` returned, :math:`x_{S_1}, \dots, x_{S_K}`.

        Example:
            >>> adjacency = torch.ones(3, 3, dtype=torch.bool).tril(diagonal=-1)
            >>> net = MaskedMLP(adjacency, [16, 16])
            >>> pieces = net.pieces(inputs=[[], [0], [1], [2]], outputs=[[0], [1], [2]])
            >>> y = torch.randn(5, 3)
            >>> def step(k, out):  # solves y_k = x_k + f(x)_k for x_k
            ...     return y[:, k : k + 1] - out.T
            >>> x = torch.cat(net.forward_pieces(pieces, y.new_empty(5, 0), step), dim=1)
            >>> torch.allclose(x + net(x), y, atol=1e-6)
            True
        """

        layers = list(self)
        reuse = not torch.is_grad_enabled() and not torch.compiler.is_compiling()
        weights = pieces.weights(layers, reuse)
        if reuse:
            return _run_on_new_units(pieces, weights, layers[1::2], first, step)
        return _run_on_prefixes(weights, layers[1::2], first, step)


def _masked_linears(layers: list[nn.Module]) -> list[MaskedLinear] | None:
    """The linear layers of a network alternating them with activations, if it is one."""
    linears = layers[0::2]
    if len(layers) < 3 or len(layers) % 2 == 0:
        return None
    checked = []
    for layer in linears:
        if type(layer) is not MaskedLinear or layer.bias is None:
            return None
        checked.append(layer)
    if any(isinstance(a, (MaskedLinear, MaskedResidualBlock)) for a in layers[1::2]):
        return None
    return checked


class PiecesStep(NamedTuple):
    """What step :math:`k` of :meth:`MaskedMLP.forward_pieces` reads: the units it evaluates."""

    # The first hidden layer's units start:stop, activated in this step: the new ones when
    # each unit is evaluated once, else start is 0 and they are all the computable ones.
    start: int
    stop: int
    # The same for the next hidden layers: (start, stop, their weights over the previous
    # layer's computable units, their biases as a column).
    hidden: list[tuple[int, int, Tensor, Tensor]]
    # The output rows of the block over the last hidden layer's computable units, and their
    # biases as a column.
    last: tuple[Tensor, Tensor]
    # The first layer's weights of the inputs this step returns (H, |S_k+1|); None at the end.
    columns: Tensor | None


@dataclasses.dataclass
class PiecesWeights:
    """The weights the steps of :meth:`MaskedMLP.forward_pieces` read, in plan order.

    Made by :meth:`MaskedPieces.weights`; views of the masked weights, except where a row or
    column selection copies.
    """

    # The tensors they were computed from, with their versions and data pointers.
    sources: list[tuple[Tensor, int, int]]
    reuse: bool  # whether the steps evaluate only their new units (without gradients)
    bias: Tensor  # the first layer's bias, a column
    first_columns: Tensor | None  # the first layer's weights of x_{S_0}; None if S_0 is empty
    steps: list[PiecesStep]
    # Whether step 0 evaluates units of deeper hidden layers that read no unit (their biases).
    deep_biases: bool


class MaskedPieces(nn.Module):
    r"""The plan by which :meth:`MaskedMLP.forward_pieces` evaluates a network in pieces.

    Made by :meth:`MaskedMLP.pieces`, which describes the stages and blocks. It holds the
    order of each hidden layer's units (sorted by the step from which they are computable),
    the input columns and output rows of each step, as non-persistent buffers; and, without
    gradients, the weights in that order, kept until a weight, mask or bias of the network
    changes (in place or replaced).

    Attributes:
        steps: The number of steps :math:`K`.
        widths: Per hidden layer, the number of its units computable at each step.
        input_sizes: The sizes :math:`|S_0|, \dots, |S_K|` of the stages.
        output_sizes: The sizes :math:`|O_0|, \dots, |O_{K - 1}|` of the blocks.
    """

    units: Tensor
    columns: Tensor
    rows: Tensor

    def __init__(
        self,
        network: MaskedMLP,
        inputs: Sequence[Tensor | Sequence[int]],
        outputs: Sequence[Tensor | Sequence[int]],
    ) -> None:
        super().__init__()

        linears = _masked_linears(list(network))
        if linears is None:
            raise ValueError(
                "only a masked network of plain layers is evaluated in pieces: masked linear "
                "layers with bias alternating with activations, at least one hidden layer, no "
                "residual blocks (residual=True)"
            )
        if isinstance(outputs, Tensor) or not isinstance(outputs, Sequence) or not outputs:
            raise TypeError(f"outputs must be a non-empty list of index lists, got {outputs!r}")
        if isinstance(inputs, Tensor) or not isinstance(inputs, Sequence):
            raise TypeError(f"inputs must be a list of index lists, got {inputs!r}")
        steps = len(outputs)
        if len(inputs) != steps + 1:
            raise ValueError(
                f"inputs must list {steps + 1} stages for {steps} steps (those known at the "
                f"start, then those each step returns), got {len(inputs)}"
            )
        stages = [
            _indices("inputs", k, entry, network.in_features) for k, entry in enumerate(inputs)
        ]
        blocks = [
            _indices("outputs", k, entry, network.out_features) for k, entry in enumerate(outputs)
        ]

        # The step from which each input is known; steps never reach those in no stage.
        stage = torch.full((network.in_features,), steps + 1, dtype=torch.long)
        for k, indices in enumerate(stages):
            if bool((stage[indices] <= steps).any()) or len(torch.unique(indices)) != len(indices):
                raise ValueError(
                    f"inputs must be disjoint stages, but inputs[{k}] = {indices.tolist()} "
                    "repeats an input"
                )
            stage[indices] = k

        device = linears[0].weight.device
        known = stage
        units = []
        self.widths: list[list[int]] = []
        for linear in linears[:-1]:
            mask = linear.mask.detach().cpu() != 0
            # In the layer's own unit order: the next mask's columns follow it.
            known = torch.where(mask, known[None, :], 0).amax(dim=1)
            order = torch.sort(known, stable=True)
            units.append(order.indices)
            counts = torch.searchsorted(order.values, torch.arange(steps), right=True)
            self.widths.append(counts.tolist())
        last = linears[-1].mask.detach().cpu() != 0
        for k, rows in enumerate(blocks):
            late = last[rows] & (known[None, :] > k)
            if bool(late.any()):
                _raise_late_output(network, stage, steps, k, rows, late)

        self.steps = steps
        self.input_sizes = [len(indices) for indices in stages]
        self.output_sizes = [len(rows) for rows in blocks]
        # Not persistent: they follow from the masks and the stages.
        self.register_buffer("units", torch.cat(units).to(device), persistent=False)
        self.register_buffer("columns", torch.cat(stages[:steps]).to(device), persistent=False)
        self.register_buffer("rows", torch.cat(blocks).to(device), persistent=False)
        self._cache: PiecesWeights | None = None

    def weights(self, layers: Sequence[nn.Module], reuse: bool) -> PiecesWeights:
        r"""The weights each step reads, as views of the masked weights in plan order.

        With :py:`reuse` (no gradients), each step reads only the units it evaluates first,
        and the result is kept until a weight, mask or bias changes: repeated evaluations
        skip its construction.

        Arguments:
            layers: The network's layers, :py:`list(network)`.
            reuse: Whether the steps evaluate each hidden unit once, in place.

        Raises:
            ValueError: if the layers are not those of a network like the one planned for.
        """

        # Read once per call, as the hot path of sampling: a hit means the very tensors the
        # plan was made from, so the layers are the ones it checked.
        plain: Sequence[Any] = layers[0::2]
        tensors: list[Tensor] = []
        try:
            for linear in plain:
                tensors += (linear.weight, linear.mask, linear.bias)
        except AttributeError:
            tensors = []  # not masked linear layers: refused below
        cached = self._cache
        if reuse and cached is not None and _unchanged(cached.sources, tensors):
            return cached
        linears = _masked_linears(list(layers))
        if linears is None or len(linears) != len(self.widths) + 1:
            raise ValueError(
                "these pieces were planned for another network: plan them with this network's "
                "pieces()"
            )

        widths = self.widths
        units = torch.split(self.units, [linear.out_features for linear in linears[:-1]])
        matrices, biases = [], []
        columns: Tensor | None = None
        for i, linear in enumerate(linears):
            rows = self.rows if i + 1 == len(linears) else units[i]
            matrix = linear.effective_weight().index_select(0, rows)
            if columns is not None:
                matrix = matrix.index_select(1, columns)
            matrices.append(matrix)
            biases.append(tensors[3 * i + 2].index_select(0, rows))
            columns = rows
        stage_columns = torch.split(
            matrices[0].index_select(1, self.columns), self.input_sizes[: self.steps], dim=1
        )
        last_matrices = torch.split(matrices[-1], self.output_sizes)
        last_biases = torch.split(biases[-1], self.output_sizes)
        steps = []
        for k in range(self.steps):
            hidden = []
            for i in range(1, len(linears) - 1):
                start = widths[i][k - 1] if reuse and k else 0
                stop = widths[i][k]
                matrix = matrices[i][start:stop, : widths[i - 1][k]]
                hidden.append((start, stop, matrix, biases[i][start:stop, None]))
            steps.append(
                PiecesStep(
                    start=widths[0][k - 1] if reuse and k else 0,
                    stop=widths[0][k],
                    hidden=hidden,
                    last=(last_matrices[k][:, : widths[-1][k]], last_biases[k][:, None]),
                    columns=stage_columns[k + 1] if k + 1 < self.steps else None,
                )
            )
        plan = PiecesWeights(
            sources=[(t, t._version, t.data_ptr()) for t in tensors],
            reuse=reuse,
            bias=biases[0][:, None],
            first_columns=stage_columns[0] if self.input_sizes[0] else None,
            steps=steps,
            deep_biases=any(counts[0] > 0 for counts in widths[1:]),
        )
        self._cache = plan if reuse else None
        return plan

    def extra_repr(self) -> str:
        return f"steps={self.steps}, widths={self.widths}"


def _indices(name: str, k: int, entry: object, size: int) -> Tensor:
    """The indices ``entry`` of ``name[k]`` as a 1-D integer tensor on the CPU, checked."""
    try:
        indices = torch.as_tensor(entry).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        indices = None
    if indices is not None and indices.dim() == 1 and indices.numel() == 0:
        return torch.empty(0, dtype=torch.long)  # [] is a float tensor to torch
    if (
        indices is None
        or indices.is_floating_point()
        or indices.is_complex()
        or indices.dtype is torch.bool
        or indices.dim() != 1
    ):
        raise TypeError(f"{name}[{k}] must be a list of integer indices, got {entry!r}")
    indices = indices.long()
    if bool(((indices < 0) | (indices >= size)).any()):
        raise ValueError(
            f"{name}[{k}] must hold indices in 0, ..., {size - 1}, got {indices.tolist()}"
        )
    return indices


def _raise_late_output(
    network: MaskedMLP, stage: Tensor, steps: int, k: int, rows: Tensor, late: Tensor
) -> None:
    """Name an output of step ``k`` that reads an input known only later, and raise."""
    masks = [m.mask.detach().cpu() != 0 for m in network if isinstance(m, MaskedLinear)]
    row = int(rows[late.any(dim=1)][0])
    j = int((mask_connectivity(masks)[row] & (stage > k)).nonzero()[0])
    if int(stage[j]) > steps:
        where = f"input {j}, which is in no stage"
    else:
        where = f"input {j} of stage {int(stage[j])}, returned by step {int(stage[j]) - 1}"
    raise ValueError(f"outputs[{k}] holds output {row}, which depends on {where}")


def _unchanged(sources: list[tuple[Tensor, int, int]], tensors: list[Tensor]) -> bool:
    """Whether ``tensors`` are the sources, neither written in place nor given new data."""
    # The version counter is torch's only record of in-place writes.
    return len(sources) == len(tensors) and all(
        t is source and t._version == version and t.data_ptr() == pointer
        for t, (source, version, pointer) in zip(tensors, sources, strict=True)
    )


def _copy_into(activation: nn.Module, block: Tensor) -> Tensor:
    """Apply ``activation`` to a block of a buffer, in place by a copy (no gradients)."""
    return block.copy_(activation(block))


def _run_on_new_units(
    pieces: MaskedPieces,
    weights: PiecesWeights,
    activations: list[nn.Module],
    first: Tensor,
    step: Callable[[int, Tensor], Tensor],
) -> list[Tensor]:
    """The steps without gradients: each hidden unit once, into units-first buffers."""
    n = first.shape[0]
    if weights.first_columns is None:
        h = weights.bias  # a column shared by the batch until a stage is fed
        owned = False
    else:
        h = torch.addmm(weights.bias, weights.first_columns, first.T)  # (H, N)
        owned = True
    in_place: list[Callable[[Tensor], Tensor]] = [
        in_place_activation(a) or functools.partial(_copy_into, a) for a in activations
    ]
    buffers = [first.new_empty(widths[-1], n) for widths in pieces.widths[1:]]
    if not owned and weights.deep_biases:
        # Deeper units that read no unit are written for the whole batch.
        h, owned = h.expand(-1, n).clone(), True
    results: list[Tensor] = []
    for k, s in enumerate(weights.steps):
        if s.stop > s.start:
            if not owned:
                h, owned = h.expand(-1, n).clone(), True
            # These pre-activations are final: no later stage feeds these units.
            in_place[0](h[s.start : s.stop])
        a, width = h, s.stop
        for (start, stop, matrix, bias), buffer, activate in zip(
            s.hidden, buffers, in_place[1:], strict=True
        ):
            if stop > start:
                rows = buffer[start:stop]
                torch.addmm(bias, matrix, a[:width], out=rows)
                activate(rows)
            a, width = buffer, stop
        y = torch.addmm(s.last[1], s.last[0], a[:width])
        if y.shape[1] != n:
            y = y.expand(-1, n)
        x = step(k, y)
        results.append(x)
        if s.columns is None:
            break
        if owned:
            # Only the units not computed yet read this stage.
            h[s.stop :].addmm_(s.columns[s.stop :], x.T)
        else:
            h, owned = torch.addmm(h, s.columns, x.T), True
    return results


def _run_on_prefixes(
    weights: PiecesWeights,
    activations: list[nn.Module],
    first: Tensor,
    step: Callable[[int, Tensor], Tensor],
) -> list[Tensor]:
    """The steps with gradients: each evaluates the prefixes of units it can compute."""
    n = first.shape[0]
    # Bound methods: the loop runs once per step, its Python overhead counts.
    forwards = [activation.forward for activation in activations]
    if weights.first_columns is None:
        h = weights.bias  # a column shared by the batch until a stage is fed
    else:
        h = torch.addmm(weights.bias, weights.first_columns, first.T)
    results: list[Tensor] = []
    for k, s in enumerate(weights.steps):
        a = forwards[0](h[: s.stop])
        for forward, (_, _, matrix, bias) in zip(forwards[1:], s.hidden, strict=True):
            a = forward(torch.addmm(bias, matrix, a))
        y = torch.addmm(s.last[1], s.last[0], a)
        if y.shape[1] != n:
            y = y.expand(-1, n)
        x = step(k, y)
        results.append(x)
        if s.columns is None:
            break
        h = torch.addmm(h, s.columns, x.T)
    return results
