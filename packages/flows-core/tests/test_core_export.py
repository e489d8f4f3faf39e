"""Export (issue 23): the core presets' log-densities and samples, in onnxruntime and torch.export.

Each preset's exported ``log_prob`` and ``sample`` (given the noise the flow's own sampler
draws) match the flow within 1e-4 at batch sizes 1, 7 and 1000, from an ONNX model run by
onnxruntime and from a loaded ``torch.export`` program. The ONNX checks skip only when the
``export`` extra is not installed. The flows are tiny and their weights perturbed away from
the identity they start near, so that every layer matters.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from torch.distributions import Transform

from flows.core import GF, GMM, MAF, NICE, RealNVP
from flows.core.distributions import BoxUniform, DiagNormal
from flows.core.export import (
    ExportError,
    Standardization,
    export,
    export_program,
    formats,
    load,
    read_metadata,
)
from flows.core.export.folding import fold_constants
from flows.core.export.substitutes import solve_triangular
from flows.core.lazy import Flow, LazyDistribution, LazyTransform, UnconditionalDistribution
from flows.core.testing.export import check_exported_flow, perturbed
from flows.core.transforms import MonotonicAffineTransform

TINY = {"hidden_features": (8, 8)}
PRESETS: dict[str, Callable[[], nn.Module]] = {
    "maf": lambda: MAF(2, transforms=2, **TINY),
    "nice": lambda: NICE(2, transforms=2, **TINY),
    "realnvp": lambda: RealNVP(2, transforms=2, **TINY),
    "gf": lambda: GF(2, transforms=1, components=3),
    "gmm": lambda: GMM(2, components=3),
    "maf-context": lambda: MAF(2, context=1, transforms=1, **TINY),
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
        _PROGRAMS[name, what] = export_program(
            make(name, torch.float32, torch.device("cpu")), what
        )
    return _PROGRAMS[name, what]


@pytest.mark.parametrize("format", FORMATS)
@pytest.mark.parametrize("what", ["log_prob", "sample"])
@pytest.mark.parametrize("name", list(PRESETS))
def test_exported_flow_matches_eager(name, what, format, tmp_path, dtype, device):
    flow = make(name, dtype, device)
    path = tmp_path / f"{name}-{what}.{format}"
    check_exported_flow(flow, what, path, program=program(name, what))


@pytest.mark.together("onnxruntime")
def test_export_folds_the_standardization_and_checks_what_it_wrote(tmp_path, dtype, device):
    flow = make("maf-context", dtype, device)
    scale = Standardization(
        mean=[10.0, -3.0], std=[2.0, 4.0], context_mean=[1.0], context_std=[4.0]
    )
    path = tmp_path / "density.onnx"
    report = export(flow, path, standardization=scale, metadata={"flows.note": "a test"})
    assert report.inputs == {"x": ("batch", 2), "c": ("batch", 1)}
    assert report.outputs == {"log_prob": ("batch",)}
    assert report.format == "onnx" and report.what == "log_prob" and report.probes == 256
    assert report.max_error is not None and report.max_error < 1e-4
    assert sorted(os.listdir(tmp_path)) == ["density.onnx"]  # no temporary file left
    described = read_metadata(path)
    assert described["flows.what"] == "log_prob" and described["flows.flow"] == "MAF"
    assert described["flows.note"] == "a test"
    assert described["flows.units"] == "the data's original units"

    x = torch.tensor([[10.0, -3.0], [12.0, -2.5], [7.0, -4.0]], dtype=dtype, device=device)
    c = torch.tensor([[1.0], [5.0], [-7.0]], dtype=dtype, device=device)
    z = (x - torch.tensor([10.0, -3.0], dtype=dtype, device=device)) / torch.tensor(
        [2.0, 4.0], dtype=dtype, device=device
    )
    with torch.no_grad():
        expected = flow((c - 1.0) / 4.0).log_prob(z) - math.log(8.0)  # log 2 + log 4
    actual = load(path)(x.cpu().float(), c.cpu().float())
    torch.testing.assert_close(actual.double(), expected.cpu().double(), rtol=1e-4, atol=1e-4)


def test_exported_samples_are_in_the_data_units(tmp_path, dtype, device):
    flow = make("maf", dtype, device)
    scale = Standardization(mean=[10.0, -3.0], std=[2.0, 0.5])
    report = export(flow, tmp_path / "sampler.pt2", what="sample", standardization=scale)
    assert report.inputs == {"z": ("batch", 2)} and report.outputs == {"x": ("batch", 2)}
    z = torch.randn(5, 2, dtype=dtype, device=device)
    with torch.no_grad():
        standardized = flow().transform.inv(z)
    expected = standardized * torch.tensor([2.0, 0.5], dtype=dtype, device=device)
    expected = expected + torch.tensor([10.0, -3.0], dtype=dtype, device=device)
    actual = load(tmp_path / "sampler.pt2")(z.cpu().float())
    torch.testing.assert_close(actual.double(), expected.cpu().double(), rtol=1e-4, atol=1e-4)


def test_gmm_samples_pick_components_by_the_uniform_input(tmp_path, dtype, device):
    torch.manual_seed(0)
    gmm = GMM(2, context=1, components=3, covariance_type="diagonal", **TINY)
    gmm = gmm.to(dtype=dtype, device=device)
    export(gmm, tmp_path / "gmm.pt2", what="sample")
    model = load(tmp_path / "gmm.pt2")
    c = torch.tensor([[-1.0], [0.0], [2.0]], dtype=dtype, device=device)
    mixture = gmm(c)
    weights = torch.softmax(mixture.logits, dim=-1).detach().cpu().double()  # (3 rows, 3)
    for k in range(3):
        # The middle of component k's slice of [0, 1) picks it; with z = 0, x is its mean.
        u = weights.cumsum(-1)[:, k] - weights[:, k] / 2
        z = torch.zeros(3, 2, dtype=dtype, device=device)
        x = model(z.cpu().float(), u.float(), c.cpu().float())
        expected = mixture.base.mean[:, k].detach().cpu().double()
        torch.testing.assert_close(x.double(), expected, rtol=1e-5, atol=1e-5)
    # z = 1 moves each coordinate by the component's standard deviation.
    u = (weights.cumsum(-1)[:, 0] - weights[:, 0] / 2).float()
    z = torch.ones(3, 2, dtype=dtype, device=device)
    x = model(z.cpu().float(), u, c.cpu().float()).double()
    scale = mixture.base.base_dist.scale[:, 0].detach().cpu().double()
    torch.testing.assert_close(x - mixture.base.mean[:, 0].detach().cpu().double(), scale)


class _Branching(LazyTransform):
    """Shifts by +1 or -1 depending on the sign of the data's sum: a data-dependent branch."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("like", torch.zeros(()))

    def forward(self, c: Tensor | None = None) -> Transform:
        return _Sign(self.like)


class _Sign(MonotonicAffineTransform):
    def __init__(self, like: Tensor) -> None:
        super().__init__(like.new_zeros(()), like.new_zeros(()))

    def call_and_ladj(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.sum() > 0:  # the line the error names
            return x + 1, torch.zeros_like(x)
        return x - 1, torch.zeros_like(x)


def _branching_flow(device: torch.device) -> Flow:
    zeros, ones = torch.zeros(2, device=device), torch.ones(2, device=device)
    base = UnconditionalDistribution(DiagNormal, zeros, ones, buffer=True)
    return Flow([_Branching()], base).to(device)


def test_a_flow_that_branches_on_its_data_is_refused_naming_the_place(tmp_path, device):
    with pytest.raises(ExportError) as error:
        export(_branching_flow(device), tmp_path / "f.pt2", features=2)
    message = str(error.value)
    assert message.startswith(
        "cannot export the log-density of Flow: its computation depends on the values of its "
        "inputs (at "
    )
    assert "test_core_export.py:" in message and "in call_and_ladj" in message
    assert "such as an adaptive ODE solver choosing its steps, cannot be exported" in message
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("what", ["log_prob", "sample"])
def test_a_flow_whose_own_values_are_nan_is_refused(what, tmp_path, device):
    # NaN matches NaN: the check passed a broken flow as a faithful export.
    flow = MAF(2, transforms=1).to(device)
    with torch.no_grad():
        next(flow.parameters()).fill_(float("inf"))
    with pytest.raises(ExportError, match=rf"the flow's own {what} is NaN at \d+ of the"):
        export(flow, tmp_path / "f.pt2", what=what)
    assert list(tmp_path.iterdir()) == []


class _Uniform(LazyDistribution):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("high", torch.ones(2))

    def forward(self, c: Tensor | None = None) -> BoxUniform:
        return BoxUniform(-self.high, self.high)


def test_sampling_what_is_neither_a_flow_nor_a_gaussian_mixture_is_refused(tmp_path, device):
    with pytest.raises(ExportError, match="cannot export sample of _Uniform: its distribution is"):
        export(_Uniform().to(device), tmp_path / "u.pt2", what="sample", features=2)


def test_a_missing_extra_is_one_line_naming_the_install(tmp_path, monkeypatch, device):
    hidden = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        # All three hidden, so the message is the same with and without the extra installed.
        missing = ("onnx", "onnxscript", "onnxruntime")
        return None if name in missing else hidden(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ExportError) as error:
        export(MAF(2, transforms=1).to(device), tmp_path / "m.onnx")
    assert str(error.value) == (
        "ONNX export needs onnx, onnxscript, onnxruntime, which are not installed: "
        "pip install 'flows-core[export]'"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"path": "m.xml"}, ValueError, "format: cannot tell it from the file name"),
        ({"format": "tflite"}, ValueError, "format must be one of"),
        ({"what": "density"}, ValueError, "what must be one of"),
        ({"probes": 0}, ValueError, "probes must be an int >= 1, got 0"),
        (
            {"standardization": Standardization(mean=[0.0])},
            ValueError,
            "standardization: mean has 1 number(s) but the flow has 2 features",
        ),
        ({"standardization": {"mean": [0.0, 0.0]}}, TypeError, "must be a Standardization"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, error, message, tmp_path, device):
    path = tmp_path / kwargs.pop("path", "m.pt2")
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        export(MAF(2, transforms=1).to(device), path, **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_standardization_refuses_bad_statistics():
    with pytest.raises(ValueError, match=r"std must hold positive numbers, got -1\.0"):
        Standardization(std=[1.0, -1.0])
    with pytest.raises(ValueError, match="must hold finite numbers, got nan"):
        Standardization(mean=[float("nan")])
    with pytest.raises(ValueError, match="one number per column each, got 2 and 1"):
        Standardization(mean=[0.0, 1.0], std=[1.0])


def test_importing_the_export_module_imports_no_onnx():
    code = (
        "import sys, flows.core.export; "
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'onnxscript') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_folding_never_freezes_a_value_the_graph_writes(device):
    from torch.fx.experimental.proxy_tensor import make_fx

    weight = torch.tensor([1.0, 2.0], device=device)

    def f(x: Tensor) -> Tensor:
        doubled = weight * 2  # foldable, but written in place below: must stay computed
        return doubled.add_(x).exp().sum() + (weight * 3).sum()

    graph = make_fx(f)(torch.zeros(2, device=device))
    assert fold_constants(graph) == 2  # weight * 3, and its sum
    for x in (torch.zeros(2, device=device), torch.ones(2, device=device)):
        torch.testing.assert_close(graph(x), f(x))


class _Normal(nn.Module):
    def forward(self, z: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        return torch.special.log_ndtr(z), torch.special.ndtri(p)


@pytest.mark.together("onnxruntime")
def test_onnx_normal_functions_match_torch_in_both_tails(tmp_path, device):
    import onnxruntime

    like = {"device": device}
    p = torch.cat([torch.logspace(-38, -1, 1000, **like), torch.linspace(0.1, 0.9, 1001, **like)])
    ends = torch.tensor([0.0, 1.0, -0.5, 1.5], **like)
    p = torch.cat([p, 1 - torch.logspace(-7, -1, 1000, **like), ends])
    z = torch.linspace(-40.0, 40.0, len(p), **like)
    # ONNX runs on the CPU: the program is exported there.
    p, z = p.cpu(), z.cpu()
    batch = torch.export.Dim("batch")
    program = torch.export.export(_Normal(), (z, p), dynamic_shapes=({0: batch}, {0: batch}))
    path = tmp_path / "normal.onnx"
    formats.write(program, path, "onnx", inputs=("z", "p"), outputs=("l", "q"), metadata={})
    session = onnxruntime.InferenceSession(str(path))
    log_cdf, quantile = (
        torch.from_numpy(v).double() for v in session.run(None, {"z": z.numpy(), "p": p.numpy()})
    )
    expected = torch.special.log_ndtr(z.double())
    assert float(((log_cdf - expected).abs() / (1 + expected.abs())).max()) < 1e-6
    expected = torch.special.ndtri(p.double())
    torch.testing.assert_close(quantile, expected, rtol=1e-6, atol=1e-5, equal_nan=True)
    assert quantile[-4:].tolist()[:2] == [float("-inf"), float("inf")]
    assert quantile[-2:].isnan().all()


def test_triangular_solves_by_substitution_match_torch(dtype, device):
    torch.manual_seed(0)
    like = {"dtype": dtype, "device": device}
    a = torch.randn(4, 3, 3, **like).tril() + 3 * torch.eye(3, **like)
    b = torch.randn(4, 3, 2, **like)
    for upper in (False, True):
        matrix = a.mT if upper else a
        torch.testing.assert_close(
            solve_triangular(matrix, b, upper=upper),
            torch.linalg.solve_triangular(matrix, b, upper=upper),
        )
        torch.testing.assert_close(
            solve_triangular(matrix, b.mT, upper=upper, left=False),
            torch.linalg.solve_triangular(matrix, b.mT, upper=upper, left=False),
        )


def test_export_leaves_the_flow_and_its_device_as_they_were(tmp_path, dtype, device):
    flow = make("maf", dtype, device)
    before = {k: v.clone() for k, v in flow.state_dict().items()}
    export(flow, Path(tmp_path, "m.pt2"))
    after = flow.state_dict()
    assert all(
        torch.equal(before[k], after[k]) and after[k].device == before[k].device for k in before
    )
    assert all(p.requires_grad for p in flow.parameters())
