"""Every picture of the site, drawn with matplotlib while the site is built.

Tutorial pictures come from small fits (a few hundred steps on a few thousand points, seeded)
and cheap evaluations, so the whole set takes seconds; benchmark pictures come from the
committed JSON (:mod:`flowsdoc.bench`). Each picture is drawn once per process, so ``mkdocs
serve`` redraws nothing when a page changes.
"""

from __future__ import annotations

__all__ = ["FIGURES", "all_figures", "two_moons"]

import functools
import io
import math
from collections.abc import Callable
from typing import Any

from flowsdoc import api, bench

BLUE, ORANGE, GREY = "#3f51b5", "#ef6c00", "#9e9e9e"


def _png(figure: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def two_moons(n: int, noise: float = 0.08, seed: int = 0) -> Any:
    """``n`` points of two interleaved half circles, as in the first tutorial."""
    import torch

    g = torch.Generator().manual_seed(seed)
    angle = math.pi * torch.rand(n, generator=g)
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(angle), 1 - torch.cos(angle))
    y = torch.where(upper, torch.sin(angle), 0.5 - torch.sin(angle))
    return torch.stack((x, y), dim=-1) + noise * torch.randn(n, 2, generator=g)


def _density_grid(log_prob: Callable[[Any], Any], box: tuple[float, float, float, float]) -> Any:
    import torch

    x0, x1, y0, y1 = box
    xs, ys = torch.linspace(x0, x1, 160), torch.linspace(y0, y1, 120)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)
    with torch.no_grad():
        return log_prob(grid.reshape(-1, 2)).exp().reshape(grid.shape[:2])


def first_flow() -> bytes:
    """Data, samples and density of a small neural spline flow fitted to two moons."""
    import matplotlib.pyplot as plt
    import torch

    from flows.core import fit
    from flows.splines import NSF

    torch.manual_seed(0)
    x = two_moons(4096)
    flow = NSF(features=2, transforms=3, hidden_features=(64, 64))
    fit(flow, x, steps=600, lr=3e-3, patience=None, seed=0)
    box = (-1.5, 2.5, -1.0, 1.5)
    with torch.no_grad():
        samples = flow().sample((2000,))
    density = _density_grid(flow().log_prob, box)
    figure, axes = plt.subplots(1, 3, figsize=(10, 3), sharex=True, sharey=True)
    axes[0].scatter(*x[:2000].T, s=2, color=GREY)
    axes[0].set_title("data", fontsize=10)
    axes[1].scatter(*samples.T, s=2, color=BLUE)
    axes[1].set_title("flow().sample((2000,))", fontsize=10)
    axes[2].imshow(density.numpy(), origin="lower", extent=box, aspect="auto", cmap="Blues")
    axes[2].set_title("flow().log_prob(x).exp()", fontsize=10)
    for ax in axes:
        ax.set_xlim(box[0], box[1])
        ax.set_ylim(box[2], box[3])
        ax.tick_params(labelsize=7)
    return _png(figure)


def conditional() -> bytes:
    """Samples of a conditional flow p(x | c) for three contexts: rings of radius c."""
    import matplotlib.pyplot as plt
    import torch

    from flows.core import fit
    from flows.splines import NSF

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    c = 0.5 + 1.5 * torch.rand(8192, 1, generator=g)
    angle = 2 * math.pi * torch.rand(8192, generator=g)
    x = c * torch.stack((angle.cos(), angle.sin()), dim=-1)
    x = x + 0.05 * torch.randn(8192, 2, generator=g)
    flow = NSF(features=2, context=1, transforms=3, hidden_features=(64, 64))
    fit(flow, x, c, steps=500, lr=3e-3, patience=None, seed=0)
    figure, ax = plt.subplots(figsize=(4, 4))
    for radius, color in zip((0.6, 1.2, 1.8), (GREY, ORANGE, BLUE), strict=True):
        with torch.no_grad():
            samples = flow(torch.tensor([radius])).sample((1000,))
        ax.scatter(*samples.T, s=2, color=color, label=f"c = {radius}")
    ax.set_aspect("equal")
    ax.legend(fontsize=8, markerscale=4, loc="upper right")
    ax.set_title("flow(c).sample((1000,)) for three c", fontsize=10)
    ax.tick_params(labelsize=7)
    return _png(figure)


def change_of_variables() -> bytes:
    """A standard normal pushed through a monotonic spline: the map and the two densities."""
    import matplotlib.pyplot as plt
    import torch

    from flows.core.distributions import NormalizingFlow
    from flows.splines import MonotonicRQSTransform

    # Equal bins; the middle ones rise little, so the map is flat there and the density thin.
    widths = torch.zeros(6)
    heights = torch.tensor([0.5, 0.8, -1.5, -1.5, 0.8, 0.5])
    t = MonotonicRQSTransform(widths, heights, torch.zeros(5), bound=3.0)
    base = torch.distributions.Normal(torch.tensor(0.0), torch.tensor(1.0))
    # The flow's density is the base's pulled back through t: p(x) = q(t(x)) |t'(x)|.
    flow = NormalizingFlow(t, base)
    x = torch.linspace(-4, 4, 400)
    with torch.no_grad():
        y = t(x)
        p = flow.log_prob(x).exp()
    figure, axes = plt.subplots(1, 2, figsize=(8, 2.8))
    axes[0].plot(x, y, color=BLUE)
    axes[0].plot(x, x, color=GREY, linestyle=":", linewidth=1)
    axes[0].set_title("z = t(x): a monotonic spline, identity outside [-3, 3]", fontsize=9)
    axes[1].plot(x, base.log_prob(x).exp(), color=GREY, label="base q(z)")
    axes[1].plot(x, p, color=BLUE, label="flow p(x) = q(t(x)) |t'(x)|")
    axes[1].legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=2)
    axes[1].set_title("the densities", fontsize=9)
    for ax in axes:
        ax.tick_params(labelsize=7)
    return _png(figure)


def univariate() -> bytes:
    """Registered univariate transforms with random parameters, each a monotonic map."""
    import matplotlib.pyplot as plt
    import torch

    from flows.core.plugins import transform_spec

    names = ["affine", "rqs", "sos", "bernstein", "monotonic", "umnn"]
    x = torch.linspace(-6, 6, 300)
    figure, axes = plt.subplots(1, len(names), figsize=(2.1 * len(names), 2.2), sharey=True)
    for ax, name in zip(axes, names, strict=True):
        constructor, shapes = transform_spec(name).spec.resolve()
        g = torch.Generator().manual_seed(1)
        for k, color in zip(range(3), (BLUE, ORANGE, GREY), strict=True):
            params = [torch.randn(shape, generator=g) for shape in shapes]
            with torch.no_grad():
                ax.plot(x, constructor(*params)(x), color=color, linewidth=1.2)
            del k
        ax.set_title(f'"{name}"', fontsize=9)
        ax.set_ylim(-8, 8)
        ax.tick_params(labelsize=7)
    return _png(figure)


def fit_moons() -> bytes:
    """The picture ``flows fit moons`` drew for the README (data beside samples)."""
    return (api.ROOT / "docs" / "fit-moons.png").read_bytes()


FIGURES: dict[str, Callable[[], bytes]] = {
    "first-flow.png": first_flow,
    "conditional.png": conditional,
    "change-of-variables.png": change_of_variables,
    "univariate.png": univariate,
    "fit-moons.png": fit_moons,
    "bench-speed.png": bench.speed_figure,
    "bench-quality.png": bench.quality_figure,
    "presets.png": bench.presets_figure,
}


@functools.cache
def all_figures() -> dict[str, bytes]:
    """Every picture, by file name (drawn once per process)."""
    import matplotlib
    import torch

    matplotlib.use("Agg")
    # Small fits are fastest on one thread, and a shared machine makes more threads far slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {name: draw() for name, draw in FIGURES.items()}
    finally:
        torch.set_num_threads(threads)
