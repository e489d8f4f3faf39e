"""No NaN reported as success, no traceback: each failure is one `flows: error:` line, exit 1.

Subprocess runs check what a user sees (exit status, stderr, files left behind); in-process
runs of `main` cover the rest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from flows.cli.datasets import TOY_SETS, toy
from flows.cli.main import main
from flows.core.checkpoint import load, save

TINY = ["--flow", "maf", "--transforms", "1", "--hidden", "8", "--epochs", "1"]
SMALL = [*TINY, "--samples", "200", "--no-plot"]


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def one_error(status: int, stderr: str, expected: str) -> str:
    """Check a clean failure: status 1, no traceback, one error line and no other output.

    The only other line allowed is the announcement `fitting ...` that training started.
    """
    assert status == 1, stderr
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("fitting ")]
    assert len(lines) == 1 and lines[0].startswith("flows: error: "), stderr
    assert expected in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "m.pt"
    assert main(["fit", "moons", *SMALL, "--out", str(path)]) == 0
    return path


def write_csv(path: Path, header: str, rows: np.ndarray) -> Path:
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
    path.write_text(f"{header}\n{body}\n")
    return path


# 1. A diverging fit


def test_diverging_fit_stops_with_one_line_and_keeps_the_old_checkpoint(model, tmp_path, capsys):
    capsys.readouterr()
    before = snapshot(tmp_path)
    result = run(["fit", "moons", *SMALL, "--lr", "1e10", "--out", "m.pt"], tmp_path)
    line = one_error(result.returncode, result.stderr, "training diverged at step ")
    assert line.endswith("; lower --lr (now 1e+10) or set a smaller --clip-grad (now 5)")
    assert "train NLL" not in result.stdout
    assert snapshot(tmp_path) == before  # m.pt byte-identical, no plot, no temporary file


def test_a_nan_loss_is_refused_at_its_step(tmp_path, capsys, monkeypatch):
    from flows.core import training

    def diverging(*args, **kwargs):
        raise training.FitDivergedError(7, float("nan"))

    monkeypatch.setattr(training, "fit", diverging)
    monkeypatch.chdir(tmp_path)
    status = main(["fit", "moons", *SMALL, "--clip-grad", "0.5"])
    line = one_error(status, capsys.readouterr().err, "")
    assert line == (
        "flows: error: training diverged at step 7 (loss nan); lower --lr (now 0.003) or set a "
        "smaller --clip-grad (now 0.5)"
    )
    assert list(tmp_path.iterdir()) == []


# 2. Standardization


@pytest.mark.parametrize("scale", [1e154, 1e-20])
def test_fit_standardizes_very_large_and_very_small_data(tmp_path, scale, capsys):
    data = toy("moons", 200, seed=0).values * scale
    np.save(tmp_path / "d.npy", data)
    assert main(["fit", str(tmp_path / "d.npy"), *SMALL, "--out", str(tmp_path / "m.pt")]) == 0
    assert "warning" not in capsys.readouterr().err  # no overflow on the way
    checkpoint = load(tmp_path / "m.pt")
    np.testing.assert_allclose(checkpoint.extra["mean"], data.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        checkpoint.extra["std"], toy("moons", 200, seed=0).values.std(axis=0) * scale, rtol=1e-12
    )
    # In the data's units: the NLL of the standardized moons plus 2 log(scale) (about 1.4).
    shift = 2 * np.log(scale)
    assert abs(checkpoint.extra["train_nll"] - shift) < 5


def test_constant_column_is_refused_whatever_its_magnitude(tmp_path, capsys):
    data = np.stack([np.linspace(-1e-300, 1e-300, 50), np.full(50, -7e300)], axis=1)
    np.save(tmp_path / "d.npy", data)
    result = run(["fit", "d.npy", *TINY], tmp_path)
    one_error(result.returncode, result.stderr, "d.npy: column(s) 1 are constant")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy"]


def test_column_whose_spread_underflows_is_refused(tmp_path, capsys, monkeypatch):
    # Half the rows 0, half the smallest double: the standard deviation rounds to 0.
    data = np.stack([np.arange(50.0), np.where(np.arange(50) % 2, 5e-324, 0.0)], axis=1)
    np.save(tmp_path / "d.npy", data)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    status = main(["fit", str(tmp_path / "d.npy"), *SMALL])
    one_error(status, capsys.readouterr().err, "column(s) 1 cannot be standardized in float64")
    assert list(work.iterdir()) == []


def test_standardizing_values_at_the_float64_limit_does_not_overflow():
    from flows.cli.modeling import Standardizer

    values = np.array([[1.7e308], [-1.7e308], [-1.7e308]])
    scale = Standardizer.of(values, ["a"], "data")
    z = scale.forward(values)
    # x - m = 1.7e308 + 5.7e307 overflows; the halves do not.
    np.testing.assert_allclose(z[:, 0], [2**0.5, -(0.5**0.5), -(0.5**0.5)], rtol=1e-12)


# 3. eval out of range


def test_eval_names_rows_outside_the_models_range_instead_of_averaging_nan(model, tmp_path):
    values = toy("moons", 30, seed=3).values
    values[[4, 20]] = 1e37
    values[11, 1] = -1e39  # beyond float32 once standardized
    write_csv(tmp_path / "far.csv", "x,y", values)
    for extra in ([], ["--per-row"]):
        result = run(["eval", "m.pt", "far.csv", *extra], tmp_path)
        one_error(
            result.returncode,
            result.stderr,
            "far.csv: 3 row(s) lie outside the model's numeric range (data rows 5, 12, 21, "
            "counted from 1)",
        )
        assert result.stdout == ""  # --per-row prints nothing rather than part of the rows


def test_eval_counts_out_of_range_rows_in_the_files_numbering(model, tmp_path, capsys):
    values = toy("moons", 30, seed=3).values
    values[2] = np.nan  # dropped: the numbers still count it
    values[7] = 1e30
    write_csv(tmp_path / "far.csv", "x,y", values)
    capsys.readouterr()
    status = main(["eval", str(model), str(tmp_path / "far.csv"), "--drop-nonfinite"])
    one_error(
        status,
        capsys.readouterr().err,
        "far.csv: 1 row(s) lie outside the model's numeric range (data rows 8, counted from 1)",
    )


def test_eval_of_ordinary_rows_is_unchanged(model, tmp_path, capsys):
    write_csv(tmp_path / "near.csv", "x,y", toy("moons", 30, seed=3).values)
    capsys.readouterr()
    assert main(["eval", str(model), str(tmp_path / "near.csv")]) == 0
    assert "mean log-density -" in capsys.readouterr().out


# 4. Checkpoint extras


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("std", [1.0, -2.0], "'std' holds -2.0 for column 'y'; a standard deviation must be"),
        ("std", [0.0, 1.0], "'std' holds 0.0 for column 'x'"),
        ("std", [1.0, float("inf")], "'std' holds inf for column 'y'"),
        ("mean", [float("nan"), 0.0], "'mean' holds nan for column 'x'; a mean must be finite"),
        ("mean", [0.0], "'mean' must hold 2 number(s), one per column in 'columns', got [0.0]"),
        ("std", "1,2", "'std' must hold 2 number(s)"),
        ("columns", ["x"], "'columns' names 1 column(s) but its flow has 2 features"),
        ("columns", [1, 2], "'columns' must be a list of column names, got [1, 2]"),
        ("context_columns", ["c"], "'context_columns' names 1 column(s) but its flow has 0"),
    ],
)
@pytest.mark.parametrize("command", ["eval", "sample"])
def test_checkpoint_with_bad_statistics_is_refused_at_load(
    model, tmp_path, capsys, key, value, expected, command
):
    checkpoint = load(model)
    save(checkpoint.flow, model, extra={**checkpoint.extra, key: value})
    capsys.readouterr()
    argv = ["eval", str(model), "moons"] if command == "eval" else ["sample", str(model)]
    line = one_error(main(argv), capsys.readouterr().err, expected)
    assert line.startswith(f"flows: error: checkpoint {str(model)!r}: ")


# 5. Tracebacks that escape


def test_cuda_without_cuda_fails_before_any_work(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.chdir(tmp_path)
    for device in ("cuda", "cuda:7"):
        status = main(["fit", "moons", *TINY, "--device", device])
        err = capsys.readouterr().err
        one_error(status, err, f"--device {device}: CUDA is not available on this machine")
        assert "fitting" not in err
    assert list(tmp_path.iterdir()) == []


def test_cuda_device_beyond_the_machines_count(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.chdir(tmp_path)
    status = main(["fit", "moons", *TINY, "--device", "cuda:7"])
    one_error(
        status,
        capsys.readouterr().err,
        "--device cuda:7: this machine has 2 CUDA device(s), cuda:0 to cuda:1",
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("device", "expected"),
    [
        ("tpu", "--device 'tpu' is not a torch device (e.g. cpu, cuda, cuda:1)"),
        ("meta", "--device meta: the meta device holds no data"),
    ],
)
def test_unusable_device_names(tmp_path, capsys, monkeypatch, device, expected):
    monkeypatch.chdir(tmp_path)
    one_error(main(["fit", "moons", *TINY, "--device", device]), capsys.readouterr().err, expected)
    assert list(tmp_path.iterdir()) == []


def test_device_cuda_in_a_fresh_process(tmp_path):
    import torch

    if torch.cuda.is_available():
        device, expected = f"cuda:{torch.cuda.device_count()}", "CUDA device(s), cuda:0 to"
    else:
        device, expected = "cuda", "--device cuda: CUDA is not available on this machine"
    result = run(["fit", "moons", *TINY, "--device", device], tmp_path)
    one_error(result.returncode, result.stderr, expected)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["fit", "eval"])
def test_samples_are_bounded_by_the_argument_type(command, capsys):
    argv = ["fit", "moons"] if command == "fit" else ["eval", "m.pt", "moons"]
    with pytest.raises(SystemExit) as exit:
        main([*argv, "--samples", "1000000000000"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == (
        f"flows {command}: error: argument --samples: expected at most 10,000,000 rows, "
        "got 1,000,000,000,000"
    )


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (MemoryError("Unable to allocate 7.28 TiB for an array"), "out of memory: Unable to"),
        (MemoryError(), "flows: error: out of memory"),
    ],
)
def test_memory_error_is_one_line(tmp_path, capsys, monkeypatch, error, expected):
    def too_big(rows, rng):
        raise error

    monkeypatch.setitem(TOY_SETS, "moons", too_big)
    monkeypatch.chdir(tmp_path)
    one_error(main(["fit", "moons", *TINY]), capsys.readouterr().err, expected)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "error",
    [
        FloatingPointError("the ODE solver's step size underflowed at t=0.3"),
        RuntimeError("the ODE solver's step size underflowed at t=0.3"),
    ],
)
def test_numeric_failures_in_training_are_one_line(tmp_path, capsys, monkeypatch, error):
    from flows.core import training

    def failing(*args, **kwargs):
        raise error

    monkeypatch.setattr(training, "fit", failing)
    monkeypatch.chdir(tmp_path)
    one_error(main(["fit", "moons", *SMALL]), capsys.readouterr().err, "step size underflowed")
    assert list(tmp_path.iterdir()) == []


# 7. Preset names and arguments, eval's columns


def test_empty_flow_name_is_refused(capsys):
    with pytest.raises(SystemExit) as exit:
        main(["fit", "moons", "--flow", ""])
    assert exit.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "flows fit: error: argument --flow: expected the name of a preset "
        "(see `flows list-flows`), got an empty string"
    )


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ('randperm="no"', "--flow-arg randperm: flow 'maf' expects true or false, got 'no'"),
        ("randperm=no", "--flow-arg randperm: flow 'maf' expects true or false, got 'no'"),
        ("randperm=1", "--flow-arg randperm: flow 'maf' expects true or false, got 1"),
        ("transforms=2.5", "--flow-arg transforms: flow 'maf' expects an integer, got 2.5"),
        ("transforms=true", "--flow-arg transforms: flow 'maf' expects an integer, got true"),
        ("features=3", "--flow-arg features: the number of features is set by the data"),
    ],
)
def test_flow_arguments_are_checked_against_the_presets_types(
    tmp_path, capsys, monkeypatch, argument, expected
):
    monkeypatch.chdir(tmp_path)
    status = main(["fit", "moons", *SMALL, "--flow-arg", argument])
    one_error(status, capsys.readouterr().err, expected)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("flow", "argument", "expected"),
    [
        ("gf", "components=2.5", "--flow-arg components: flow 'gf' expects an integer, got 2.5"),
        (
            "realnvp",
            "randmask=0",
            "--flow-arg randmask: flow 'realnvp' expects true or false, got 0",
        ),
        ("gmm", "covariance_type=3", "--flow-arg covariance_type: flow 'gmm' expects a string"),
    ],
)
def test_flow_argument_types_of_other_presets(
    tmp_path, capsys, monkeypatch, flow, argument, expected
):
    monkeypatch.chdir(tmp_path)
    status = main(["fit", "moons", "--flow", flow, "--epochs", "1", "--flow-arg", argument])
    one_error(status, capsys.readouterr().err, expected)


def test_well_typed_flow_arguments_still_reach_the_preset(tmp_path):
    out = tmp_path / "m.pt"
    argv = ["fit", "moons", *SMALL, "--out", str(out), "--flow-arg", "randperm=false"]
    assert main([*argv, "--flow-arg", "hidden_features=[4,4]"]) == 0
    arguments = load(out).arguments
    assert arguments["randperm"] is False and arguments["hidden_features"] == [4, 4]


def test_eval_refuses_header_names_other_than_the_models(model, tmp_path, capsys):
    write_csv(tmp_path / "ab.csv", "a,b", toy("moons", 20, seed=5).values)
    capsys.readouterr()
    one_error(
        main(["eval", str(model), str(tmp_path / "ab.csv")]),
        capsys.readouterr().err,
        "ab.csv has no column(s) named x, y: the model was fitted on x, y, the file's columns "
        "are a, b; choose which to use with --columns (e.g. --columns a,b)",
    )
    assert main(["eval", str(model), str(tmp_path / "ab.csv"), "--columns", "a,b"]) == 0
    assert "over 20 rows of" in capsys.readouterr().out


def test_eval_reads_a_file_without_header_by_position(model, tmp_path, capsys):
    np.save(tmp_path / "d.npy", toy("moons", 20, seed=5).values)
    capsys.readouterr()
    assert main(["eval", str(model), str(tmp_path / "d.npy")]) == 0
    assert "over 20 rows of" in capsys.readouterr().out


# 8. A newcomer's run


SAS_MODULE = """
from flows.core import MAF


def MAFSAS(features, context=0, transforms=3, **kwargs):
    return MAF(features, context, transforms, univariate="sas", **kwargs)
"""


def test_a_transform_provided_twice_is_not_blamed_on_the_options(tmp_path, capsys, monkeypatch):
    from flows.core import plugins
    from flows.core.plugins import PresetSpec, TransformSpec, hookimpl

    (tmp_path / "sas_flows.py").write_text(textwrap.dedent(SAS_MODULE))
    monkeypatch.syspath_prepend(str(tmp_path))

    class SAS:
        def __init__(self, preset: bool) -> None:
            self.preset = preset

        @hookimpl
        def flows_register_transforms(self) -> list[TransformSpec]:
            constructor = "flows.core.transforms:MonotonicAffineTransform"
            return [TransformSpec("sas", constructor, shapes=lambda: [(), ()], summary="sas")]

        @hookimpl
        def flows_register_presets(self) -> list[PresetSpec]:
            spec = PresetSpec("maf-sas", "sas_flows:MAFSAS", summary="MAF of sas", transforms=())
            return [spec] if self.preset else []

    one, two = SAS(True), SAS(False)
    plugins.register(one, "sas-one")
    plugins.register(two, "sas-two")
    try:
        work = tmp_path / "work"
        work.mkdir()
        monkeypatch.chdir(work)
        line = one_error(
            main(["fit", "moons", "--flow", "maf-sas", "--epochs", "1", "--samples", "200"]),
            capsys.readouterr().err,
            "transform 'sas' is provided by both <registered> (sas-one) and <registered> "
            "(sas-two); uninstall one of them",
        )
        assert "refused its options" not in line
        assert list(work.iterdir()) == []
    finally:
        plugins.unregister(one)
        plugins.unregister(two)


def test_unknown_flow_is_answered_before_torch_is_imported(tmp_path):
    code = (
        "import sys\n"
        "from flows.cli.main import main\n"
        "status = main(['fit', 'moons', '--flow', 'mfa'])\n"
        "print(status, 'torch' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert result.stdout.split() == ["1", "False"], result.stderr
    one_error(1, result.stderr, "unknown preset 'mfa'; did you mean 'maf'")


def test_fit_help_gives_every_option_a_text_and_its_default(capsys):
    from flows.cli.main import build_parser

    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option, shown in [
        ("--batch-size BATCH_SIZE", "rows per optimizer step (default: 256)"),
        ("--clip-grad CLIP_GRAD", "(default: 5.0)"),
        ("--seed SEED", "(default: 0)"),
        ("--lr LR", "Adam learning rate (default: 0.003)"),
        ("--dist-timeout SECONDS", "(default: 300.0)"),
        ("--samples SAMPLES", "(at most 10,000,000) (default: 10000)"),
    ]:
        after = text.split(f"{option} ", 1)[1]
        assert shown in after.split(" --", 1)[0], (option, after[:200])
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name in ("fit", "sample", "eval"):
        for action in commands[name]._actions:
            assert action.help, (name, action.option_strings)


def test_samples_holding_inf_are_an_error_not_a_result(tmp_path, capsys):
    # Weights holding inf (a crafted or broken checkpoint) make every sample infinite.
    import hashlib
    import io

    import torch

    model = tmp_path / "m.pt"
    assert main(["fit", "moons", *SMALL, "--out", str(model)]) == 0
    outer = torch.load(model, weights_only=True)
    payload = torch.load(io.BytesIO(outer["payload"]), weights_only=True)
    for key, tensor in payload["state_dict"].items():
        if tensor.is_floating_point():
            payload["state_dict"][key] = torch.full_like(tensor, float("inf"))
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    outer["payload"] = buffer.getvalue()
    outer["sha256"] = hashlib.sha256(outer["payload"]).hexdigest()
    torch.save(outer, model)
    capsys.readouterr()
    out = tmp_path / "s.csv"
    status = main(["sample", str(model), "-n", "5", "--out", str(out)])
    one_error(
        status,
        capsys.readouterr().err,
        "the model drew samples holding NaN or inf: its weights are broken (diverged or "
        "altered); refit it",
    )
    assert not out.exists()
