"""``flows export`` (issue 23): round trips in the data's units, its own files, one-line errors.

The exported log-density equals ``flows eval``'s, row by row, and the exported sampler maps
noise as the checkpoint's flow does, un-standardized; a rerun replaces its own file, nothing
else is replaced unasked, and bad input ends with one ``flows: error:`` line and no file. The
ONNX checks skip only when the ``export`` extra is not installed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.cli.main import main
from flows.cli.outputs import is_flows_export

TINY = ["--flow", "maf", "--transforms", "1", "--hidden", "8", "--epochs", "1", "--no-plot"]


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    status = main(argv)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return status, captured.out, captured.err


def fails(argv: list[str], capsys, expected: str) -> str:
    """Run the command; check it failed with exactly one ``flows: error:`` line."""
    status, _, err = run(argv, capsys)
    assert status == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flows: error: "), err
    assert expected in lines[0], lines[0]
    return lines[0]


def files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny MAF fitted to moons, and data rows in the data's units."""
    folder = tmp_path_factory.mktemp("trained")
    argv = ["fit", "moons", "--samples", "200", *TINY, "--out", str(folder / "m.pt")]
    assert main(argv) == 0
    rows = np.random.default_rng(0).normal(size=(50, 2)) * [1.0, 0.5] + [0.5, 0.25]
    np.savetxt(folder / "data.csv", rows, delimiter=",", header="x,y", comments="")
    return folder


@pytest.fixture
def work(tmp_path: Path, trained: Path) -> Path:
    for name in ("m.pt", "data.csv"):
        shutil.copy(trained / name, tmp_path / name)
    return tmp_path


def eval_rows(model: Path, data: Path, capsys, *extra: str) -> np.ndarray:
    out = data.with_name("log_prob.csv")
    status, _, _ = run(["eval", str(model), str(data), "--out", str(out), *extra], capsys)
    assert status == 0
    values = np.loadtxt(out, delimiter=",", skiprows=1)
    out.unlink()
    return values


@pytest.mark.together("onnxruntime")
def test_onnx_log_density_equals_flows_eval_row_by_row(work: Path, capsys):
    import onnxruntime

    status, out, err = run(["export", str(work / "m.pt")], capsys)
    assert status == 0 and err == ""
    line = out.strip()
    assert line.startswith(
        f"wrote {work / 'm.onnx'}: the log-density of maf as an ONNX model, (x[batch, 2]) -> "
        "(log_prob[batch]) with x = (x, y) in the data's units; it matches the flow within "
    )
    assert line.endswith(" on 256 probe rows")
    session = onnxruntime.InferenceSession(str(work / "m.onnx"))
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("x", ["batch", 2])]
    rows = np.loadtxt(work / "data.csv", delimiter=",", skiprows=1)
    for batch in (1, 7, 50):
        (log_p,) = session.run(None, {"x": rows[:batch].astype(np.float32)})
        expected = eval_rows(work / "m.pt", work / "data.csv", capsys)[:batch]
        np.testing.assert_allclose(log_p, expected, rtol=1e-4, atol=1e-4)
    described = session.get_modelmeta().custom_metadata_map
    assert is_flows_export(work / "m.onnx")  # so that a rerun replaces it without --force
    (work / "torch.onnx").write_bytes(b"\x08\x0a\x12\x07pytorch\x1a\x062.13.0")
    assert not is_flows_export(work / "torch.onnx")
    assert described["flows.preset"] == "maf"
    assert json.loads(described["flows.columns"]) == ["x", "y"]
    assert described["flows.what"] == "log_prob"


def test_pt2_sampler_maps_noise_as_the_checkpoint_does(work: Path, capsys):
    from flows.core.checkpoint import load

    argv = ["export", str(work / "m.pt"), "--what", "sample", "--format", "pt2"]
    status, out, _ = run(argv, capsys)
    assert status == 0
    assert out.startswith(f"wrote {work / 'm-sample.pt2'}: sampling of maf as a torch.export ")
    program = torch.export.load(str(work / "m-sample.pt2")).module()
    flow, extra = load(work / "m.pt")
    std, mean = torch.tensor(extra["std"]), torch.tensor(extra["mean"])
    for batch in (1, 7, 1000):
        z = torch.randn(batch, 2)
        with torch.no_grad():
            expected = flow().transform.inv(z) * std + mean
            torch.testing.assert_close(program(z), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.together("onnxruntime")
def test_conditional_log_density_takes_the_context_in_its_units(tmp_path: Path, capsys):
    import onnxruntime

    rng = np.random.default_rng(0)
    c = rng.normal(size=(200, 1)) * 3 + 10
    x = np.concatenate([c / 3 + 0.1 * rng.normal(size=(200, 1)), rng.normal(size=(200, 1))], 1)
    data = tmp_path / "d.csv"
    np.savetxt(data, np.concatenate([x, c], 1), delimiter=",", header="a,b,c", comments="")
    model = tmp_path / "c.pt"
    argv = ["fit", str(data), *TINY, "--columns", "a,b", "--context-columns", "c"]
    assert run([*argv, "--out", str(model)], capsys)[0] == 0
    status, out, _ = run(["export", str(model), "--out", str(tmp_path / "c.onnx")], capsys)
    assert status == 0
    assert "(x[batch, 2], c[batch, 1]) -> (log_prob[batch]) with x = (a, b), c = (c)" in out
    session = onnxruntime.InferenceSession(str(tmp_path / "c.onnx"))
    feeds = {"x": x[:40].astype(np.float32), "c": c[:40].astype(np.float32)}
    (log_p,) = session.run(None, feeds)
    np.savetxt(data, np.concatenate([x, c], 1)[:40], delimiter=",", header="a,b,c", comments="")
    expected = eval_rows(model, data, capsys)
    np.testing.assert_allclose(log_p, expected, rtol=1e-4, atol=1e-4)


def test_a_rerun_replaces_its_own_export_and_nothing_else(work: Path, capsys):
    argv = ["export", str(work / "m.pt"), "--format", "pt2"]
    assert run(argv, capsys)[0] == 0
    assert run(argv, capsys)[0] == 0  # its own m.pt2: replaced without --force
    foreign = work / "other.pt2"
    foreign.write_bytes(b"not ours")
    before = files(work)
    fails(
        [*argv, "--out", str(foreign)],
        capsys,
        f"--out {str(foreign)!r} exists and is not a model exported by flows; pass --force",
    )
    assert files(work) == before
    assert run([*argv, "--out", str(foreign), "--force"], capsys)[0] == 0
    assert foreign.read_bytes() != b"not ours"


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--format", "xml"], "--format 'xml' is not one of onnx, pt2"),
        (["--what", "density"], "--what 'density' is not one of log_prob, sample"),
        (
            ["--format", "pt2", "--out", "{work}/m.onnx"],
            "--out '{work}/m.onnx': a torch.export program is written to a .pt2 file",
        ),
    ],
)
def test_bad_options_end_with_one_line_and_write_nothing(options, expected, work, capsys):
    before = files(work)
    options = [option.format(work=work) for option in options]
    fails(["export", str(work / "m.pt"), *options], capsys, expected.format(work=work))
    assert files(work) == before


def test_the_model_is_never_its_own_output(work: Path, capsys):
    shutil.copy(work / "m.pt", work / "model.pt2")  # its default output is its own name
    before = files(work)
    line = fails(
        ["export", str(work / "model.pt2"), "--format", "pt2", "--force"],
        capsys,
        "is the same file as MODEL",
    )
    assert "(its default)" in line
    assert files(work) == before


@pytest.mark.together("flows.ode")
def test_a_cnf_checkpoint_is_refused_with_the_reason(work: Path, capsys):
    from flows.core.checkpoint import save
    from flows.ode import CNF

    extra = {"columns": ["x", "y"], "mean": [0.0, 0.0], "std": [1.0, 1.0]}
    save(CNF(2, hidden_features=(8, 8)), work / "cnf.pt", extra=extra)
    before = files(work)
    line = fails(
        ["export", str(work / "cnf.pt"), "--format", "pt2"],
        capsys,
        "flows: error: cannot export the log-density of CNF: its computation depends on the "
        "values of its inputs (at torchdiffeq/",
    )
    assert "reached from flows/ode/" in line and "adaptive ODE solver" in line
    assert files(work) == before


def test_a_missing_extra_is_one_line_and_pt2_still_works(work: Path, capsys, monkeypatch):
    hidden = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        # All three hidden, so the message is the same with and without the extra installed.
        missing = ("onnx", "onnxscript", "onnxruntime")
        return None if name in missing else hidden(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    before = files(work)
    fails(
        ["export", str(work / "m.pt")],
        capsys,
        "flows: error: --format onnx needs onnx, onnxscript, onnxruntime, which are not "
        "installed: pip install 'flows-core[export]'",
    )
    assert files(work) == before
    assert run(["export", str(work / "m.pt"), "--format", "pt2"], capsys)[0] == 0


def test_an_image_checkpoint_is_refused_with_the_reason(tmp_path: Path, capsys):
    from flows.cli.images import KIND
    from flows.core import MAF
    from flows.core.checkpoint import save

    # What `flows fit digits` records beside its flow (a small stand-in flow: only the record
    # is read before the refusal).
    extra = {"kind": KIND, "data": "digits", "shape": [1, 8, 8], "levels": 17, "steps": 1}
    save(MAF(features=64, transforms=1, hidden_features=(8,)), tmp_path / "g.pt", extra=extra)
    before = files(tmp_path)
    for format in ("pt2", "onnx"):
        line = fails(
            ["export", str(tmp_path / "g.pt"), "--format", format],
            capsys,
            f"flows: error: {str(tmp_path / 'g.pt')!r} holds an image flow, and image "
            "checkpoints cannot be exported yet: ",
        )
        assert "(C, H, W) images on K levels" in line and "data statistics" not in line
    assert files(tmp_path) == before


@pytest.mark.parametrize("what", ["log_prob", "sample"])
def test_a_flow_with_broken_weights_is_refused_and_nothing_written(work: Path, capsys, what):
    # The export's check counted NaN against NaN as a match: a flow whose weights hold inf was
    # written and reported as matching.
    from flows.core.checkpoint import load, save

    checkpoint = load(work / "m.pt")
    with torch.no_grad():
        next(iter(checkpoint.flow.parameters())).fill_(float("inf"))
    save(checkpoint.flow, work / "inf.pt", extra=checkpoint.extra)
    before = files(work)
    line = fails(["export", str(work / "inf.pt"), "--format", "pt2", "--what", what], capsys, "")
    assert line.startswith(f"flows: error: the flow's own {what} is NaN at ")
    assert line.endswith("of the check's probes: its weights are broken")
    assert files(work) == before
