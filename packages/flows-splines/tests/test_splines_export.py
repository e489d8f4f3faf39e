"""Export (issue 23): NSF (autoregressive and coupling) and NAF, in onnxruntime and torch.export.

Each preset's exported ``log_prob`` and ``sample`` (given the noise the flow's own sampler
draws) match the flow within 1e-4 at batch sizes 1, 7 and 1000 (:func:`flows.core.testing.
export.check_exported_flow`). The spline's fused autograd function and NAF's derivative by
``torch.autograd.grad`` are traced through; the batch size stays dynamic through the spline's
parameters-first layout. The ONNX checks skip only when the ``export`` extra is not installed.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from flows.core.export import export_program
from flows.core.testing.export import check_exported_flow, perturbed
from flows.splines import NAF, NSF

TINY = {"hidden_features": (8, 8)}
PRESETS: dict[str, Callable[[], nn.Module]] = {
    "nsf": lambda: NSF(2, transforms=1, bins=4, **TINY),
    "nsf-coupling": lambda: NSF(3, transforms=1, bins=4, passes=2, **TINY),
    # The sampler unrolls every bisection step into the graph: 11 steps at eps=1e-2, not 25.
    "naf": lambda: NAF(
        2, transforms=1, signal=4, network={"hidden_features": [8]}, eps=1e-2, **TINY
    ),
}
FORMATS = [
    "pt2",
    pytest.param(
        "onnx",
        marks=pytest.mark.together("onnxruntime"),
    ),
]
_PROGRAMS: dict[tuple[str, str], torch.export.ExportedProgram] = {}


def make(name: str, dtype: torch.dtype, device: torch.device) -> nn.Module:
    torch.manual_seed(0)
    return perturbed(PRESETS[name]()).to(dtype=dtype, device=device)


def program(name: str, what: str) -> torch.export.ExportedProgram:
    """One program per preset and function, for both formats (exports cost seconds)."""
    if (name, what) not in _PROGRAMS:
        flow = make(name, torch.float32, torch.device("cpu"))
        _PROGRAMS[name, what] = export_program(flow, what)
    return _PROGRAMS[name, what]


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("what", ["log_prob", "sample"])
@pytest.mark.parametrize("name", list(PRESETS))
def test_exported_flow_matches_eager(name, what, format, tmp_path, dtype, device):
    flow = make(name, dtype, device)
    path = tmp_path / f"{name}-{what}.{format}"
    check_exported_flow(flow, what, path, program=program(name, what))
