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
from flows.core.testing import assert_no_graph_breaks, check_compiled_flow, flow_loss

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


def make(
    name: str, dtype: torch.dtype, device: torch.device
) -> tuple[nn.Module, Tensor, Tensor | None]:
    torch.manual_seed(0)
    constructor, context = FLOWS[name]
    flow = constructor().to(dtype=dtype, device=device)
    x = torch.randn(BATCH, FEATURES, dtype=dtype, device=device)
    c = torch.randn(BATCH, context, dtype=dtype, device=device) if context else None
    return flow, x, c


@pytest.mark.parametrize("name", list(FLOWS))
def test_log_prob_has_no_graph_breaks(name: str, dtype: torch.dtype, device: torch.device) -> None:
    flow, x, c = make(name, dtype, device)
    assert_no_graph_breaks(flow_loss(flow), x, c)


@pytest.mark.parametrize("name", list(FLOWS))
def test_training_loss_has_no_graph_breaks(
    name: str, dtype: torch.dtype, device: torch.device
) -> None:
    flow, x, c = make(name, dtype, device)
    assert_no_graph_breaks(flow_loss(flow, training=True), x, c)


@pytest.mark.parametrize("name", ["maf", "realnvp"])
def test_compiled_log_prob_equals_eager(
    name: str, dtype: torch.dtype, device: torch.device
) -> None:
    flow, x, c = make(name, dtype, device)
    check_compiled_flow(flow, x, c)


@pytest.mark.parametrize("name", ["maf-context", "realnvp"])
def test_compiled_training_step_equals_eager(
    name: str, dtype: torch.dtype, device: torch.device
) -> None:
    # aot_eager runs the AOTAutograd forward and backward graphs, the ones inductor would
    # compile, without the code generation already covered by the log_prob test above.
    flow, x, c = make(name, dtype, device)
    check_compiled_flow(flow, x, c, training=True, backend="aot_eager")
