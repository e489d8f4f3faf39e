"""Every preset on the same targets: fit quality, training step and sampling time.

The data behind "Choosing a flow" in the docs: ``benchmarks/quality.py`` compares MAF and NSF
with zuko; this compares our presets with each other, on quality.py's own targets (densities
known exactly, KL(p || q) in nats) and with its own training loop (Adam, cosine decay, the same
batches for every flow). Run it where flows-splines and flows-ode are installed:

    python docs/tools/compare_presets.py --quick --json docs/data/presets.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import quality  # noqa: E402

# Comparable sizes: 3 transforms of hidden (64, 64) where a preset has hyper-networks.
PRESETS: dict[str, dict[str, Any]] = {
    "maf": {"transforms": 3, "hidden_features": (64, 64)},
    "nsf": {"transforms": 3, "hidden_features": (64, 64), "bins": 8},
    "naf": {"transforms": 3, "hidden_features": (64, 64)},
    "cnf": {"transforms": 1, "hidden_features": (64, 64)},
    "gf": {"transforms": 3, "components": 8},
    "gmm": {"components": 8},
}


def build(name: str, features: int, first: torch.Tensor) -> nn.Module:
    """The preset ``name``; a GMM starts from k-means on the first batch, as it is meant to."""
    from flows.core.plugins import get_preset

    flow = get_preset(name)(features, **PRESETS[name])
    if name == "gmm":
        flow.initialize(first)
    return flow


@torch.no_grad()
def sample_seconds(flow: nn.Module, n: int, repeats: int) -> float:
    """Median wall time of drawing ``n`` samples."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        flow().sample((n,))
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-samples", type=int, default=20_000)
    parser.add_argument("--datasets", default="gmm-2d,banana-2d,ring-2d,funnel-4d")
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="300 steps")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.steps = 300
    torch.set_num_threads(args.threads)
    load = os.getloadavg()
    rows = []
    for dataset in args.datasets.split(","):
        target = quality.DATASETS[dataset]()
        g = torch.Generator().manual_seed(args.seed)
        batches = target.sample(args.steps * args.batch, g).view(
            args.steps, args.batch, target.features
        )
        test = target.sample(args.eval_samples, g)
        log_p = target.log_prob(test)
        for name in args.presets.split(","):
            torch.manual_seed(args.seed)
            flow = build(name, target.features, batches[0])
            _, seconds = quality.fit(flow, batches, args.lr)
            gap = log_p - quality.model_log_prob(flow, test)
            row = {
                "dataset": dataset,
                "features": target.features,
                "preset": name,
                "kl": gap.mean().item(),
                "kl_se": (gap.std() / math.sqrt(len(gap))).item(),
                "train_ms": 1000 * seconds / args.steps,
                "sample_ms": 1000 * sample_seconds(flow, 1024, 3),
                "parameters": sum(p.numel() for p in flow.parameters()),
            }
            rows.append(row)
            print(
                f"{dataset:<10} {name:<4} KL {row['kl']:.4f}  train {row['train_ms']:.1f} ms/step"
                f"  sample {row['sample_ms']:.1f} ms",
                flush=True,
            )
    if args.json is not None:
        payload = {
            "settings": {k: v for k, v in vars(args).items() if k != "json"},
            "presets": {
                name: {k: list(v) if isinstance(v, tuple) else v for k, v in kw.items()}
                for name, kw in PRESETS.items()
            },
            "machine": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "cpu_count": os.cpu_count(),
                "loadavg_start": load,
                "loadavg_end": os.getloadavg(),
            },
            "rows": rows,
        }
        args.json.write_text(json.dumps(payload, indent=2, default=str))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
