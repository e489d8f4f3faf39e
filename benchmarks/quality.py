r"""Fit quality against densities known exactly: KL(p || q) for our flows and zuko's.

Each data set has a closed-form log-density :math:`\log p`, so the fit is scored by

.. math:: \mathrm{KL}(p \,\|\, q) = \mathbb{E}_{x \sim p}[\log p(x) - \log q(x)] \geq 0

on fresh samples (0 is a perfect fit). Every library gets the same architecture, optimizer,
learning-rate schedule, number of steps, batches (the very same tensors) and seed.

    python benchmarks/quality.py                  # default: a few minutes on 2 cores
    python benchmarks/quality.py --steps 3000     # longer fits
    python benchmarks/quality.py --quick          # smoke run
    python benchmarks/quality.py --json quality.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import (
    Categorical,
    MixtureSameFamily,
    MultivariateNormal,
)

__all__ = ["DATASETS", "Target", "main"]

HIDDEN = (64, 64)
TRANSFORMS = 3
BINS = 8
LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class Target:
    """A density we can both sample and evaluate exactly."""

    name: str
    features: int
    summary: str
    sample: Callable[[int, torch.Generator], Tensor]
    log_prob: Callable[[Tensor], Tensor]


def _normal_log_prob(x: Tensor, loc: float | Tensor, scale: float | Tensor) -> Tensor:
    z = (x - loc) / scale
    scale = torch.as_tensor(scale, dtype=x.dtype)
    return -0.5 * z.square() - torch.log(scale) - 0.5 * LOG_2PI


def circle_mixture(components: int = 8, radius: float = 2.5, std: float = 0.35) -> Target:
    """Equal-weight Gaussians on a circle: well separated modes."""
    angles = torch.arange(components) * (2 * math.pi / components)
    means = radius * torch.stack((angles.cos(), angles.sin()), dim=-1)

    def sample(n: int, g: torch.Generator) -> Tensor:
        k = torch.randint(components, (n,), generator=g)
        return means[k] + std * torch.randn(n, 2, generator=g)

    def log_prob(x: Tensor) -> Tensor:
        per = _normal_log_prob(x.unsqueeze(-2), means, std).sum(-1)
        return torch.logsumexp(per, dim=-1) - math.log(components)

    return Target("gmm-2d", 2, f"{components} Gaussians (std {std}) on a circle", sample, log_prob)


def banana(curvature: float = 0.8, width: float = 0.5, angle: float = math.pi / 4) -> Target:
    r"""A rotated banana: :math:`u_1 = z_1`, :math:`u_2 = w z_2 + b (z_1^2 - 1)`, :math:`x = R u`.

    Rotated so that no feature order makes it affine-autoregressive (in its own axes, an affine
    MAF could represent it exactly).
    """
    cos, sin = math.cos(angle), math.sin(angle)
    rotation = torch.tensor([[cos, -sin], [sin, cos]])

    def sample(n: int, g: torch.Generator) -> Tensor:
        z = torch.randn(n, 2, generator=g)
        u = torch.stack((z[:, 0], width * z[:, 1] + curvature * (z[:, 0] ** 2 - 1)), -1)
        return u @ rotation.T

    def log_prob(x: Tensor) -> Tensor:
        u = x @ rotation.to(x.dtype)
        u1, u2 = u[..., 0], u[..., 1]
        # Rotation and shear have Jacobian 1; the scaling of z_2 by w is in the normal's scale.
        return _normal_log_prob(u1, 0.0, 1.0) + _normal_log_prob(
            u2 - curvature * (u1**2 - 1), 0.0, width
        )

    return Target("banana-2d", 2, "rotated banana (sheared Gaussian)", sample, log_prob)


def ring(radius: float = 2.5, std: float = 0.25) -> Target:
    r"""A ring: radius :math:`r \sim N(R, s^2)`, angle uniform (the density is exact for r < 0)."""

    def sample(n: int, g: torch.Generator) -> Tensor:
        r = radius + std * torch.randn(n, generator=g)
        theta = 2 * math.pi * torch.rand(n, generator=g)
        return torch.stack((r * theta.cos(), r * theta.sin()), dim=-1)

    def log_prob(x: Tensor) -> Tensor:
        rho = x.norm(dim=-1)
        # Radii r and -r land on the same circle |x| = |r|: both branches contribute.
        both = torch.stack(
            (_normal_log_prob(rho, radius, std), _normal_log_prob(-rho, radius, std))
        )
        return torch.logsumexp(both, dim=0) - math.log(2 * math.pi) - torch.log(rho)

    return Target("ring-2d", 2, f"ring of radius {radius}, radial std {std}", sample, log_prob)


def funnel(features: int = 4, std: float = 1.0) -> Target:
    r"""Neal's funnel: :math:`v \sim N(0, s^2)`, :math:`x_i \mid v \sim N(0, e^{v})`."""

    def sample(n: int, g: torch.Generator) -> Tensor:
        v = std * torch.randn(n, 1, generator=g)
        rest = torch.randn(n, features - 1, generator=g) * torch.exp(v / 2)
        return torch.cat((v, rest), dim=-1)

    def log_prob(x: Tensor) -> Tensor:
        v = x[..., 0]
        rest = _normal_log_prob(x[..., 1:], 0.0, torch.exp(v / 2).unsqueeze(-1)).sum(-1)
        return _normal_log_prob(v, 0.0, std) + rest

    return Target(f"funnel-{features}d", features, "Neal's funnel, v ~ N(0, 1)", sample, log_prob)


def random_mixture(features: int = 8, components: int = 6, seed: int = 1) -> Target:
    """Correlated Gaussians with random means, covariances and weights."""
    g = torch.Generator().manual_seed(seed)
    means = 1.5 * torch.randn(components, features, generator=g)
    diag = 0.25 + 0.35 * torch.rand(components, features, generator=g)
    lower = 0.15 * torch.randn(components, features, features, generator=g).tril(-1)
    scale_tril = torch.diag_embed(diag) + lower
    logits = 0.5 * torch.randn(components, generator=g)
    mixture = MixtureSameFamily(
        Categorical(logits=logits),
        MultivariateNormal(means, scale_tril=scale_tril),
        validate_args=False,
    )

    def sample(n: int, g: torch.Generator) -> Tensor:
        k = torch.multinomial(mixture.mixture_distribution.probs, n, True, generator=g)
        eps = torch.randn(n, features, 1, generator=g)
        return means[k] + (scale_tril[k] @ eps).squeeze(-1)

    return Target(
        f"gmm-{features}d",
        features,
        f"{components} correlated Gaussians, random means and weights",
        sample,
        mixture.log_prob,
    )


DATASETS: dict[str, Callable[[], Target]] = {
    "gmm-2d": circle_mixture,
    "banana-2d": banana,
    "ring-2d": ring,
    "funnel-4d": funnel,
    "gmm-8d": random_mixture,
}


# --------------------------------------------------------------------------------------------
# Flows


FLOWS = ("maf", "nsf")
LIBRARIES = ("ours", "zuko")


def build(library: str, kind: str, features: int) -> nn.Module:
    if kind not in FLOWS:
        raise ValueError(f"kind must be one of {FLOWS}, got {kind!r}")
    kwargs: dict[str, Any] = {"transforms": TRANSFORMS, "hidden_features": HIDDEN}
    if library == "ours":
        if kind == "nsf":
            from flows.splines import NSF

            return NSF(features, bins=BINS, **kwargs)
        from flows.core import MAF

        return MAF(features, **kwargs)
    if library == "zuko":
        import zuko

        if kind == "nsf":
            return zuko.flows.NSF(features, bins=BINS, **kwargs)
        return zuko.flows.MAF(features, **kwargs)
    raise ValueError(f"library must be 'ours' or 'zuko', got {library!r}")


def fit(flow: nn.Module, batches: Tensor, lr: float) -> tuple[list[float], float]:
    """Adam with cosine decay on the given batches; the losses and the wall time."""
    optimizer = torch.optim.Adam(flow.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=len(batches))
    losses = []
    start = time.perf_counter()
    for x in batches:
        loss = -flow().log_prob(x).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.detach())
    elapsed = time.perf_counter() - start
    return torch.stack(losses).tolist(), elapsed


@torch.no_grad()
def model_log_prob(flow: nn.Module, x: Tensor, chunk: int = 8192) -> Tensor:
    return torch.cat([flow().log_prob(part) for part in x.split(chunk)])


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    results = []
    for dataset in args.datasets:
        target = DATASETS[dataset]()
        for seed in range(args.seed, args.seed + args.seeds):
            g = torch.Generator().manual_seed(seed)
            batches = target.sample(args.steps * args.batch, g).view(
                args.steps, args.batch, target.features
            )
            test = target.sample(args.eval_samples, g)
            log_p = target.log_prob(test)
            for kind in args.flows:
                scored: dict[str, Tensor] = {}
                for library in args.libraries:
                    torch.manual_seed(seed)
                    try:
                        flow = build(library, kind, target.features)
                    except ImportError as error:
                        print(f"  {library} {kind}: unavailable ({error})")
                        continue
                    losses, seconds = fit(flow, batches, args.lr)
                    log_q = model_log_prob(flow, test)
                    gap = log_p - log_q
                    kl = gap.mean().item()
                    se = (gap.std() / math.sqrt(len(gap))).item()
                    scored[library] = log_q
                    row = {
                        "dataset": dataset,
                        "features": target.features,
                        "flow": kind,
                        "library": library,
                        "seed": seed,
                        "kl": kl,
                        "kl_se": se,
                        "final_loss": sum(losses[-50:]) / len(losses[-50:]),
                        "seconds": seconds,
                        "nonfinite": int((~torch.isfinite(log_q)).sum()),
                    }
                    results.append(row)
                    print(
                        f"  {dataset:<10} {kind:<4} {library:<5} seed {seed}: "
                        f"KL = {kl:.4f} ± {se:.4f}  ({seconds:.1f} s)",
                        flush=True,
                    )
                if "ours" in scored and "zuko" in scored:
                    # Same test points: the paired difference has a much smaller error.
                    diff = scored["zuko"] - scored["ours"]
                    results[-1]["paired_diff"] = diff.mean().item()
                    results[-1]["paired_se"] = (diff.std() / math.sqrt(len(diff))).item()
    return results


def summarize(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean KL over seeds per (dataset, flow, library), and the verdict ours vs zuko."""
    table: dict[tuple[str, str], dict[str, list[float]]] = {}
    for row in results:
        cell = table.setdefault((row["dataset"], row["flow"]), {})
        cell.setdefault(row["library"], []).append(row["kl"])
    summary = []
    for (dataset, kind), by_library in table.items():
        entry: dict[str, Any] = {"dataset": dataset, "flow": kind}
        for library, values in by_library.items():
            entry[library] = sum(values) / len(values)
        if "ours" in entry and "zuko" in entry:
            entry["ours_le_zuko"] = entry["ours"] <= entry["zuko"]
            # Seed to seed, fits differ far more than the Monte Carlo error of one KL: the
            # standard error of the mean paired difference says whether a gap is a trend.
            diffs = [z - o for o, z in zip(by_library["ours"], by_library["zuko"], strict=True)]
            if len(diffs) > 1:
                mean = sum(diffs) / len(diffs)
                variance = sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1)
                entry["seed_se"] = math.sqrt(variance / len(diffs))
        summary.append(entry)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps (default 1000)")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=1, help="independent fits per case")
    parser.add_argument("--eval-samples", type=int, default=50_000)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--flows", default="maf,nsf")
    parser.add_argument("--libraries", default="ours,zuko")
    # Small networks gain little from more threads, and on a busy machine they thrash.
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--quick", action="store_true", help="smoke run (200 steps)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = 200 if args.quick else 1000
    args.datasets = [d.strip() for d in args.datasets.split(",")]
    args.flows = [f.strip() for f in args.flows.split(",")]
    args.libraries = [lib.strip() for lib in args.libraries.split(",")]
    for name in args.datasets:
        if name not in DATASETS:
            parser.error(f"--datasets: unknown {name!r}; choose from {', '.join(DATASETS)}")
    for option, names, known in (
        ("--flows", args.flows, FLOWS),
        ("--libraries", args.libraries, LIBRARIES),
    ):
        for name in names:
            if name not in known:
                parser.error(f"{option}: unknown {name!r}; choose from {', '.join(known)}")
    torch.set_num_threads(args.threads)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, load {os.getloadavg()}; "
        f"{TRANSFORMS} transforms, hidden {HIDDEN}, bins {BINS}, Adam lr {args.lr} cosine, "
        f"{args.steps} steps of batch {args.batch}, {args.eval_samples} test samples, "
        f"{args.seeds} seed(s)",
        flush=True,
    )
    start = time.perf_counter()
    results = run(args)
    summary = summarize(results)

    print(f"\nKL(p || q) in nats, mean over {args.seeds} seed(s) (lower is better, 0 is exact)")
    header = f"{'dataset':<12}{'flow':<6}{'ours':>10}{'zuko':>10}{'zuko-ours':>11}"
    print(f"{header}{'seed s.e.':>11}  verdict")
    compared = wins = 0
    for entry in summary:
        ours, zuko = entry.get("ours"), entry.get("zuko")
        shown = [f"{v:>10.4f}" if v is not None else f"{'-':>10}" for v in (ours, zuko)]
        diff = f"{zuko - ours:>11.4f}" if ours is not None and zuko is not None else f"{'-':>11}"
        se = f"{entry['seed_se']:>11.4f}" if "seed_se" in entry else f"{'-':>11}"
        verdict = "-"
        if "ours_le_zuko" in entry:
            compared += 1
            wins += entry["ours_le_zuko"]
            verdict = "ours <= zuko" if entry["ours_le_zuko"] else "ours > zuko"
            if not entry["ours_le_zuko"] and "seed_se" in entry:
                within = zuko - ours >= -2 * entry["seed_se"]
                verdict += " (within 2 s.e.)" if within else " (beyond 2 s.e.)"
        print(f"{entry['dataset']:<12}{entry['flow']:<6}{''.join(shown)}{diff}{se}  {verdict}")
    if compared:
        print(f"\n{wins}/{compared} cases with our KL <= zuko's")
    print(f"total {time.perf_counter() - start:.0f} s")

    if args.json is not None:
        payload = {
            "settings": {key: value for key, value in vars(args).items() if key not in {"json"}},
            "results": results,
            "summary": summary,
            "torch": torch.__version__,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
