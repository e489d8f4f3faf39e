"""`flows fit`, `flows sample` and `flows eval` with image flows, on tiny settings.

Needs flows-cli with its plot extra and scikit-learn (the digits): ``nox -s "tests(image)"``
installs both.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from flows.cli.main import main
from flows.core.checkpoint import load
from flows.image.dequantization import bits_per_dim

TINY = ["--transforms", "1", "--hidden", "8", "--epochs", "1", "--batch-size", "128"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("flows: error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_fit_digits_with_glow_then_sample_and_eval(tmp_path: Path, capsys):
    model = tmp_path / "m.pt"
    assert main(["fit", "digits", "--flow", "glow", *TINY, "--out", str(model)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"held-out\s+\d+\.\d{4} bits/dim", out)
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png", "m.pt"]
    checkpoint = load(model)
    assert checkpoint.preset == "glow"
    assert checkpoint.arguments == {
        "shape": [1, 8, 8],
        "context": 0,
        "scales": 2,
        "depth": 1,
        "hidden_channels": 8,
        "clamp": 2.0,
        "prior": "conditional",
    }
    assert checkpoint.extra["kind"] == "images" and checkpoint.extra["levels"] == 17
    assert math.isfinite(checkpoint.extra["val_bpd"])

    samples = tmp_path / "s.npy"
    assert main(["sample", str(model), "-n", "6", "--out", str(samples), "--seed", "0"]) == 0
    drawn = np.load(samples)
    assert drawn.shape == (6, 1, 8, 8) and drawn.dtype == np.uint8 and drawn.max() <= 16

    capsys.readouterr()
    assert main(["eval", str(model), "digits"]) == 0
    printed = float(re.search(r"mean (\S+) bits/dim over 1797 images", capsys.readouterr().out)[1])
    # The same number from the library: one uniform draw seeded by --seed (default 1).
    from flows.image import load_digits

    k, levels = load_digits()
    u = torch.rand(k.shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        log_p = checkpoint.flow.eval()().log_prob((k.float() + u) / levels)
    expected = bits_per_dim(log_p, 64, levels).double().mean().item()
    assert printed == pytest.approx(expected, abs=1e-4)


def test_fit_reads_an_npy_array_of_images(tmp_path: Path, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "faces.npy"
    np.save(data, rng.integers(0, 256, (24, 3, 4, 4), dtype=np.uint8))
    model = tmp_path / "m.pt"
    args = ["fit", str(data), "--flow", "realnvp-image", *TINY, "--flow-arg", "scales=1"]
    assert main([*args, "--out", str(model), "--no-plot"]) == 0
    extra = load(model).extra
    assert extra["shape"] == [3, 4, 4] and extra["levels"] == 256
    assert not (tmp_path / "m.png").exists()


def test_an_array_of_the_wrong_rank_gets_one_clear_error(tmp_path: Path, capsys):
    data = tmp_path / "grey.npy"
    np.save(data, np.zeros((10, 8, 8), dtype=np.uint8))
    assert main(["fit", str(data), "--flow", "glow", *TINY, "--out", str(tmp_path / "m.pt")]) == 1
    assert error_line(capsys) == (
        f"flows: error: {data}: an array of shape (10, 8, 8) is not a batch of images; image "
        "flows need an array of shape (N, C, H, W) (for grey images of shape (N, H, W), save "
        "x[:, None])"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grey.npy"]


def test_sizes_the_scales_cannot_halve_get_one_clear_error(tmp_path: Path, capsys):
    data = tmp_path / "odd.npy"
    np.save(data, np.zeros((10, 1, 6, 6), dtype=np.uint8))
    assert main(["fit", str(data), "--flow", "glow", *TINY, "--out", str(tmp_path / "m.pt")]) == 1
    assert error_line(capsys) == (
        f"flows: error: {data}: flow 'glow' refused: Glow: images of shape (C, H, W) = "
        "(1, 6, 6) cannot go through 2 scale(s): each squeezes H and W by half, so both must "
        "be multiples of 2**2 = 4; crop or pad them (e.g. to (1, 4, 4)) or use fewer scales"
    )


def test_a_tabular_flow_on_images_is_refused(tmp_path: Path, capsys):
    assert main(["fit", "digits", "--flow", "maf", "--out", str(tmp_path / "m.pt")]) == 1
    assert error_line(capsys) == (
        "flows: error: flow 'maf' models rows of numbers, not images; image flows: glow, "
        "realnvp-image (pip install flows-image)"
    )


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--support", "0:1"], "--support does"),
        (["--compile"], "--compile does"),
        (["--compile-mode", "default", "--drop-nonfinite"], "--compile and --drop-nonfinite do"),
    ],
)
def test_tabular_options_are_refused_for_images_not_ignored(
    tmp_path: Path, capsys, options, named
):
    # They were silently ignored: a --support the checkpoint did not record, say.
    out = tmp_path / "m.pt"
    assert main(["fit", "digits", "--flow", "glow", *options, "--out", str(out)]) == 1
    assert error_line(capsys) == f"flows: error: {named} not apply to images"
    assert list(tmp_path.iterdir()) == []


def test_an_image_flow_on_points_is_refused(tmp_path: Path, capsys):
    assert main(["fit", "moons", "--flow", "glow", "--out", str(tmp_path / "m.pt")]) == 1
    assert error_line(capsys) == (
        "flows: error: 'moons' is a set of points, not images; image flows take the built-in "
        "'digits', an image file, a folder of them or a .npy array (N, C, H, W)"
    )


def test_sampling_images_needs_an_npy_out(tmp_path: Path, capsys):
    model = tmp_path / "m.pt"
    assert main(["fit", "digits", *TINY, "--out", str(model), "--no-plot"]) == 0  # glow
    capsys.readouterr()
    assert main(["sample", str(model), "-n", "3"]) == 1
    assert error_line(capsys) == (
        "flows: error: the model draws images: give --out FILE.npy (an array of shape "
        "(N, C, H, W))"
    )


def test_digits_without_scikit_learn_names_the_extra(tmp_path: Path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)  # import fails as if missing
    assert main(["fit", "digits", "--flow", "glow", "--out", str(tmp_path / "m.pt")]) == 1
    assert error_line(capsys) == (
        "flows: error: the digits data set needs scikit-learn: pip install 'flows-image[digits]'"
    )
    assert list(tmp_path.iterdir()) == []


def test_fit_images_that_diverge_say_so_in_the_commands_options(tmp_path: Path, capsys):
    model = tmp_path / "m.pt"
    args = ["fit", "digits", "--flow", "glow", *TINY, "--lr", "1e4", "--clip-grad", "3"]
    assert main([*args, "--out", str(model), "--no-plot"]) == 1
    assert re.fullmatch(
        r"flows: error: training diverged at step \d+ \((loss|held-out NLL) (nan|inf|-inf)\); "
        r"lower --lr \(now 10000\) or set a smaller --clip-grad \(now 3\)",
        error_line(capsys),
    )
    assert not model.exists()


def test_fit_images_reports_bits_per_dim_of_the_held_out_nll(tmp_path: Path, capsys):
    model = tmp_path / "m.pt"
    assert main(["fit", "digits", "--flow", "glow", *TINY, "--out", str(model), "--no-plot"]) == 0
    out = capsys.readouterr().out
    extra = load(model).extra
    # Printed to 4 places, stored in full; one dequantization draw per image, fixed by --seed.
    assert re.search(rf"held-out\s+{extra['val_bpd']:.4f} bits/dim", out)
    assert re.search(rf"train\s+{extra['train_bpd']:.4f} bits/dim", out)
    again = tmp_path / "again.pt"
    assert main(["fit", "digits", "--flow", "glow", *TINY, "--out", str(again), "--no-plot"]) == 0
    assert load(again).extra["val_bpd"] == extra["val_bpd"]
