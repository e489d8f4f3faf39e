r"""Trace a flow's function into a graph with a dynamic batch size, and say why one cannot be.

Two steps make a :class:`torch.export.ExportedProgram` of an
:class:`~flows.core.export.functions.ExportFunction`:

1. :func:`trace` records the ATen operations the function runs on a CPU float32 copy of the
   flow, without gradients, with a symbolic batch size
   (:func:`torch.fx.experimental.proxy_tensor.make_fx`). The weights become constants of the
   graph and whatever depends on them alone is folded
   (:func:`~flows.core.export.folding.fold_constants`). Tracing runs *through* autograd, so a
   derivative the flow takes by :func:`torch.autograd.grad` (the monotonic networks of NAF) is
   recorded as the operations that compute it, and a custom :class:`torch.autograd.Function`
   (the fused spline, the bisection inverse) as those of its forward pass. Library code sees
   :func:`torch.compiler.is_compiling` true, as under :func:`torch.compile`, so it leaves its
   eager-only caches alone.
2. :func:`export_program` exports that graph with :func:`torch.export.export`, the batch
   dimension of every input dynamic.

A flow whose computation branches on the values of its inputs (an adaptive ODE solver picks its
steps from the error it measures) has no fixed graph: tracing stops there, and the
:class:`~flows.core.export.errors.ExportError` names the flow, the place and the reason.

Example:
    >>> import torch
    >>> from flows.core import MAF
    >>> flow = MAF(features=2, transforms=1)
    >>> program = export_program(flow, "log_prob")
    >>> x = torch.randn(5, 2)
    >>> torch.allclose(program.module()(x), flow().log_prob(x), atol=1e-5)
    True
"""

from __future__ import annotations

__all__ = ["cpu_copy", "export_program", "trace"]

import contextlib
import copy
import os
import traceback
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, fx, nn

from flows.core.export.errors import ExportError
from flows.core.export.folding import fold_constants
from flows.core.export.functions import ExportFunction, Standardization, export_function

_TORCH = os.path.dirname(torch.__file__) + os.sep
_HERE = os.path.dirname(__file__) + os.sep
_DESCRIBED = {"log_prob": "the log-density", "sample": "sampling"}


@contextlib.contextmanager
def _as_compiled() -> Iterator[None]:
    """Make :func:`torch.compiler.is_compiling` (and ``is_exporting``) true, as export does.

    Library code asks it to skip what only eager mode wants: caches of tensors (which would
    keep the tracer's fake tensors) and buffers reused across calls.
    """
    flags = [f for f in ("_is_compiling_flag", "_is_exporting_flag") if hasattr(torch.compiler, f)]
    if "_is_compiling_flag" not in flags:
        raise ExportError(
            f"exporting needs a torch that exports graphs (2.5 or newer), got {torch.__version__}"
        )
    saved = {flag: getattr(torch.compiler, flag) for flag in flags}
    try:
        for flag in flags:
            setattr(torch.compiler, flag, True)
        yield
    finally:
        for flag, value in saved.items():
            setattr(torch.compiler, flag, value)


def _frames(tb: TracebackType | None) -> list[traceback.FrameSummary]:
    return list(traceback.extract_tb(tb))


def _short(filename: str) -> str:
    """A file name from its package on: ``flows/ode/ffj.py``, ``torchdiffeq/_impl/misc.py``."""
    parts = filename.replace(os.sep, "/").split("/")
    for anchor in ("site-packages", "dist-packages", "src"):
        if anchor in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(anchor) :])
    return "/".join(parts[-3:])


def _where(error: BaseException) -> str:
    """The innermost frame outside torch that led to ``error``, and the flows frame above it."""
    frames = [f for f in _frames(error.__traceback__) if not f.filename.startswith(_TORCH)]
    frames = [f for f in frames if not f.filename.startswith(_HERE)]
    if not frames:
        return ""
    inner = frames[-1]
    where = f"at {_short(inner.filename)}:{inner.lineno} in {inner.name}"
    flows_frames = [f for f in frames if "/flows/" in f.filename.replace(os.sep, "/")]
    if flows_frames and flows_frames[-1] is not inner:
        outer = flows_frames[-1]
        where += f", reached from {_short(outer.filename)}:{outer.lineno} in {outer.name}"
    return where


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _data_dependent(error: BaseException) -> bool:
    from torch.fx.experimental import symbolic_shapes

    kinds = tuple(
        getattr(symbolic_shapes, name)
        for name in ("GuardOnDataDependentSymNode", "PendingUnbackedSymbolNotFound")
        if hasattr(symbolic_shapes, name)
    )
    if isinstance(error, kinds):
        return True
    from torch._subclasses import fake_tensor

    kinds = tuple(
        getattr(fake_tensor, name)
        for name in ("DataDependentOutputException", "DynamicOutputShapeException")
        if hasattr(fake_tensor, name)
    )
    return isinstance(error, kinds)


def _untraceable(name: str, what: str, error: BaseException) -> ExportError:
    where = _where(error)
    subject = f"cannot export {_DESCRIBED[what]} of {name}"
    if _data_dependent(error):
        return ExportError(
            f"{subject}: its computation depends on the values of its inputs"
            + (f" ({where})" if where else "")
            + ", so it has no fixed graph: a loop or test on the data, such as an adaptive ODE "
            "solver choosing its steps, cannot be exported"
        )
    return ExportError(
        f"{subject}: tracing failed" + (f" {where}" if where else "") + f": {_first_line(error)}"
    )


def cpu_copy(function: ExportFunction) -> ExportFunction:
    """A float32 copy on the CPU, in evaluation mode, its weights constants of the trace."""
    copied = copy.deepcopy(function).to(device="cpu", dtype=torch.float32).eval()
    copied.requires_grad_(False)
    return copied


def _name_inputs(graph_module: fx.GraphModule, names: tuple[str, ...]) -> None:
    """Give the graph's inputs the function's names (``x``, ``c``...) instead of ``arg0_1``."""
    placeholders = [node for node in graph_module.graph.nodes if node.op == "placeholder"]
    taken = {node.name for node in graph_module.graph.nodes} - {n.name for n in placeholders}
    if len(placeholders) != len(names) or taken & set(names):
        return
    for node, name in zip(placeholders, names, strict=True):
        node.name = node.target = name
    graph_module.recompile()


def _logical_wheres(graph_module: fx.GraphModule) -> None:
    """Write ``where(c, a, b)`` of booleans as ``(c & a) | (~c & b)``, the same values.

    onnxruntime has no kernel for a boolean ``Where``; GF's bisection picks comparisons so.
    """
    aten = torch.ops.aten
    graph = graph_module.graph
    for node in list(graph.nodes):
        value = node.meta.get("val")
        if node.target is not aten.where.self or getattr(value, "dtype", None) != torch.bool:
            continue
        condition, chosen, other = node.args
        with graph.inserting_before(node):
            kept = graph.call_function(aten.logical_and.default, (condition, chosen))
            unless = graph.call_function(aten.logical_not.default, (condition,))
            rest = graph.call_function(aten.logical_and.default, (unless, other))
            either = graph.call_function(aten.logical_or.default, (kept, rest))
        node.replace_all_uses_with(either)
        graph.erase_node(node)
    graph_module.recompile()


def _example_batch(function: ExportFunction) -> int:
    # Symbolic tracing gives equal sizes one symbol: the batch size of the example differs
    # from every other input size (and from 0 and 1, which torch specializes).
    return function.features + function.context + 2


def trace(function: ExportFunction) -> fx.GraphModule:
    """Record ``function`` (on a CPU float32 copy) as a graph of ATen operations.

    The graph takes the inputs of ``function`` with any batch size, holds the weights as
    constants, and has its weight-only computations folded.

    Raises:
        ExportError: The computation cannot be traced: it depends on the values of its inputs
            (an adaptive solver, a loop until convergence), or uses an operation tracing does
            not support; the message names the place.
    """
    from torch.fx.experimental.proxy_tensor import make_fx

    copied = cpu_copy(function)
    inputs = copied.example_inputs(_example_batch(copied))
    name = type(function.flow).__name__

    def run(*args: Tensor) -> Tensor:
        return copied(*args)

    with torch.no_grad():
        # Eagerly first: a cache the flow fills on first use (quadrature nodes...) then holds
        # real tensors, not the tracer's fake ones.
        copied(*inputs)
    try:
        with torch.no_grad(), _as_compiled():
            graph_module = make_fx(run, tracing_mode="symbolic", _allow_non_fake_inputs=True)(
                *inputs
            )
    except ExportError:
        raise
    except Exception as error:  # anything tracing meets is this flow's reason not to export
        raise _untraceable(name, function.what, error) from error
    fold_constants(graph_module)
    _logical_wheres(graph_module)
    _name_inputs(graph_module, copied.inputs)
    return graph_module


def _batch_dimension() -> Any:
    return torch.export.Dim("batch")


def export_program(
    flow: nn.Module | ExportFunction,
    what: str = "log_prob",
    *,
    features: int | None = None,
    context: int | None = None,
    standardization: Standardization | None = None,
) -> torch.export.ExportedProgram:
    r"""Export a flow's log-density or sampling as a :class:`torch.export.ExportedProgram`.

    The program runs on the CPU in float32 whatever the flow's device and dtype (the flow is
    copied there, not moved), takes any batch size, and computes what
    :func:`~flows.core.export.functions.export_function` describes: ``(x[, c]) -> log_prob``,
    ``(z[, c]) -> x`` for a normalizing flow, ``(z, u[, c]) -> x`` for a Gaussian mixture, in
    the data's original units if ``standardization`` is given.

    Arguments:
        flow: A preset (or lazy distribution), or an
            :class:`~flows.core.export.functions.ExportFunction` made already.
        what: ``"log_prob"`` or ``"sample"`` (ignored for an ``ExportFunction``).
        features: The number of features, if ``flow`` does not record it.
        context: The number of context features, if ``flow`` does not record it.
        standardization: The data (and context) statistics to fold in.

    Raises:
        ExportError: The flow cannot be exported as asked (the message says why and where).
    """
    if isinstance(flow, ExportFunction):
        function = flow
    else:
        function = export_function(
            flow, what, features=features, context=context, standardization=standardization
        )
    graph_module = trace(function)
    batch = _batch_dimension()
    inputs = function.example_inputs(_example_batch(function))
    name = type(function.flow).__name__
    try:
        with torch.no_grad():
            return torch.export.export(
                graph_module, inputs, dynamic_shapes=tuple({0: batch} for _ in inputs)
            )
    except Exception as error:  # the graph traced, but torch cannot export it as it stands
        text = str(error)
        if "specialized it to be a constant" in text:
            raise ExportError(
                f"cannot export {_DESCRIBED[function.what]} of {name} with a dynamic batch "
                "size: a computation of the flow fixes the batch size (it turns the size into "
                f"a plain number) {_where(error)}".rstrip()
            ) from error
        raise ExportError(
            f"cannot export {_DESCRIBED[function.what]} of {name}: {_first_line(error)}"
        ) from error
