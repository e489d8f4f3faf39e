r"""Compile-cleanliness checks for flows: one graph, no break, compiled equals eager.

:func:`check_preset_compiles` runs the graph-break check on a registered preset's log-density,
training loss and sampling (the stepwise autoregressive inverse included), with or without a
context: the sweep over every preset that ``nox -s tests-torch`` runs on each torch of the
supported range.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "assert_no_graph_breaks",
    "check_compiled_flow",
    "check_preset_compiles",
    "flow_loss",
    "flow_sampler",
    "small_preset",
]


def flow_loss(
    flow: nn.Module, training: bool = False
) -> Callable[[Tensor, Tensor | None], Tensor]:
    r"""The function :math:`(x, c) \mapsto \log p(x | c)` of a lazy flow, or its training loss.

    Arguments:
        flow: A lazy distribution; ``c=None`` for an unconditional one.
        training: Whether to return the loss :math:`-\operatorname{mean} \log p(x | c)`.
    """

    def log_prob(x: Tensor, c: Tensor | None) -> Tensor:
        return flow(c).log_prob(x)

    if training:
        return lambda x, c: -log_prob(x, c).mean()
    return log_prob


def flow_sampler(flow: nn.Module, batch: int) -> Callable[[Tensor | None], Tensor]:
    r"""The function :math:`c \mapsto x \sim p(x | c)` of a lazy flow: ``batch`` samples
    without a context, one per context row with one.

    Arguments:
        flow: A lazy distribution; ``c=None`` for an unconditional one.
        batch: The number of samples drawn without a context.
    """

    def sample(c: Tensor | None) -> Tensor:
        if c is None:
            return flow().sample((batch,))
        return flow(c).sample()

    return sample


# Small hyper-parameters, where a preset's constructor takes them: each graph traced costs
# seconds on a small CPU.
_SMALL = {
    "transforms": 2,
    "hidden_features": (8, 8),
    "components": 2,
    "bins": 4,
    "scales": 1,
    "depth": 1,
    "hidden_channels": 4,
}


def small_preset(
    name: str, features: int = 3, context: int = 0
) -> tuple[nn.Module, tuple[int, ...]]:
    """A small instance of the registered preset ``name`` and the shape of one of its points.

    A preset whose first argument is ``shape`` (an image flow) gets points of shape
    ``(2, 4, 4)``; any other gets ``features`` features. Hyper-parameters it takes among
    transforms, hidden features, components, bins, scales, depth and hidden channels are made
    small.
    """
    from flows.core.plugins import get_preset

    constructor = get_preset(name)
    parameters = inspect.signature(constructor).parameters
    small = {key: value for key, value in _SMALL.items() if key in parameters}
    first = next(iter(parameters))
    event: tuple[int, ...] = (2, 4, 4) if first == "shape" else (features,)
    argument: Any = event if first == "shape" else features
    return constructor(argument, context, **small), event


def check_preset_compiles(
    name: str,
    context: int = 0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    batch: int = 5,
) -> None:
    """Assert that a small instance of a registered preset compiles with no graph break.

    The log-density, the training loss (whose backward AOTAutograd traces from the same graph)
    and sampling (without gradients) must each trace into one graph.

    Arguments:
        name: The registered preset's name (:func:`flows.core.plugins.get_preset`).
        context: The number of context features (0: unconditional).
        dtype: The flow's and the points' dtype.
        device: Their device.
        batch: The number of points.

    Raises:
        AssertionError: As :func:`assert_no_graph_breaks`, prefixed with the preset and what
            broke.

    Example:
        >>> check_preset_compiles("gmm", context=2)
    """
    torch.manual_seed(0)
    flow, event = small_preset(name, context=context)
    flow = flow.to(dtype=dtype, device=device)
    x = torch.randn(batch, *event, dtype=dtype, device=device)
    c = torch.randn(batch, context, dtype=dtype, device=device) if context else None
    checks: list[tuple[str, Callable[..., Tensor]]] = [
        ("log_prob", flow_loss(flow)),
        ("training loss", flow_loss(flow, training=True)),
    ]
    for what, fn in checks:
        try:
            assert_no_graph_breaks(fn, x, c)
        except AssertionError as error:
            raise AssertionError(f"{name} (context={context}), {what}: {error}") from None
    try:
        with torch.no_grad():
            assert_no_graph_breaks(flow_sampler(flow, batch), c)
    except AssertionError as error:
        raise AssertionError(f"{name} (context={context}), sampling: {error}") from None


def assert_no_graph_breaks(fn: Callable[..., Tensor], *args: Tensor | None) -> None:
    """Assert that ``fn(*args)`` traces into one ``torch.compile`` graph with no break.

    Raises:
        AssertionError: Listing every break reason dynamo gives, with the user frames, and the
            place where a ``fullgraph=True`` compile stops.

    Example:
        >>> from flows.core import MAF
        >>> x = torch.randn(4, 2)
        >>> assert_no_graph_breaks(flow_loss(MAF(2, transforms=1)), x, None)
    """
    explained = torch._dynamo.explain(fn)(*args)
    if explained.graph_break_count == 0 and explained.graph_count == 1:
        return
    lines = [f"{explained.graph_count} graphs, {explained.graph_break_count} graph breaks"]
    for reason in explained.break_reasons:
        lines.append(f"- {reason.reason}")
        lines += [
            f"    {frame.filename}:{frame.lineno} in {frame.name}" for frame in reason.user_stack
        ]
    torch._dynamo.reset()
    try:
        torch.compile(fn, fullgraph=True, backend="eager")(*args)
    except Exception as error:  # the first break, with the user frames that lead to it
        lines.append(f"fullgraph=True stops at: {type(error).__name__}: {error}")
    raise AssertionError("\n".join(lines))


def check_compiled_flow(
    flow: nn.Module,
    x: Tensor,
    c: Tensor | None = None,
    *,
    training: bool = False,
    backend: str = "inductor",
) -> None:
    """Assert that a ``fullgraph=True`` compile of a flow gives the eager results.

    Without ``training``, compares ``log_prob``; with it, the training loss and the gradient
    of every trainable parameter (left in ``.grad``). Compiled code fuses and reorders
    reductions, so results agree up to rounding (1e-4 in float32, 1e-9 in float64).

    Arguments:
        flow: A lazy distribution.
        x: Points of shape :math:`(N, D)`.
        c: A context, or ``None``.
        training: Whether to compare the training step rather than ``log_prob``.
        backend: The ``torch.compile`` backend; ``"aot_eager"`` traces forward and backward
            graphs without generating code.
    """
    tolerance = 1e-4 if x.dtype == torch.float32 else 1e-9
    fn = flow_loss(flow, training)
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    if not training:
        with torch.no_grad():
            expected, actual = fn(x, c), compiled(x, c)
        if not torch.isfinite(actual).all():
            raise AssertionError(f"compiled log_prob is not finite: {actual}")
        torch.testing.assert_close(actual, expected, rtol=tolerance, atol=tolerance)
        return
    parameters = [p for p in flow.parameters() if p.requires_grad]
    expected_loss = fn(x, c)
    expected_grads = torch.autograd.grad(expected_loss, parameters)
    loss = compiled(x, c)
    loss.backward()
    torch.testing.assert_close(loss, expected_loss, rtol=tolerance, atol=tolerance)
    for parameter, grad in zip(parameters, expected_grads, strict=True):
        if parameter.grad is None:
            raise AssertionError(f"the compiled step left no gradient in a {parameter.shape}")
        torch.testing.assert_close(parameter.grad, grad, rtol=tolerance, atol=tolerance)
