r"""Log-density throughput of exported flows on the CPU: onnxruntime against eager torch.

Each workload is a preset at the sizes of ``benchmarks/run.py`` (hidden (64, 64), three
transforms, 8 bins, a batch of 1024 rows), with its weights moved away from the identity they
start near; it is exported with :func:`flows.core.export.export` (ONNX and pt2), then timed
three ways on the same rows: *eager* (``flow().log_prob(x)`` under ``torch.no_grad``), *onnx*
(the ONNX model in onnxruntime, as many intra-op threads as torch) and *pt2* (the loaded
``torch.export`` program). Timing is ``run.py``'s: the three alternate inside each repeat (the
order rotates), each measurement loops long enough to be well above the timer's resolution,
and the table shows medians. The speedup is *paired*: the median, over the repeats, of
eager / onnx timed back to back in the same repeat, with the quartiles of those ratios.

    python benchmarks/export.py                    # 1 thread and all threads
    python benchmarks/export.py --quick            # smoke run, seconds
    python benchmarks/export.py --json out.json    # machine-readable results

Needs the ``export`` extra (``pip install 'flows-core[export]'``) and flows-splines for NSF.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from run import BATCH, BINS, HIDDEN, SEED, TRANSFORMS, time_alternating

FEATURES = 8
PRESETS: dict[str, Callable[[], nn.Module]] = {
    "maf": lambda: _preset("maf", transforms=TRANSFORMS, hidden_features=HIDDEN),
    "nsf": lambda: _preset("nsf", transforms=TRANSFORMS, hidden_features=HIDDEN, bins=BINS),
    "realnvp": lambda: _preset("realnvp", transforms=TRANSFORMS, hidden_features=HIDDEN),
    "gf": lambda: _preset("gf", transforms=TRANSFORMS),
    "gmm": lambda: _preset("gmm", components=8),
}
WAYS = ("eager", "onnx", "pt2")


def _preset(name: str, **kwargs: Any) -> nn.Module:
    from flows.core.plugins import get_preset

    torch.manual_seed(SEED)
    flow = get_preset(name)(features=FEATURES, **kwargs)
    generator = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for parameter in flow.parameters():
            parameter.add_(0.1 * torch.randn(parameter.shape, generator=generator))
    return flow.eval()


def _ways(
    flow: nn.Module, folder: Path, threads: int, x: torch.Tensor
) -> dict[str, Callable[[], Any]]:
    import onnxruntime

    from flows.core.export import export, load

    export(flow, folder / "model.onnx")
    export(flow, folder / "model.pt2")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(
        str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"]
    )
    feed = {"x": x.numpy()}
    program = load(folder / "model.pt2")

    def eager() -> None:
        with torch.no_grad():
            flow().log_prob(x)

    return {
        "eager": eager,
        "onnx": lambda: session.run(None, feed),
        "pt2": lambda: program(x),
    }


def _quartiles(ratios: list[float]) -> tuple[float, float, float]:
    if len(ratios) == 1:
        return ratios[0], ratios[0], ratios[0]
    lower, median, upper = statistics.quantiles(ratios, n=4, method="inclusive")
    return lower, median, upper


def run_workload(
    name: str, threads: int, batch: int, repeats: int, min_time: float
) -> dict[str, Any]:
    torch.set_num_threads(threads)
    flow = PRESETS[name]()
    x = torch.randn(batch, FEATURES, generator=torch.Generator().manual_seed(SEED + 2))
    with tempfile.TemporaryDirectory() as folder:
        ways = _ways(flow, Path(folder), threads, x)
        timed = time_alternating(ways, repeats, min_time)
    row: dict[str, Any] = {"workload": name, "threads": threads, "batch": batch}
    for way in WAYS:
        row[way] = {"median_s": timed[way]["median"], "rows_per_s": batch / timed[way]["median"]}
    for way in ("onnx", "pt2"):
        ratios = [
            e / o for e, o in zip(timed["eager"]["samples"], timed[way]["samples"], strict=True)
        ]
        row[f"{way}_speedup"] = _quartiles(ratios)
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    head = (
        f"{'workload':<9} {'threads':>7} {'eager rows/s':>13} {'onnx rows/s':>12} "
        f"{'pt2 rows/s':>11}  {'onnx speedup (eager/onnx, quartiles)':<38} pt2 speedup"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        low, mid, high = row["onnx_speedup"]
        p_low, p_mid, p_high = row["pt2_speedup"]
        lines.append(
            f"{row['workload']:<9} {row['threads']:>7} {row['eager']['rows_per_s']:>13,.0f} "
            f"{row['onnx']['rows_per_s']:>12,.0f} {row['pt2']['rows_per_s']:>11,.0f}  "
            f"{f'{mid:.2f}x ({low:.2f}-{high:.2f})':<38} {p_mid:.2f}x ({p_low:.2f}-{p_high:.2f})"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,all", help="comma list of counts or 'all'")
    parser.add_argument("--quick", action="store_true", help="fast smoke run")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--min-time", type=float, default=None, help="seconds per measurement")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--workloads", default=",".join(PRESETS))
    parser.add_argument("--json", type=Path, default=None, help="write results to this file")
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 15)
    min_time = args.min_time or (0.02 if args.quick else 0.2)
    counts = []
    for part in args.threads.split(","):
        counts.append(os.cpu_count() or 1 if part.strip() == "all" else int(part))
    counts = list(dict.fromkeys(counts))
    rows = []
    for threads in counts:
        for name in args.workloads.split(","):
            rows.append(run_workload(name, threads, args.batch, repeats, min_time))
            print(f"  {name}, {threads} thread(s): done", file=sys.stderr, flush=True)
    print(
        f"torch {torch.__version__}, onnxruntime {__import__('onnxruntime').__version__}, "
        f"{platform.processor() or platform.machine()}, batch {args.batch}, "
        f"{repeats} repeats"
    )
    print(_table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
