"""Tests of `flows fit`, `flows sample` and `flows eval` on tiny settings."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from flows.cli.datasets import toy
from flows.cli.main import main
from flows.core.checkpoint import load

TINY = ["--flow", "maf", "--transforms", "1", "--hidden", "8,8", "--epochs", "2"]


def fit(tmp_path: Path, data: str, *extra: str, out: str = "m.pt") -> Path:
    path = tmp_path / out
    assert main(["fit", data, *TINY, "--out", str(path), *extra]) == 0
    return path


def write_csv(path: Path, header: list[str], values: np.ndarray) -> Path:
    lines = [",".join(header)] + [",".join(repr(float(v)) for v in row) for row in values]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fit_writes_checkpoint_plot_and_summary(tmp_path: Path, capsys):
    model = fit(tmp_path, "moons", "--samples", "400")
    out = capsys.readouterr().out
    assert "train NLL" in out and "held-out NLL" in out and "nats" in out
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    _, extra = load(model)
    assert extra["columns"] == ["x", "y"] and extra["context_columns"] == []
    data = toy("moons", 400, seed=0).values
    np.testing.assert_allclose(extra["mean"], data.mean(0))
    np.testing.assert_allclose(extra["std"], data.std(0))
    assert math.isfinite(extra["val_nll"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "m.pt"]


def test_fit_passes_hyper_parameters_to_the_preset(tmp_path: Path):
    model = fit(
        tmp_path, "circles", "--samples", "200", "--no-plot", "--flow-arg", "randperm=true"
    )
    checkpoint = load(model)
    assert checkpoint.preset == "maf"
    assert checkpoint.arguments["transforms"] == 1
    assert checkpoint.arguments["hidden_features"] == [8, 8]
    assert checkpoint.arguments["randperm"] is True
    assert not (tmp_path / "m.png").exists()


def test_eval_reports_density_in_the_original_units(tmp_path: Path, capsys):
    data = toy("moons", 300, seed=0).values
    small = write_csv(tmp_path / "small.csv", ["x", "y"], data)
    large = write_csv(tmp_path / "large.csv", ["x", "y"], data * 10)
    fit(tmp_path, str(small), out="small.pt")
    fit(tmp_path, str(large), out="large.pt")
    capsys.readouterr()

    means = []
    for name in ("small", "large"):
        assert (
            main(
                ["eval", str(tmp_path / f"{name}.pt"), str(tmp_path / f"{name}.csv"), "--per-row"]
            )
            == 0
        )
        captured = capsys.readouterr()
        lines = captured.out.splitlines()
        assert lines[0] == "log_prob" and len(lines) == 301
        values = np.array([float(v) for v in lines[1:]])
        assert "mean log-density" in captured.err
        means.append(values.mean())
    # Scaling 2-D data by 10 divides its density by 100.
    assert means[1] == pytest.approx(means[0] - 2 * math.log(10), abs=1e-3)


def test_sample_prints_csv_and_eval_reads_it_back(tmp_path: Path, capsys):
    model = fit(tmp_path, "8gaussians", "--samples", "300", "--no-plot")
    capsys.readouterr()
    assert main(["sample", str(model), "-n", "25", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "x,y" and len(lines) == 26
    samples = tmp_path / "s.csv"
    samples.write_text("\n".join(lines) + "\n")
    assert main(["eval", str(model), str(samples)]) == 0
    assert "over 25 rows" in capsys.readouterr().out

    assert main(["sample", str(model), "-n", "7", "--out", str(tmp_path / "s.npy")]) == 0
    assert np.load(tmp_path / "s.npy").shape == (7, 2)


def test_conditional_fit_sample_and_eval(tmp_path: Path, capsys):
    rng = np.random.default_rng(0)
    c = rng.normal(size=(300, 1))
    x = np.concatenate([c + 0.1 * rng.normal(size=(300, 1)), rng.normal(size=(300, 2))], axis=1)
    data = write_csv(tmp_path / "d.csv", ["a", "b", "c", "cond"], np.concatenate([x, c], 1))
    model = fit(tmp_path, str(data), "--context-columns", "cond")
    capsys.readouterr()
    checkpoint = load(model)
    assert checkpoint.extra["columns"] == ["a", "b", "c"]
    assert checkpoint.extra["context_columns"] == ["cond"]
    assert not (tmp_path / "m.png").exists()  # three features: no picture

    assert main(["sample", str(model), "-n", "4", "--context", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "cond,a,b,c" and len(lines) == 5
    assert all(line.startswith("0.5,") for line in lines[1:])

    assert main(["eval", str(model), str(data)]) == 0
    assert "over 300 rows" in capsys.readouterr().out


def test_fit_drops_non_finite_rows_when_asked(tmp_path: Path, capsys):
    values = toy("moons", 200, seed=0).values
    values[[3, 50]] = np.nan
    data = write_csv(tmp_path / "d.csv", ["x", "y"], values)
    fit(tmp_path, str(data), "--no-plot", "--drop-nonfinite")
    assert "2 non-finite rows dropped" in capsys.readouterr().err


def test_fit_without_matplotlib_notes_it_and_writes_no_png(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    fit(tmp_path, "moons", "--samples", "200")
    captured = capsys.readouterr()
    assert "matplotlib is not installed" in captured.out + captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


def test_fit_of_data_wider_than_a_double_notes_the_plot_and_succeeds(tmp_path: Path, capsys):
    # high - low of the plot's range overflows; the checkpoint is already written by then, so
    # the plot is a one-line note and the command succeeds (not exit 1 with the model left).
    values = np.random.default_rng(0).normal(size=(200, 2))
    values[:, 0] = np.sign(values[:, 0]) * 1.5e308
    np.save(tmp_path / "d.npy", values)
    fit(tmp_path, str(tmp_path / "d.npy"), "--epochs", "1")
    err = capsys.readouterr().err
    assert "Traceback" not in err and "warning" not in err
    assert err.strip().splitlines()[-1] == (
        "flows: note: the data span more than the largest float, so no plot was drawn"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npy", "m.pt"]


def test_a_folder_named_like_a_built_in_set_does_not_take_it_over(
    tmp_path: Path, capsys, monkeypatch
):
    # As in `flows eval`, the name of a built-in set means that set; the folder `moons/` (an
    # output folder, say) neither turns the fit into an image fit nor is read.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "moons").mkdir()
    argv = ["fit", "moons", "--samples", "200", *TINY, "--epochs", "1", "--no-plot"]
    assert main([*argv, "--out", "moons/m.pt"]) == 0
    err = capsys.readouterr().err
    assert "fitting maf" in err and "to moons: 200 rows x 2 features" in err
    assert load(tmp_path / "moons" / "m.pt").extra["data"] == "moons"
