"""fit(..., compile=...): one compiled loss for every step and evaluation, the eager numbers.

Compiling costs seconds per graph on a small CPU, so most tests here use the ``aot_eager``
backend (the forward and backward graphs AOTAutograd traces, without generating code); one
test runs the default inductor backend end to end.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from flows.core import MAF, compiling
from flows.core.compiling import compile_sampler
from flows.core.training import FitResult, fit

TRACED = {"backend": "aot_eager"}


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    """No compiled graph or guard leaks from one test into the next."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def data(dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(90, 2, generator=generator, dtype=dtype).to(device)
    c = torch.randn(90, 3, generator=generator, dtype=dtype).to(device)
    return x, c


def run(
    dtype: torch.dtype, device: torch.device, **options: Any
) -> tuple[FitResult, dict[str, Tensor]]:
    """Fit the same small conditional MAF, from the same weights, on the same batches."""
    torch.manual_seed(0)
    flow = MAF(2, 3, transforms=2, hidden_features=(16, 16)).to(dtype=dtype, device=device)
    x, c = data(dtype, device)
    # 81 training rows in batches of 32: the last batch of each epoch is shorter.
    result = fit(flow, x, c, epochs=2, batch_size=32, patience=None, seed=0, **options)
    return result, {k: v.detach().clone() for k, v in flow.state_dict().items()}


def assert_same_fit(
    a: tuple[FitResult, dict[str, Tensor]], b: tuple[FitResult, dict[str, Tensor]], tol: float
) -> None:
    (result_a, state_a), (result_b, state_b) = a, b
    assert result_a.steps == result_b.steps == 6
    for key in state_a:
        torch.testing.assert_close(state_a[key], state_b[key], rtol=tol, atol=tol, msg=key)
    assert result_a.train_nll == pytest.approx(result_b.train_nll, rel=tol, abs=tol)
    assert result_a.val_nll == pytest.approx(result_b.val_nll, rel=tol, abs=tol)
    for entry_a, entry_b in zip(result_a.history, result_b.history, strict=True):
        assert entry_a["val_nll"] == pytest.approx(entry_b["val_nll"], rel=tol, abs=tol)


def tolerance(dtype: torch.dtype) -> float:
    # Compiled graphs reorder sums; six Adam steps amplify the last bits a little.
    return 1e-4 if dtype == torch.float32 else 1e-9


def test_traced_fit_equals_eager_fit(dtype: torch.dtype, device: torch.device) -> None:
    eager = run(dtype, device)
    traced = run(dtype, device, compile=TRACED)
    assert_same_fit(traced, eager, tolerance(dtype))
    assert eager[0].compile_seconds is None
    assert traced[0].compile_seconds is not None and traced[0].compile_seconds > 0
    assert traced[0].step_seconds > 0


def test_one_wrapper_serves_steps_shapes_and_evaluations(
    dtype: torch.dtype, device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One torch.compile call, and the graphs it traces: the training graph (forward and
    # backward, any batch length) and the no-grad evaluation graph, nothing per step or shape.
    calls: list[dict[str, Any]] = []
    compile_ = torch.compile

    def counted(fn: Any, **kwargs: Any) -> Any:
        calls.append(kwargs)
        return compile_(fn, **kwargs)

    monkeypatch.setattr(torch, "compile", counted)
    graphs: list[int] = []

    def backend(gm: torch.fx.GraphModule, inputs: list[Any]) -> Any:
        graphs.append(len(gm.graph.nodes))
        return gm.forward

    run(dtype, device, compile={"backend": backend})
    assert calls == [{"dynamic": True, "backend": backend}]
    assert len(graphs) == 2, graphs


def test_compiled_fit_equals_eager_fit(device: torch.device) -> None:
    # The default mode, inductor's generated code, in float32 (what users train in).
    eager = run(torch.float32, device)
    compiled = run(torch.float32, device, compile=True)
    assert_same_fit(compiled, eager, 1e-4)


def test_a_compile_mode_reaches_torch_compile(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    def recorded(fn: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return fn  # run eagerly: only the arguments are checked here

    monkeypatch.setattr(torch, "compile", recorded)
    run(torch.float64, torch.device("cpu"), compile="max-autotune-no-cudagraphs")
    assert seen == [{"dynamic": True, "mode": "max-autotune-no-cudagraphs"}]


@pytest.mark.parametrize("value", ["fast", 1, ["default"], {1: 2}])
def test_a_bad_compile_value_is_refused(value: Any) -> None:
    flow = MAF(2, transforms=1)
    with pytest.raises(ValueError) as caught:
        fit(flow, torch.randn(20, 2), steps=1, compile=value)
    assert str(caught.value) == (
        "compile must be True, False, a mode ('default', 'reduce-overhead', 'max-autotune', "
        f"'max-autotune-no-cudagraphs') or a dict of torch.compile arguments, got {value!r}"
    )


def test_without_a_compiler_the_fit_warns_and_runs_eagerly(
    dtype: torch.dtype, device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    eager = run(dtype, device)
    monkeypatch.setattr(compiling, "compile_unavailable", lambda: "no compiler here")
    with pytest.warns(UserWarning) as caught:
        fallen = run(dtype, device, compile=True)
    messages = [str(w.message) for w in caught if "torch.compile" in str(w.message)]
    assert messages == ["torch.compile is unavailable (no compiler here); fitting eagerly"]
    assert_same_fit(fallen, eager, 0.0)
    assert fallen[0].compile_seconds is None


@pytest.mark.parametrize("where", ["forward", "backward"])
def test_a_failing_compiler_falls_back_to_eager(
    where: str, dtype: torch.dtype, device: torch.device, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a missing C++ compiler looks like: torch.compile's first call (or the backward
    # graph's) raises a dynamo exception; the step is taken again eagerly.
    failure = torch._dynamo.exc.TorchDynamoException("InvalidCxxCompiler: no working C++ compiler")

    class Broken(torch.autograd.Function):
        @staticmethod
        def forward(ctx: Any, loss: Tensor) -> Tensor:
            return loss.clone()

        @staticmethod
        def backward(ctx: Any, grad: Tensor) -> Tensor:
            raise failure

    def broken_compile(fn: Any, **kwargs: Any) -> Any:
        def call(*args: Any) -> Tensor:
            if where == "forward" or not torch.is_grad_enabled():
                raise failure
            return Broken.apply(fn(*args))

        return call

    eager = run(dtype, device)
    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(UserWarning) as caught:
        fallen = run(dtype, device, compile=True)
    messages = [str(w.message) for w in caught if "torch.compile" in str(w.message)]
    assert messages == [
        "torch.compile is unavailable (TorchDynamoException: InvalidCxxCompiler: no working "
        "C++ compiler); fitting eagerly"
    ]
    assert_same_fit(fallen, eager, 0.0)
    assert fallen[0].compile_seconds is None


def test_errors_of_the_flow_itself_are_not_taken_for_a_missing_compiler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Failing(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(()))

        def forward(self) -> Any:
            raise RuntimeError("the flow's own bug")

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    with pytest.raises(RuntimeError, match="the flow's own bug"):
        fit(Failing(), torch.randn(10, 2), steps=1, compile=True)


@pytest.mark.parametrize("context", [0, 3])
def test_compiled_sampler_draws_the_eager_samples(
    context: int, dtype: torch.dtype, device: torch.device
) -> None:
    # aot_eager runs the traced graph's random draws with torch's own generator: the same
    # seed gives the same samples, through the stepwise autoregressive inverse.
    torch.manual_seed(0)
    flow = MAF(2, context, transforms=2, hidden_features=(16, 16)).to(dtype=dtype, device=device)
    sample = compile_sampler(flow, TRACED)
    for rows in (5, 8):  # a second size reuses the graph (dynamic shapes)
        c = torch.randn(rows, context, dtype=dtype, device=device) if context else None
        shape = () if context else (rows,)
        torch.manual_seed(1)
        with torch.no_grad():
            expected = (flow() if c is None else flow(c)).sample(shape)
        torch.manual_seed(1)
        actual = sample(c, shape)
        assert actual.shape == (rows, 2) and not actual.requires_grad
        torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6)


def test_compiled_sampler_without_a_compiler_warns_and_samples_eagerly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flow = MAF(2, transforms=1)
    monkeypatch.setattr(compiling, "compile_unavailable", lambda: "no compiler here")
    with pytest.warns(UserWarning) as caught:
        sample = compile_sampler(flow)
    assert [str(w.message) for w in caught] == [
        "torch.compile is unavailable (no compiler here); sampling eagerly"
    ]
    torch.manual_seed(1)
    expected = flow().sample((4,))
    torch.manual_seed(1)
    assert torch.equal(sample(None, (4,)), expected)


def test_a_support_survives_graphs_compiled_for_a_flow_without_one(
    dtype: torch.dtype, device: torch.device
) -> None:
    # One compiled function serves every flow of a class, and the support is a forward hook:
    # a graph traced for the plain MAF must not be replayed for the bounded one.
    torch.manual_seed(0)
    plain = MAF(2, transforms=1, hidden_features=(8,)).to(dtype=dtype, device=device)
    bounded = MAF(2, transforms=1, hidden_features=(8,), support=(0.0, 1.0))
    bounded = bounded.to(dtype=dtype, device=device)
    compile_sampler(plain, TRACED)(None, (10,))
    draws = compile_sampler(bounded, TRACED)(None, (500,))
    assert bool(((draws > 0) & (draws < 1)).all())

    x = 0.01 + 0.98 * torch.rand(40, 2, dtype=dtype, device=device)
    fit(plain, torch.randn(40, 2, dtype=dtype, device=device), steps=2, compile=TRACED, seed=0)
    twin = MAF(2, transforms=1, hidden_features=(8,), support=(0.0, 1.0))
    twin = twin.to(dtype=dtype, device=device)
    twin.load_state_dict(bounded.state_dict())
    traced = fit(bounded, x, steps=3, patience=None, compile=TRACED, seed=0)
    eager = fit(twin, x, steps=3, patience=None, seed=0)
    tol = tolerance(dtype)
    assert traced.train_nll == pytest.approx(eager.train_nll, rel=tol, abs=tol)
    assert traced.val_nll == pytest.approx(eager.val_nll, rel=tol, abs=tol)
