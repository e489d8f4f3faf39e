r"""Compile-cleanliness checks for flows: one graph, no break, compiled equals eager."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["assert_no_graph_breaks", "check_compiled_flow", "flow_loss"]


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
