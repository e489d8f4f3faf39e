"""`flows fit --compile`: the loss through torch.compile, the eager fit's weights, its cost shown.

torch.compile is made to trace with the ``aot_eager`` backend here (no code generation, which
costs seconds per graph); flows-core's tests run the default backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from flows.cli.main import main
from flows.core import compiling
from flows.core.checkpoint import load

TINY = ["--flow", "maf", "--transforms", "1", "--hidden", "8,8", "--epochs", "2", "--no-plot"]


@pytest.fixture(autouse=True)
def fresh_dynamo() -> Iterator[None]:
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """torch.compile with the aot_eager backend; the arguments fit passed, recorded."""
    seen: list[dict[str, Any]] = []
    compile_ = torch.compile

    def recorded(fn: Any, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return compile_(fn, dynamic=kwargs["dynamic"], backend="aot_eager")

    monkeypatch.setattr(torch, "compile", recorded)
    return seen


def fit(tmp_path: Path, name: str, *extra: str) -> dict[str, torch.Tensor]:
    path = tmp_path / name
    assert main(["fit", "moons", "--samples", "300", *TINY, "--out", str(path), *extra]) == 0
    return load(path).flow.state_dict()


def test_compiled_fit_writes_the_eager_weights_and_its_compile_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], traced: list[dict[str, Any]]
) -> None:
    eager = fit(tmp_path, "eager.pt")
    assert not [
        line for line in capsys.readouterr().out.splitlines() if line.startswith("compile")
    ]
    compiled = fit(tmp_path, "compiled.pt", "--compile")
    assert traced == [{"dynamic": True}]
    for key, value in eager.items():
        torch.testing.assert_close(compiled[key], value, rtol=1e-5, atol=1e-5, msg=key)
    lines = capsys.readouterr().out.splitlines()
    cost = [line for line in lines if line.startswith("compile ")]
    assert len(cost) == 1 and cost[0].endswith(" ms per step"), lines
    assert " s, then " in cost[0]


def test_a_compile_mode_implies_compile(tmp_path: Path, traced: list[dict[str, Any]]) -> None:
    fit(tmp_path, "m.pt", "--compile-mode", "reduce-overhead")
    assert traced == [{"dynamic": True, "mode": "reduce-overhead"}]


def test_without_a_compiler_one_note_and_an_eager_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    eager = fit(tmp_path, "eager.pt")
    capsys.readouterr()
    monkeypatch.setattr(compiling, "compile_unavailable", lambda: "no compiler here")
    fallen = fit(tmp_path, "fallen.pt", "--compile")
    captured = capsys.readouterr()
    assert captured.err.splitlines()[1:] == [
        "flows: note: torch.compile is unavailable (no compiler here); fitting eagerly"
    ]
    assert not [line for line in captured.out.splitlines() if line.startswith("compile")]
    for key, value in eager.items():
        assert torch.equal(fallen[key], value), key
