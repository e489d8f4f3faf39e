r"""Fit a flow to data by maximum likelihood: batches, Adam, held-out early stopping.

:func:`fit` minimizes the negative log-likelihood

.. math:: \mathcal{L}(\phi) = -\frac{1}{B} \sum_{i=1}^{B} \log p_\phi(x_i \mid c_i)

over shuffled mini-batches of the training split, measures the same quantity on a held-out split,
stops when it has not improved for ``patience`` evaluations and restores the best weights. A row is
one event of any rank: a vector of ``(N, D)`` data, an image of ``(N, C, H, W)``; discrete data
(image levels) can be dequantized with fresh noise at every step, the held-out rows once
(``dequantize``). With ``compile``, the loss is wrapped in :func:`torch.compile` once and that one
wrapper serves every step and every evaluation; with ``autocast``, the forward pass runs under
:func:`torch.autocast` (bfloat16 or float16 networks; the flows keep their transforms' and
log-determinants' arithmetic in the data's dtype). Under :mod:`torch.distributed` each process
takes its share of every batch and the gradients are averaged, so a run on any number of processes
takes the same steps as one process on the same global batch. A run whose loss becomes NaN or
infinite stops with :class:`FitDivergedError`, the flow holding the best finite weights it had.

The parts of a fit that other training loops reuse (:mod:`flows.core.variational`'s, say) are
public in this module, though not exported from :mod:`flows.core`: :func:`as_rows` (data
checked into rows), :func:`epoch_batches` (the epoch and batch order), :class:`RunningLoss`
(the losses between evaluations) and :class:`BestWeights` (early stopping and the weights it
restores). The loss, eager or compiled, is :class:`~flows.core.compiling.Objective`'s.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from flows.core.compiling import AUTOCAST_DTYPES, Loss, Objective, compile_options
from flows.core.optimizer import make_adam, plateau_halving
from flows.core.validation import check_count, check_fraction, check_positive

__all__ = ["FitDivergedError", "FitProgress", "FitResult", "fit"]


class FitDivergedError(RuntimeError):
    """Training met a non-finite loss or NLL; the flow holds the best finite weights it had.

    Arguments:
        step: The optimizer step whose loss (or the NLL measured after it) was not finite.
        loss: That loss, NaN or infinite.
        what: What was measured: ``"loss"`` (a training batch), ``"held-out NLL"`` or
            ``"train NLL"`` (of the final weights).

    Example:
        >>> error = FitDivergedError(12, float("nan"))
        >>> error.step, error.loss
        (12, nan)
        >>> str(error)
        'training diverged at step 12 (loss nan): lower lr or set clip_grad'
    """

    def __init__(self, step: int, loss: float, what: str = "loss") -> None:
        super().__init__(
            f"training diverged at step {step} ({what} {loss}): lower lr or set clip_grad"
        )
        self.step = step
        self.loss = loss
        self.what = what

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its attributes, so it crosses process boundaries (torch.multiprocessing).
        return (type(self), (self.step, self.loss, self.what))


@dataclasses.dataclass(frozen=True)
class FitProgress:
    """What :func:`fit` tells its ``callback`` after every optimizer step.

    Arguments:
        step: The number of optimizer steps taken so far.
        total_steps: The number of steps planned (fewer are taken if training stops early).
        epoch: The current epoch, counted from 1.
        loss: The mean negative log-likelihood of the last (global) batch.
        val_nll: The held-out mean NLL if it was measured after this step, else ``None``.
        best_val_nll: The best held-out mean NLL so far (``None`` before the first measure).
    """

    step: int
    total_steps: int
    epoch: int
    loss: float
    val_nll: float | None
    best_val_nll: float | None


@dataclasses.dataclass
class FitResult:
    """The outcome of :func:`fit`.

    Arguments:
        flow: The trained flow, holding the best weights found (the same object passed in).
        history: One entry per evaluation: ``{"step", "epoch", "train_nll", "val_nll", "lr"}``
            (``lr`` the learning rate of the steps before it),
            ``train_nll`` being the mean batch loss since the previous evaluation.
        train_nll: Mean NLL (nats per row) of the final weights on the training split.
        val_nll: Mean NLL of the final weights on the held-out split (``None`` without one).
        steps: The number of optimizer steps taken.
        seconds: Wall time of the whole fit.
        best_step: The step whose weights were kept.
        compile_seconds: For a compiled fit, the wall time of the calls that compiled (the
            first training step and the first evaluation, each including its first run);
            ``None`` for an eager fit, or one that fell back to eager.
        step_seconds: The mean wall time of a training step after the first (as the host sees
            it: on a GPU, the time to queue the step, until a later read waits for it).
    """

    flow: nn.Module
    history: list[dict[str, float]]
    train_nll: float
    val_nll: float | None
    steps: int
    seconds: float
    best_step: int
    compile_seconds: float | None = None
    step_seconds: float = math.nan


def _check_arguments(
    epochs: Any,
    steps: Any,
    batch_size: Any,
    lr: Any,
    validation: Any,
    patience: Any,
    clip_grad: Any,
    eval_every: Any,
) -> None:
    check_count("epochs", epochs, optional=True)
    check_count("steps", steps, optional=True)
    if epochs is not None and steps is not None:
        raise ValueError(f"give epochs or steps, not both (got epochs={epochs}, steps={steps})")
    check_count("batch_size", batch_size)
    check_count("patience", patience, optional=True)
    check_count("eval_every", eval_every, optional=True)
    check_positive("lr", lr, finite=True)
    check_fraction("validation", validation, one=False)
    check_positive("clip_grad", clip_grad, optional=True)


def as_rows(
    name: str, value: Any, rows: int | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    """``value`` as a finite ``(rows, *event)`` tensor of the flow's device and dtype.

    A row is everything after the first dimension: ``(N, D)`` holds ``N`` vectors, and
    ``(N, C, H, W)`` ``N`` images; a row is finite when all its values are.

    Raises:
        ValueError: ``value`` has fewer than 2 dimensions, another number of rows than
            ``rows``, or holds NaN or inf (in the flow's dtype); the message names ``name``
            and the first rows.
    """
    source = torch.as_tensor(value)
    tensor = source.to(device=device, dtype=dtype)
    if rows is None and (tensor.ndim < 2 or tensor.shape[0] < 1):
        raise ValueError(
            f"{name} must have shape (rows, features) with rows >= 1, got {tuple(tensor.shape)}"
        )
    if rows is not None and (tensor.ndim < 2 or tensor.shape[0] != rows):
        raise ValueError(
            f"{name} must have shape ({rows}, C) to match x, got {tuple(tensor.shape)}"
        )
    finite = torch.isfinite(tensor).flatten(1).all(dim=1)
    if not bool(finite.all()):  # one check per fit, before training
        bad = (~finite).nonzero().flatten()
        shown = ", ".join(str(int(i)) for i in bad[:5])
        more = f" and {bad.numel() - 5} more" if bad.numel() > 5 else ""
        # Finite values that overflow the flow's dtype deserve their own explanation.
        first = source[int(bad[0])].to(device="cpu")
        overflow = first.is_floating_point() and bool(torch.isfinite(first).all())
        why = f"values too large for {dtype}" if overflow else "NaN or inf"
        raise ValueError(
            f"{name} holds {why} in row(s) {shown}{more} of {tensor.shape[0]}; "
            "remove or fix those rows before fitting"
        )
    return tensor


def check_rows_fit_flow(flow: nn.Module, x: Tensor | None, context: Tensor | None) -> None:
    """Refuse rows that do not fit a preset: another width, outside its support, or a context.

    A preset records ``features``, ``context`` and ``support`` in ``flow.arguments``; an
    unconditional flow would silently ignore a context given to it, and a row outside the
    support would make the loss infinite. Other flows are not checked here.

    Raises:
        ValueError: ``x`` has another number of features than ``arguments["features"]``,
            rows outside ``arguments["support"]``, or ``context`` another number of features
            than ``arguments["context"]``, or is given to a flow of ``context=0``.
    """
    arguments = getattr(flow, "arguments", None)
    if not isinstance(arguments, Mapping):
        return
    name = type(flow).__name__
    features = arguments.get("features")
    if x is not None and isinstance(features, int) and x.ndim == 2 and x.shape[1] != features:
        raise ValueError(
            f"x has {x.shape[1]} features (columns) but the flow {name} was built for "
            f"features={features}"
        )
    support = arguments.get("support")
    if x is not None and support is not None and x.ndim == 2:
        _check_inside(x, support, name)
    expected = arguments.get("context")
    if not isinstance(expected, int) or isinstance(expected, bool) or context is None:
        return
    if expected == 0:
        raise ValueError(
            f"context was given but the flow {name} was built without one (context=0), so it "
            "would ignore it: build it with context=C, or leave context out"
        )
    if context.ndim == 2 and context.shape[1] != expected:
        raise ValueError(
            f"context has {context.shape[1]} features (columns) but the flow {name} was built "
            f"for context={expected}"
        )


def _check_inside(x: Tensor, support: tuple[Any, Any], name: str) -> None:
    """Refuse rows on or beyond the bounds of a preset's (open) support: their density is 0."""
    low, high = (torch.as_tensor(bound, dtype=x.dtype, device=x.device) for bound in support)
    outside = ((x <= low) | (x >= high)).any(dim=1)
    if bool(outside.any()):
        rows = outside.nonzero().flatten()
        first = int(rows[0])
        raise ValueError(
            f"x has {len(rows)} of {x.shape[0]} rows outside the support {tuple(support)} of "
            f"the flow {name}, where its density is 0 (the first, row {first}: "
            f"{x[first].tolist()}): give the flow a support that holds the data, or drop them"
        )


@dataclasses.dataclass(frozen=True)
class _Processes:
    """This process's place among the :mod:`torch.distributed` processes taking part in a fit.

    Outside torch.distributed there is one process, of rank 0, and every method is a no-op.
    Each process takes every ``world``-th row of a batch, starting at its ``rank``.
    """

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> _Processes:
        distributed = torch.distributed
        if distributed.is_available() and distributed.is_initialized():
            return cls(distributed.get_rank(), distributed.get_world_size())
        return cls()

    def share(self, rows: Tensor) -> Tensor:
        """This process's share of the row indices ``rows``."""
        return rows[self.rank :: self.world]

    def all_sum(self, tensor: Tensor) -> Tensor:
        """Sum ``tensor`` in place over the processes; return it."""
        if self.world > 1:
            torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor

    def broadcast_state(self, flow: nn.Module) -> None:
        """Start every process from the weights of process 0."""
        if self.world > 1:
            for tensor in [*flow.parameters(), *flow.buffers()]:
                torch.distributed.broadcast(tensor.data, src=0)

    def initialize_together(
        self, flow: nn.Module, x: Tensor, c: Tensor | None, batch: Tensor
    ) -> None:
        """Initialise the data-dependent layers from the whole first ``batch``, alike everywhere.

        A layer initialised by the first batch it sees (an ``initialized`` buffer still false,
        as :class:`~flows.core.ActNorm` has) would see only this process's share of it, and
        each process would start from different weights that no later step brings together.
        So every process runs the whole batch once, without gradients, as one process would:
        the layers that initialise keep what they set, every other buffer (running statistics)
        is put back, and all processes then hold process 0's weights. Nothing in one process.
        """
        if self.world == 1:
            return
        pending = [
            module
            for module in flow.modules()
            if isinstance(getattr(module, "initialized", None), Tensor)
            and not bool(module.initialized)
        ]
        if pending:
            kept = {id(b) for module in pending for b in module.buffers(recurse=False)}
            saved = [(b, b.clone()) for b in flow.buffers() if id(b) not in kept]
            with torch.no_grad():
                _nll_sum(flow, x[batch], None if c is None else c[batch])
                for buffer, value in saved:
                    buffer.copy_(value)
        self.broadcast_state(flow)

    def average_running(self, flow: nn.Module) -> None:
        """Average the running statistics (buffers named ``running_*``) over the processes.

        Each process's :class:`~flows.core.BatchNorm` averages the statistics of its own share
        of the batches; their mean is what evaluation, sampling and the checkpoint use, the same
        in every process. The averages are linear, so averaging at every evaluation and
        continuing is averaging once at the end. Nothing in one process.
        """
        if self.world == 1:
            return
        running = [
            b
            for name, b in flow.named_buffers()
            if name.rpartition(".")[2].startswith("running_") and b.is_floating_point()
        ]
        if not running:
            return
        flat = self.all_sum(torch.cat([b.detach().reshape(-1) for b in running]))
        flat /= self.world
        offset = 0
        with torch.no_grad():
            for b in running:
                b.copy_(flat[offset : offset + b.numel()].view_as(b))
                offset += b.numel()

    def common_seed(self, seed: int | None, device: torch.device) -> int:
        """``seed`` (drawn from torch's global generator if ``None``) as process 0 has it."""
        if seed is None:
            seed = int(torch.randint(2**62, ()))
        if self.world > 1:
            shared = torch.tensor([seed], dtype=torch.int64, device=device)
            torch.distributed.broadcast(shared, src=0)
            seed = int(shared)
        return seed

    def sum_gradients(
        self, params: list[nn.Parameter], loss: Tensor, dtype: torch.dtype
    ) -> Tensor:
        """Sum the gradients of ``params`` and ``loss`` over the processes; return the sum."""
        if self.world == 1:
            return loss
        # One all-reduce for every gradient and the loss: sums of per-process shares.
        flat = torch.cat(
            [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
            + [loss.reshape(1).to(dtype)]
        )
        self.all_sum(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n
        return flat[-1].clone()  # not a view that would keep the whole buffer alive


@dataclasses.dataclass(frozen=True)
class _Split:
    """The training and held-out rows of the data (and of the context, if any)."""

    train_x: Tensor
    train_c: Tensor | None
    val_x: Tensor
    val_c: Tensor | None

    @property
    def held(self) -> int:
        """The number of held-out rows."""
        return self.val_x.shape[0]


def _split(
    x: Tensor,
    context: Tensor | None,
    validation: float,
    generator: torch.Generator,
    device: torch.device,
) -> _Split:
    """Hold out ``validation`` of the rows (at least one if ``validation > 0``), at random."""
    rows = x.shape[0]
    held = round(validation * rows)
    if validation > 0 and held == 0:
        held = 1
    if rows - held < 1:
        raise ValueError(
            f"x has {rows} row(s): too few to hold out {validation:.0%} and still train on some"
        )
    order = torch.randperm(rows, generator=generator).to(device)
    train, val = order[held:], order[:held]
    if context is None:
        return _Split(x[train], None, x[val], None)
    return _Split(x[train], context[train], x[val], context[val])


def epoch_batches(
    rows: int, batch_size: int, total: int, generator: torch.Generator, device: torch.device
) -> Iterator[tuple[int, Tensor]]:
    """``total`` pairs ``(epoch, row indices)``: each epoch visits the rows in a new order.

    An epoch's order is drawn when its first batch is asked for, so stopping early draws no
    order that is not used.
    """
    taken = 0
    epoch = 0
    while taken < total:
        epoch += 1
        permutation = torch.randperm(rows, generator=generator).to(device)
        for start in range(0, rows, batch_size):
            yield epoch, permutation[start : start + batch_size]
            taken += 1
            if taken >= total:
                return


def _nll_sum(flow: nn.Module, x: Tensor, c: Tensor | None) -> Tensor:
    """Sum over rows of ``-log p(x | c)``."""
    distribution = flow() if c is None else flow(c)
    return -distribution.log_prob(x).sum()


@torch.no_grad()
def _mean_nll(
    flow: nn.Module,
    x: Tensor,
    c: Tensor | None,
    processes: _Processes,
    chunk: int,
    nll: Loss = _nll_sum,
) -> float:
    """Mean NLL over all rows, each process taking its share of them, ``chunk`` at a time.

    ``nll`` computes the summed NLL of a chunk (a compiled
    :class:`~flows.core.compiling.Objective`, say).
    """
    mine = torch.arange(processes.rank, x.shape[0], processes.world, device=x.device)
    total = torch.zeros(2, dtype=torch.float64, device=x.device)
    for start in range(0, mine.numel(), chunk):
        rows = mine[start : start + chunk]
        total[0] += nll(flow, x[rows], None if c is None else c[rows]).double()
    total[1] = mine.numel()
    processes.all_sum(total)
    return float(total[0] / total[1])


def _step_gradients(
    flow: nn.Module,
    params: list[nn.Parameter],
    x: Tensor,
    c: Tensor | None,
    batch: Tensor,
    processes: _Processes,
    nll: Loss = _nll_sum,
    scale: Callable[[Tensor], Tensor] | None = None,
) -> Tensor:
    """Set the gradients of the mean NLL of the global ``batch``; return that mean NLL.

    ``nll`` computes the summed NLL of the rows (a compiled
    :class:`~flows.core.compiling.Objective`, say);
    ``scale`` multiplies the loss before the backward pass (a gradient scaler's), the gradients
    staying scaled.
    """
    mine = processes.share(batch)
    if mine.numel() > 0:
        loss = nll(flow, x[mine], None if c is None else c[mine]) / batch.numel()
        (loss if scale is None else scale(loss)).backward()
        loss = loss.detach()
    else:
        loss = torch.zeros((), dtype=x.dtype, device=x.device)
    return processes.sum_gradients(params, loss, x.dtype)


class RunningLoss:
    """The training losses since the last evaluation, summed on the device without a sync.

    Their sum is read (one sync) at evaluations; the losses themselves are looked at only
    when that sum is not finite, to find the first step that was not.
    """

    def __init__(self, device: torch.device) -> None:
        self.sum = torch.zeros((), dtype=torch.float64, device=device)
        self.losses: list[Tensor] = []

    def __len__(self) -> int:
        return len(self.losses)

    def add(self, loss: Tensor) -> None:
        self.sum += loss.double()
        self.losses.append(loss)

    def mean(self) -> float:
        return float(self.sum / len(self.losses))

    def first_non_finite(self, last_step: int) -> tuple[int, float] | None:
        """The step and value of the first loss that is not finite (``None`` if all are), the
        last loss being that of ``last_step``."""
        if not self.losses:
            return None
        values = torch.stack(self.losses)
        bad = (~torch.isfinite(values)).nonzero()
        if bad.numel() == 0:
            return None
        index = int(bad[0, 0])
        return last_step - len(self.losses) + 1 + index, float(values[index])

    def clear(self) -> None:
        self.sum.zero_()
        self.losses.clear()


def _snapshot(flow: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in flow.state_dict().items()}


def _all_finite(state: dict[str, Tensor]) -> bool:
    checks = [torch.isfinite(v).all() for v in state.values() if v.is_floating_point()]
    return bool(torch.stack(checks).all()) if checks else True


class BestWeights:
    """Early stopping: the best value measured so far, its step and weights, the patience left.

    It also keeps the flow's first weights, so that a diverged fit can always go back to
    finite ones: :meth:`fallback` is the best snapshot or, failing one, the first.

    Arguments:
        flow: The flow whose weights are kept.
        patience: Measures without improvement before :meth:`update` says stop (``None``:
            never).
    """

    def __init__(self, flow: nn.Module, patience: int | None) -> None:
        self.flow = flow
        self.patience = patience
        self.value: float | None = None
        self.step = 0
        self.state: dict[str, Tensor] | None = None
        self.stale = 0
        self.initial = _snapshot(flow)

    def update(self, value: float, step: int, check_weights: bool = False) -> bool:
        """Record the measure ``value`` of the weights after ``step``; return whether to stop.

        With ``check_weights``, an improvement is kept only if every weight is finite (for a
        measure, like a training loss, taken before the weights changed).
        """
        if self.value is None or value < self.value:
            state = _snapshot(self.flow)
            if not check_weights or _all_finite(state):
                self.value, self.step, self.stale, self.state = value, step, 0, state
                return False
        self.stale += 1
        return self.patience is not None and self.stale >= self.patience

    def restore(self) -> bool:
        """Load the best weights into the flow, if there are any; return whether there were."""
        if self.state is None:
            return False
        self.flow.load_state_dict(self.state)
        return True

    def fallback(self) -> None:
        """Load the best weights or, without any, the first ones."""
        self.flow.load_state_dict(self.state if self.state is not None else self.initial)


def fit(
    flow: nn.Module,
    x: Tensor,
    context: Tensor | None = None,
    *,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    validation: float = 0.1,
    patience: int | None = 10,
    lr_patience: int | None = None,
    clip_grad: float | None = None,
    eval_every: int | None = None,
    callback: Callable[[FitProgress], bool | None] | None = None,
    seed: int | None = None,
    eval_chunk: int = 4096,
    compile: bool | str | dict[str, Any] = False,
    autocast: torch.dtype | None = None,
    dequantize: Callable[[Tensor, torch.Generator], Tensor] | None = None,
) -> FitResult:
    r"""Train ``flow`` on the rows of ``x`` (and ``context``) by maximum likelihood.

    The rows are split once into a training part and a held-out part of ``validation`` of
    them. Each epoch visits the training rows in a new random order, in batches of
    ``batch_size``, taking one Adam step per batch on the mean negative log-likelihood. The
    held-out mean NLL is measured every ``eval_every`` steps (by default once per epoch); when
    it has not improved for ``patience`` measures, training stops, and the weights with the best
    held-out NLL are restored at the end.

    If :mod:`torch.distributed` is initialized, every process must call :func:`fit` with the
    same data and seed: each takes every ``world_size``-th row of each batch, the gradients are
    summed across processes, and all processes take identical steps, the same steps one process
    takes on the same global batch (up to the order of floating-point sums). Layers initialised
    by their first batch (:class:`~flows.core.ActNorm`) are initialised from the whole first
    global batch, as in one process; running statistics (:class:`~flows.core.BatchNorm`) are
    averaged over the processes before each evaluation and at the end, so every process ends
    with the same weights and buffers.

    Arguments:
        flow: A lazy distribution: ``flow()`` (or ``flow(c)`` with context) returns a
            distribution with ``log_prob``. Its weights are updated in place.
        x: The data, of shape ``(N, *event)``: ``(N, D)`` vectors, ``(N, C, H, W)`` images
            (a tensor or an array ``torch.as_tensor`` accepts).
        context: The conditioning rows, of shape ``(N, C)`` (or ``(N, *context_event)``), or
            ``None``.
        epochs: Passes over the training rows (default 100 when ``steps`` is not given).
        steps: Optimizer steps to take instead of a number of epochs.
        batch_size: Rows per (global) batch.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        validation: Fraction of the rows held out, in ``[0, 1)``; 0 disables early stopping.
        patience: Held-out measures without improvement before stopping; ``None`` never stops.
        lr_patience: Held-out measures without improvement that the learning rate
            outlasts: the next one without improvement halves it (torch's
            ``ReduceLROnPlateau``; where ``patience`` stops at its ``patience``-th);
            ``None`` keeps it constant. With a ``patience`` several times larger, a fit that
            stalls takes smaller steps before it stops, and settles lower.
        clip_grad: If given, clip the gradient norm to this value.
        eval_every: Steps between held-out measures (default: the steps of one epoch).
        callback: Called after every step with a :class:`FitProgress`; returning ``True``
            stops training.
        seed: Seed of the split and of the batch order (the flow's own initialization is
            not touched); ``None`` draws one from torch's global generator.
        eval_chunk: Rows per forward pass when measuring NLL without gradients.
        compile: Whether to run the loss through :func:`torch.compile`, compiled once for
            every step and evaluation: ``True`` (the default mode), a mode of
            :data:`~flows.core.compiling.COMPILE_MODES` (``"reduce-overhead"`` captures CUDA
            graphs on a GPU), or a dict of :func:`torch.compile` arguments
            (``{"backend": "aot_eager"}``). Where compiling fails, a warning says so and the
            fit goes on eagerly.
            :attr:`FitResult.compile_seconds` says what compiling cost.
        autocast: ``torch.bfloat16`` or ``torch.float16`` to run the forward pass under
            :func:`torch.autocast` on the flow's device (the networks in that dtype, the
            transforms, log-determinants and weights in the flow's); float16 scales the loss
            (:class:`torch.amp.GradScaler`). ``None`` for full precision.
        dequantize: For discrete data, ``dequantize(rows, generator)`` turns rows of ``x`` into
            continuous ones, drawing its noise from ``generator`` (a :class:`torch.Generator`
            on the flow's device). Each training batch gets fresh noise at every step; the
            held-out rows (and, for :attr:`FitResult.train_nll`, the training rows) get one
            draw each, seeded by ``seed``, before the run, so that every held-out measure
            compares the same values. Uniform dequantization of :math:`K` levels
            :math:`k \in \{0, \dots, K - 1\}` is :math:`x = (k + u) / K`,
            :math:`u \sim \mathcal{U}[0, 1)`; the NLL of :math:`x` plus :math:`D \log K` per
            row bounds :math:`-\log P(k)` from above. ``None`` trains on ``x`` as it is.

    Returns:
        A :class:`FitResult`; ``result.flow`` is ``flow``.

    Raises:
        ValueError: An argument is out of range, ``compile`` or ``autocast`` is not one the
            list above gives, or ``x`` or ``context`` is badly shaped or holds NaN or inf (the
            message names the first such rows).
        FitDivergedError: A training loss, a held-out NLL or the final training NLL was NaN or
            infinite, or a :class:`FloatingPointError` (such as an ODE solver's step
            underflowing) was raised after the first step, which is then its ``__cause__``;
            training stopped there and the flow holds the best finite weights seen (its initial
            weights if there were none).

    Example:
        >>> import torch
        >>> from flows.core import MAF, fit
        >>> _ = torch.manual_seed(0)
        >>> x = torch.randn(512, 2) * torch.tensor([1.0, 3.0])
        >>> flow = MAF(features=2, transforms=1)
        >>> result = fit(flow, x, epochs=30, batch_size=128, patience=None, seed=0)
        >>> result.steps, len(result.history)  # 461 training rows: 4 steps per epoch
        (120, 30)
        >>> result.val_nll < 4.5  # the entropy of this Gaussian is 3.94 nats
        True

        Counts on 4 levels, dequantized uniformly onto [0, 1):

        >>> k = torch.randint(4, (512, 2)).float()
        >>> def uniform(rows, generator):
        ...     u = torch.rand(rows.shape, generator=generator, device=rows.device)
        ...     return (rows + u) / 4
        >>> result = fit(MAF(features=2, transforms=1), k, epochs=5, seed=0, dequantize=uniform)
        >>> result.val_nll > 0  # -log P(k) <= NLL + 2 log 4; the 16 pairs are equally likely
        True
    """
    _check_arguments(epochs, steps, batch_size, lr, validation, patience, clip_grad, eval_every)
    check_count("lr_patience", lr_patience, minimum=0, optional=True)
    options = compile_options(compile)
    if autocast is not None and autocast not in AUTOCAST_DTYPES:
        raise ValueError(
            f"autocast must be None, torch.bfloat16 or torch.float16, got {autocast!r}"
        )
    started = time.perf_counter()

    params = [p for p in flow.parameters() if p.requires_grad]
    reference = next(iter(flow.parameters()), None)
    dtype = reference.dtype if reference is not None else torch.get_default_dtype()
    device = reference.device if reference is not None else torch.device("cpu")
    x = as_rows("x", x, None, device, dtype)
    if context is not None:
        context = as_rows("context", context, x.shape[0], device, dtype)
    check_rows_fit_flow(flow, x, context)

    processes = _Processes.current()
    seed = processes.common_seed(seed, device)
    generator = torch.Generator().manual_seed(seed)
    split = _split(x, context, validation, generator, device)
    held = split.held
    noise: torch.Generator | None = None
    train_fixed = split.train_x
    if dequantize is not None:
        # Drawn after the split, so a fit without dequantize keeps its batch order.
        seeds = torch.randint(2**62, (3,), generator=generator).tolist()
        noise = torch.Generator(device=device).manual_seed(seeds[0])
        fixed = torch.Generator(device=device).manual_seed(seeds[1])
        split = dataclasses.replace(split, val_x=dequantize(split.val_x, fixed))
        train_fixed = dequantize(
            split.train_x, torch.Generator(device=device).manual_seed(seeds[2])
        )

    n_train = split.train_x.shape[0]
    per_epoch = math.ceil(n_train / batch_size)
    total = steps if steps is not None else (epochs if epochs is not None else 100) * per_epoch
    every = eval_every if eval_every is not None else per_epoch

    processes.broadcast_state(flow)
    optimizer = make_adam(params, lr, weight_decay)
    plateau = plateau_halving(optimizer, lr_patience)  # stepped by held-out measures only
    objective = Objective(_nll_sum, options, autocast, device.type)
    # float16 gradients underflow without a scaled loss; bfloat16 has float32's range.
    scaler = torch.amp.GradScaler(device.type) if autocast == torch.float16 else None
    scale = None if scaler is None else scaler.scale
    was_training = flow.training
    # Without a held-out split the best weights only serve a diverged fit, ranked by the
    # training loss; the final weights are kept otherwise.
    best = BestWeights(flow, patience if held > 0 else None)

    def diverged(step: int, loss: float, what: str = "loss") -> FitDivergedError:
        best.fallback()
        flow.train(was_training)
        return FitDivergedError(step, loss, what)

    history: list[dict[str, float]] = []
    step = 0
    # The losses are looked at when an evaluation reads their sum, or at once when a callback
    # reads each: no sync per step otherwise.
    running = RunningLoss(device)

    def step_data(batch: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """The rows, context and indices a step takes its batch from."""
        if noise is None or dequantize is None:
            return split.train_x, split.train_c, batch
        # The whole global batch, with the same noise in every process: each takes its share.
        c = None if split.train_c is None else split.train_c[batch]
        indices = torch.arange(batch.numel(), device=batch.device)
        return dequantize(split.train_x[batch], noise), c, indices

    def take_step(x: Tensor, c: Tensor | None, batch: Tensor) -> Tensor:
        optimizer.zero_grad(set_to_none=True)
        try:
            return _step_gradients(flow, params, x, c, batch, processes, objective, scale)
        except objective.errors as error:  # the backward graph failed to compile
            objective.fall_back(error)
            optimizer.zero_grad(set_to_none=True)
            return _step_gradients(flow, params, x, c, batch, processes, objective, scale)

    at = 0  # the step being taken or measured, for an error raised within it
    step_seconds = 0.0  # of the steps after the first
    evaluations = 0
    try:
        for epoch, batch in epoch_batches(n_train, batch_size, total, generator, device):
            at = step + 1
            flow.train()
            batch_x, batch_c, batch = step_data(batch)
            if step == 0:
                processes.initialize_together(flow, batch_x, batch_c, batch)
            step_started = time.perf_counter()
            loss = take_step(batch_x, batch_c, batch)
            if scaler is not None:
                scaler.unscale_(optimizer)  # clip_grad reads the true gradients
            if clip_grad is not None:
                nn.utils.clip_grad_norm_(params, clip_grad)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            seconds = time.perf_counter() - step_started
            if step == 0:
                if objective.compile_seconds is not None:
                    objective.compile_seconds += seconds
            else:
                step_seconds += seconds
            step += 1
            running.add(loss)
            stop = False

            val_now: float | None = None
            if step % every == 0 or step == total:
                processes.average_running(flow)
                flow.eval()
                train_mean = running.mean()
                if not math.isfinite(train_mean):
                    first = running.first_non_finite(step)
                    raise diverged(*(first or (step, train_mean))) from None
                running.clear()
                if held > 0:
                    evaluated = time.perf_counter()
                    val_now = _mean_nll(
                        flow, split.val_x, split.val_c, processes, eval_chunk, objective
                    )
                    if evaluations == 0 and objective.compile_seconds is not None:
                        objective.compile_seconds += time.perf_counter() - evaluated
                    evaluations += 1
                    if not math.isfinite(val_now):
                        raise diverged(step, val_now, "held-out NLL") from None
                    stop = best.update(val_now, step)
                else:
                    best.update(train_mean, step, check_weights=True)
                history.append(
                    {
                        "step": step,
                        "epoch": epoch,
                        "train_nll": train_mean,
                        "val_nll": math.nan if val_now is None else val_now,
                        "lr": optimizer.param_groups[0]["lr"],
                    }
                )
                if plateau is not None and val_now is not None:
                    plateau.step(val_now)
            if callback is not None:
                value = float(loss)
                if not math.isfinite(value):
                    raise diverged(step, value) from None
                best_val = best.value if held > 0 else None
                if callback(FitProgress(step, total, epoch, value, val_now, best_val)):
                    stop = True
            if stop:
                break

        restored = held > 0 and best.restore()
        processes.average_running(flow)  # steps since the last evaluation moved them apart
        at = step
        flow.eval()
        train_nll = _mean_nll(flow, train_fixed, split.train_c, processes, eval_chunk, objective)
        if not math.isfinite(train_nll):
            raise diverged(step, train_nll, "train NLL") from None
        val_nll = None
        if held > 0:
            val_nll = _mean_nll(flow, split.val_x, split.val_c, processes, eval_chunk, objective)
            if not math.isfinite(val_nll):
                raise diverged(step, val_nll, "held-out NLL") from None
    except FloatingPointError as error:
        # A numerical failure (an ODE solver's step underflowing, say) in a step or measure.
        if step == 0:
            raise  # the first step failed on the initial weights: nothing diverged
        raise diverged(at, math.nan) from error
    flow.train(was_training)

    return FitResult(
        flow=flow,
        history=history,
        train_nll=train_nll,
        val_nll=val_nll,
        steps=step,
        seconds=time.perf_counter() - started,
        best_step=best.step if restored else step,
        compile_seconds=objective.compile_seconds,
        step_seconds=step_seconds / (step - 1) if step > 1 else math.nan,
    )
