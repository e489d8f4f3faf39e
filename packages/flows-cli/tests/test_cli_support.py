"""`flows fit --support`: a support in the data's units, standardized for the flow; samples
only inside; rows outside an error naming them."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.cli.main import main
from flows.core.checkpoint import load, save

TINY = ["--flow", "maf", "--transforms", "1", "--hidden", "8", "--epochs", "2", "--no-plot"]
INF = math.inf


def write_csv(path: Path, header: list[str], values: np.ndarray) -> Path:
    lines = [",".join(header)] + [",".join(repr(float(v)) for v in row) for row in values]
    path.write_text("\n".join(lines) + "\n")
    return path


def bounded_data(rows: int = 300) -> np.ndarray:
    """A column in (2, 3), one above 1, one unbounded."""
    rng = np.random.default_rng(0)
    return np.stack(
        [2 + rng.beta(2, 5, rows), 1 + rng.exponential(1.0, rows), rng.normal(5, 2, rows)], 1
    )


def fails(argv: list[str], capsys, expected: str, code: int = 1) -> str:
    if code == 2:
        with pytest.raises(SystemExit) as exit:
            main(argv)
        status = exit.value.code
    else:
        status = main(argv)
    err = capsys.readouterr().err
    assert status == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("flows: error: " if code == 1 else "flows fit: error: "), last
    assert expected in last, last
    return last


@pytest.fixture
def fitted(tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    data = bounded_data()
    csv = write_csv(tmp_path / "d.csv", ["a", "b", "c"], data)
    model = tmp_path / "m.pt"
    argv = ["fit", str(csv), *TINY, "--support", "2:3,1:,:", "--out", str(model)]
    assert main(argv) == 0
    return model, csv, data


def test_fit_records_the_support_in_data_units_and_standardized_for_the_flow(fitted):
    model, _, _ = fitted
    checkpoint = load(model)
    extra = checkpoint.extra
    assert extra["support"] == [[2.0, 1.0, -INF], [3.0, INF, INF]]
    mean, std = np.array(extra["mean"]), np.array(extra["std"])
    low, high = checkpoint.arguments["support"]
    np.testing.assert_allclose(low[:2], (np.array([2.0, 1.0]) - mean[:2]) / std[:2], rtol=1e-12)
    np.testing.assert_allclose(high[0], (3.0 - mean[0]) / std[0], rtol=1e-12)
    assert low[2] == -INF and high[1:] == [INF, INF]


def test_sample_draws_only_inside_the_support(fitted, tmp_path: Path):
    model, _, _ = fitted
    out = tmp_path / "s.npy"
    assert main(["sample", str(model), "-n", "3000", "--seed", "0", "--out", str(out)]) == 0
    samples = np.load(out)
    assert samples.shape == (3000, 3) and np.isfinite(samples).all()
    assert ((samples[:, 0] > 2) & (samples[:, 0] < 3)).all()
    assert (samples[:, 1] > 1).all()


def test_eval_is_the_flow_density_of_the_standardized_data_minus_the_scale(
    fitted, tmp_path: Path, capsys
):
    model, csv, data = fitted
    capsys.readouterr()
    out = tmp_path / "lp.npy"
    assert main(["eval", str(model), str(csv), "--out", str(out)]) == 0
    checkpoint = load(model)
    mean, std = np.array(checkpoint.extra["mean"]), np.array(checkpoint.extra["std"])
    z = torch.as_tensor((data - mean) / std, dtype=torch.float32)
    with torch.no_grad():
        expected = checkpoint.flow.eval()().log_prob(z).double().numpy() - np.log(std).sum()
    np.testing.assert_allclose(np.load(out)[:, 0], expected, rtol=1e-6, atol=1e-6)
    outside = write_csv(tmp_path / "out.csv", ["a", "b", "c"], np.array([[2.5, 0.5, 0.0]]))
    fails(["eval", str(model), str(outside)], capsys, "(data rows 1, counted from 1)")


def test_rows_outside_the_support_are_refused_by_their_numbers(tmp_path: Path, capsys):
    data = bounded_data(20)
    data[[3, 11], 0] = [3.0, 1.5]  # on the open bound, and below it
    data[5, 1] = math.nan  # dropped: the numbers still count it
    csv = write_csv(tmp_path / "d.csv", ["a", "b", "c"], data)
    argv = ["fit", str(csv), *TINY, "--support", "2:3,1:,:", "--drop-nonfinite"]
    fails(
        [*argv, "--out", str(tmp_path / "m.pt")],
        capsys,
        f"{csv}: 2 row(s) lie outside --support (data rows 4, 12, counted from 1; columns a): "
        "the support is open, a in (2, 3), b in (1, inf), c in (-inf, inf)",
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.csv"]


def test_one_range_applies_to_every_column(tmp_path: Path):
    csv = write_csv(tmp_path / "d.csv", ["a", "b"], bounded_data()[:, :2])
    model = tmp_path / "m.pt"
    assert main(["fit", str(csv), *TINY, "--support=-1:10", "--out", str(model)]) == 0
    assert load(model).extra["support"] == [[-1.0, -1.0], [10.0, 10.0]]


@pytest.mark.parametrize(
    "support, code, expected",
    [
        ("2:3,1:", 1, "--support gives 2 ranges for 3 columns (a, b, c); give one lo:hi per"),
        ("3:2", 2, "argument --support: expected lo < hi in each range, got '3:2' in '3:2'"),
        ("nan:1,1:,:", 2, "expected lo < hi in each range, got 'nan:1'"),
        ("0-1", 2, "argument --support: expected lo:hi ranges separated by commas"),
        ("a:b", 2, "argument --support: expected lo:hi ranges separated by commas"),
    ],
)
def test_bad_support_is_one_error_line(tmp_path: Path, capsys, support, code, expected):
    csv = write_csv(tmp_path / "d.csv", ["a", "b", "c"], bounded_data(20))
    argv = ["fit", str(csv), *TINY, "--support", support, "--out", str(tmp_path / "m.pt")]
    fails(argv, capsys, expected, code)


def test_support_is_not_a_flow_arg(tmp_path: Path, capsys):
    csv = write_csv(tmp_path / "d.csv", ["a", "b", "c"], bounded_data(20))
    argv = ["fit", str(csv), *TINY, "--flow-arg", "support=[0,1]"]
    fails(argv, capsys, "--flow-arg support: give the support with --support, in the data's")


def test_a_checkpoint_with_a_bad_recorded_support_is_refused(fitted, tmp_path: Path, capsys):
    model, _, _ = fitted
    checkpoint = load(model)
    extra = dict(checkpoint.extra, support=[[2.0, 1.0], [3.0, INF]])
    altered = tmp_path / "altered.pt"
    save(checkpoint.flow, altered, extra=extra)
    fails(
        ["sample", str(altered), "-n", "3"],
        capsys,
        "'support' must hold two lists of 3 bound(s), got [[2.0, 1.0], [3.0, inf]]",
    )


def test_rows_a_rounding_away_from_a_bound_fit_and_evaluate(tmp_path: Path, capsys):
    data = bounded_data()
    data[:3, 0] = [2 + 1e-12, 3 - 1e-12, np.nextafter(2.0, 3.0)]  # one float32 step is 2e-7
    csv = write_csv(tmp_path / "d.csv", ["a", "b", "c"], data)
    model, out = tmp_path / "m.pt", tmp_path / "lp.npy"
    assert main(["fit", str(csv), *TINY, "--support", "2:3,1:,:", "--out", str(model)]) == 0
    assert main(["eval", str(model), str(csv), "--out", str(out)]) == 0
    assert np.isfinite(np.load(out)).all()
