"""torch.compile: core flows trace into one graph, and compiled results equal eager ones.

``torch._dynamo.explain`` must find zero graph breaks in ``log_prob`` and in the training loss
(``-log_prob(x).mean()``, whose backward AOTAutograd traces from the same graph). A failure lists
every break reason and the exact place a ``fullgraph=True`` compile stops.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import torch
from torch import Tensor, nn

from flows.core import MAF, RealNVP

FEATURES = 3
CONTEXT = 2
BATCH = 5

# Small flows: each compiled graph costs seconds on a small CPU.
FLOWS: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "maf": (lambda: MAF(FEATURES, transforms=2, hidden_features=(8, 8)), 0),
    "maf-context": (lambda: MAF(FEATURES, CONTEXT, transforms=2, hidden_features=(8, 8)), CONTEXT),
    "realnvp": (lambda: RealNVP(FEATURES, transforms=2, hidden_features=(8, 8)), 0),
}


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    """No compiled graph or guard leaks from one test into the next."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def make(name: str, dtype: torch.dtype, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
    torch.manual_seed(0)
    constructor, context = FLOWS[name]
    flow = constructor().to(dtype=dtype, device=device)
    x = torch.randn(BATCH, FEATURES, dtype=dtype, device=device)
    c = torch.randn(BATCH, context, dtype=dtype, device=device)
    return flow, x, c


def log_prob_fn(flow: nn.Module, conditional: bool) -> Callable[[Tensor, Tensor], Tensor]:
    if conditional:
        return lambda x, c: flow(c).log_prob(x)
    return lambda x, c: flow().log_prob(x)


def loss_fn(flow: nn.Module, conditional: bool) -> Callable[[Tensor, Tensor], Tensor]:
    log_prob = log_prob_fn(flow, conditional)
    return lambda x, c: -log_prob(x, c).mean()


def assert_no_graph_breaks(fn: Callable[..., Tensor], *args: Tensor) -> None:
    """One graph, no break; otherwise fail with every reason dynamo gives."""
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
    pytest.fail("\n".join(lines))


@pytest.mark.parametrize("name", list(FLOWS))
def test_log_prob_has_no_graph_breaks(name: str, dtype: torch.dtype, device: torch.device) -> None:
    flow, x, c = make(name, dtype, device)
    assert_no_graph_breaks(log_prob_fn(flow, FLOWS[name][1] > 0), x, c)


@pytest.mark.parametrize("name", list(FLOWS))
def test_training_loss_has_no_graph_breaks(
    name: str, dtype: torch.dtype, device: torch.device
) -> None:
    flow, x, c = make(name, dtype, device)
    assert_no_graph_breaks(loss_fn(flow, FLOWS[name][1] > 0), x, c)


def tolerances(dtype: torch.dtype) -> dict[str, float]:
    # Inductor fuses and reorders reductions: equal up to rounding, not bit for bit.
    return {"rtol": 1e-4, "atol": 1e-4} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-9}


@pytest.mark.parametrize("name", ["maf", "realnvp"])
def test_compiled_log_prob_equals_eager(
    name: str, dtype: torch.dtype, device: torch.device
) -> None:
    flow, x, c = make(name, dtype, device)
    fn = log_prob_fn(flow, conditional=False)
    compiled = torch.compile(fn, fullgraph=True)
    with torch.no_grad():
        expected = fn(x, c)
        actual = compiled(x, c)
    assert actual.shape == (BATCH,)
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, expected, **tolerances(dtype))


@pytest.mark.parametrize("name", ["maf-context", "realnvp"])
def test_compiled_training_step_equals_eager(
    name: str, dtype: torch.dtype, device: torch.device
) -> None:
    # aot_eager runs the AOTAutograd forward and backward graphs, the ones inductor would
    # compile, without the code generation already covered by the log_prob test above.
    flow, x, c = make(name, dtype, device)
    fn = loss_fn(flow, FLOWS[name][1] > 0)
    parameters = [p for p in flow.parameters() if p.requires_grad]

    expected_loss = fn(x, c)
    expected = torch.autograd.grad(expected_loss, parameters)

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    loss = compiled(x, c)
    loss.backward()

    torch.testing.assert_close(loss, expected_loss, **tolerances(dtype))
    for parameter, grad in zip(parameters, expected, strict=True):
        assert parameter.grad is not None
        torch.testing.assert_close(parameter.grad, grad, **tolerances(dtype))
