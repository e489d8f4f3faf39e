r"""Speed of flows side by side with a bare-MLP floor, zuko and nflows.

Every workload runs for every library in one process: the libraries alternate inside each
repeat (the order rotates), each measurement loops long enough to be well above the timer's
resolution, and the table shows the median over the repeats. Ratios are *paired*: the median,
over the repeats, of the ratio of two libraries timed back to back in the same repeat, so that the
machine's slow drifts (which move every library together) cancel; the targets' verdicts give the
interquartile range of those ratios beside it. The *floor* is the work no flow can
avoid: the same three bare MLPs as the flow's hyper-networks (same input and output widths,
hidden (64, 64), ReLU), forward and backward for a training step, and forward once per inverse
pass for sampling. *bare* is the affine MAF's training step written out by hand in plain
torch, no library: the same masked networks, soft-bounded log-scales and standard normal base,
with the eager tricks ours uses (in-place ReLU, first layer laid out transposed). It is what any
library's eager MAF costs at least, and it has no sampling.

    python benchmarks/run.py                      # 1 thread and all threads
    python benchmarks/run.py --quick              # smoke run, seconds
    python benchmarks/run.py --compile            # add torch.compile'd variants of ours
    python benchmarks/run.py --device cuda        # on a GPU: small and GPU-sized workloads,
                                                  # compiled with CUDA graphs (reduce-overhead)
    python benchmarks/run.py --profile            # top ops of our steps (torch.profiler)
    python benchmarks/run.py --json out.json      # machine-readable results

Competitors are optional: a library that is not installed is reported as such and skipped.

On a GPU (``--device cuda``) every measurement ends with ``torch.cuda.synchronize()``, and
``ours+compile`` is ``torch.compile(mode="reduce-overhead")``: the training step (forward and
backward) and the whole sampling call, the autoregressive inverse's loop included, each
replayed as CUDA graphs. The workloads are the small ones (8 features, hidden (64, 64),
3 transforms, batch 1024) and GPU-sized ones (32 features, hidden (256, 256), 5 transforms,
batch 65536).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["WORKLOADS", "Workload", "main"]

BATCH = 1024
HIDDEN = (64, 64)
TRANSFORMS = 3
BINS = 8
BOUND = 5.0
SEED = 0
LIBRARIES = ("floor", "bare", "ours", "zuko", "nflows")


@dataclass(frozen=True)
class Workload:
    """One flow architecture, built identically by every library."""

    name: str
    features: int
    context: int = 0
    spline: bool = False
    passes: int | None = None
    hidden: tuple[int, ...] = HIDDEN
    transforms: int = TRANSFORMS
    batch: int | None = None  # None: the --batch option's

    @property
    def params_per_feature(self) -> int:
        # Affine: shift and log-scale; spline: widths, heights and inner derivatives.
        return 3 * BINS - 1 if self.spline else 2

    @property
    def inverse_passes(self) -> int:
        return self.features if self.passes is None else self.passes

    @property
    def label(self) -> str:
        kind = "nsf" if self.spline else "maf"
        shape = f"{self.features}f"
        if self.context:
            shape += f"+{self.context}c"
        if self.passes is not None:
            shape += f" p{self.passes}"
        if self.hidden != HIDDEN or self.transforms != TRANSFORMS:
            shape += f" h{self.hidden[0]}x{self.transforms}"
        return f"{kind} {shape}"


WORKLOADS = (
    Workload("maf", features=8),
    Workload("nsf", features=8, spline=True),
    Workload("nsf-coupling", features=16, spline=True, passes=2),
    Workload("maf-cond", features=2, context=8),
    # GPU-sized: run by default on a GPU only.
    Workload("maf-gpu", features=32, hidden=(256, 256), transforms=5, batch=65536),
    Workload("nsf-gpu", features=32, spline=True, hidden=(256, 256), transforms=5, batch=65536),
)
DEFAULT_WORKLOADS = {
    "cpu": ("maf", "nsf", "nsf-coupling", "maf-cond"),
    "cuda": ("maf", "nsf", "maf-cond", "maf-gpu", "nsf-gpu"),
}

# Targets: (device, workload, op, pair, bound, description). A pair (a, b) is bounded above
# (a / b <= bound), except a pair starting with "zuko", a speed-up bounded below. "ours*" is
# the faster of our eager and compiled variants in that run.
TARGETS = (
    ("cpu", "maf", "train", ("ours", "floor"), 1.5, "MAF training step <= 1.5x floor"),
    ("cpu", "nsf", "train", ("ours", "floor"), 2.0, "NSF eager training step <= 2.0x floor"),
    ("cpu", "maf", "sample", ("zuko", "ours"), 2.0, "MAF sampling >= 2x faster than zuko"),
    ("cpu", "nsf", "sample", ("zuko", "ours"), 2.0, "NSF sampling >= 2x faster than zuko"),
    (
        "cpu",
        "maf-cond",
        "train",
        ("ours", "bare"),
        1.1,
        "conditional MAF eager training step <= 1.1x bare",
    ),
    (
        "cpu",
        "maf-cond",
        "train",
        ("ours+compile", "floor"),
        1.05,
        "conditional MAF compiled training step <= 1.05x floor",
    ),
    ("cuda", "maf", "train", ("ours*", "floor"), 1.3, "small MAF training <= 1.3x floor"),
    ("cuda", "nsf", "train", ("ours*", "floor"), 1.3, "small NSF training <= 1.3x floor"),
    ("cuda", "nsf-gpu", "train", ("ours*", "floor"), 1.2, "GPU-sized NSF training <= 1.2x floor"),
    ("cuda", "maf", "sample", ("zuko", "ours*"), 3.0, "small MAF sampling >= 3x faster than zuko"),
    ("cuda", "nsf", "sample", ("zuko", "ours*"), 3.0, "small NSF sampling >= 3x faster than zuko"),
    (
        "cuda",
        "maf-gpu",
        "sample",
        ("zuko", "ours*"),
        3.0,
        "GPU-sized MAF sampling >= 3x faster than zuko",
    ),
    (
        "cuda",
        "nsf-gpu",
        "sample",
        ("zuko", "ours*"),
        3.0,
        "GPU-sized NSF sampling >= 3x faster than zuko",
    ),
)


# --------------------------------------------------------------------------------------------
# Builders: each returns a model (nn.Module) or raises ImportError when the library is absent.


def _mlp(in_features: int, out_features: int, sizes: tuple[int, ...] = HIDDEN) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = in_features
    for hidden in sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class Floor(nn.Module):
    """The flow's three hyper-networks as bare MLPs, without any transform around them."""

    def __init__(self, w: Workload) -> None:
        super().__init__()
        self.passes = w.inverse_passes
        out_features = w.features * w.params_per_feature
        self.nets = nn.ModuleList(
            _mlp(w.features + w.context, out_features, w.hidden) for _ in range(w.transforms)
        )

    def loss(self, inputs: Tensor) -> Tensor:
        return sum(net(inputs).mean() for net in self.nets)  # type: ignore[return-value]

    def sample(self, inputs: Tensor) -> Tensor:
        for net in self.nets:
            for _ in range(self.passes):
                out = net(inputs)
        return out


def _made_masks(
    features: int, context: int, reverse: bool, hidden: tuple[int, ...] = HIDDEN
) -> list[Tensor]:
    """MADE masks (inputs, hidden, outputs), outputs as (shift, log-scale) per feature."""
    rank = torch.arange(features).flip(0) if reverse else torch.arange(features)
    degree_in = torch.cat((rank + 1, torch.zeros(context, dtype=torch.long)))
    degrees = [degree_in] + [torch.arange(width) % features for width in hidden]
    masks = [d_out[:, None] >= d_in[None, :] for d_in, d_out in itertools.pairwise(degrees)]
    degree_out = (rank + 1).repeat_interleave(2)
    masks.append(degree_out[:, None] > degrees[-1][None, :])
    return [mask.float() for mask in masks]


class BareMAF(nn.Module):
    """The affine MAF's log-density written out in plain torch: no library around the math."""

    def __init__(self, w: Workload) -> None:
        super().__init__()
        if w.spline:
            raise NotImplementedError("bare is written for the affine MAF only")
        self.features = w.features
        if len(w.hidden) != 2:
            raise NotImplementedError("bare is written for two hidden layers")
        self.nets = nn.ModuleList(
            _mlp(w.features + w.context, 2 * w.features, w.hidden) for _ in range(w.transforms)
        )
        for i, net in enumerate(self.nets):
            masks = _made_masks(w.features, w.context, i % 2 == 1, w.hidden)
            for k, mask in enumerate(masks):
                # Transposed for the first layer, as forward reads it: no copy per call.
                net.register_buffer(f"mask{k}", mask.T.contiguous() if k == 0 else mask)
        self.bound = -math.log(1e-3)

    def log_prob(self, x: Tensor, c: Tensor) -> Tensor:
        ladj = 0.0
        for net in self.nets:
            first, second, last = net[0], net[2], net[4]
            h = torch.addmm(first.bias, torch.cat((x, c), -1), net.mask0 * first.weight.T)
            h = F.linear(h.relu_(), second.weight * net.mask1, second.bias).relu_()
            shift, raw = (
                F.linear(h, last.weight * net.mask2, last.bias)
                .view(-1, self.features, 2)
                .unbind(-1)
            )
            log_scale = torch.tanh(raw / self.bound) * self.bound
            x = torch.addcmul(shift, x, log_scale.exp())
            ladj = ladj + log_scale.sum(-1)
        return ladj - 0.5 * x.square().sum(-1) - 0.5 * math.log(2 * math.pi) * self.features


def build_ours(w: Workload) -> nn.Module:
    kwargs: dict[str, Any] = {"transforms": w.transforms, "hidden_features": w.hidden}
    if w.passes is not None:
        kwargs["passes"] = w.passes
    if w.spline:
        from flows.splines import NSF

        return NSF(w.features, w.context, bins=BINS, **kwargs)
    from flows.core import MAF

    return MAF(w.features, w.context, **kwargs)


def build_zuko(w: Workload) -> nn.Module:
    import zuko

    kwargs: dict[str, Any] = {"transforms": w.transforms, "hidden_features": w.hidden}
    if w.passes is not None:
        kwargs["passes"] = w.passes
    if w.spline:
        return zuko.flows.NSF(w.features, w.context, bins=BINS, **kwargs)
    return zuko.flows.MAF(w.features, w.context, **kwargs)


class _CouplingNet(nn.Module):
    """A bare MLP with the (inputs, context) signature nflows' coupling layers call."""

    def __init__(self, in_features: int, out_features: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.net = _mlp(in_features, out_features, hidden)

    def forward(self, inputs: Tensor, context: Tensor | None = None) -> Tensor:
        if context is not None:
            inputs = torch.cat((inputs, context), dim=-1)
        return self.net(inputs)


def build_nflows(w: Workload) -> nn.Module:
    from nflows.distributions.normal import StandardNormal
    from nflows.flows.base import Flow
    from nflows.transforms.autoregressive import (
        MaskedAffineAutoregressiveTransform,
        MaskedPiecewiseRationalQuadraticAutoregressiveTransform,
    )
    from nflows.transforms.base import CompositeTransform
    from nflows.transforms.coupling import PiecewiseRationalQuadraticCouplingTransform
    from nflows.transforms.permutations import ReversePermutation

    context = w.context or None
    # MADE with one block and no residual connections is in -> 64 -> 64 -> out, like ours.
    made = {"num_blocks": len(w.hidden) - 1, "use_residual_blocks": False}
    layers = []
    for i in range(w.transforms):
        if i > 0:
            layers.append(ReversePermutation(w.features))
        if w.spline and w.passes == 2:
            mask = torch.zeros(w.features)
            mask[w.features // 2 :] = 1
            layers.append(
                PiecewiseRationalQuadraticCouplingTransform(
                    mask,
                    lambda n_in, n_out: _CouplingNet(n_in + w.context, n_out, w.hidden),
                    num_bins=BINS,
                    tails="linear",
                    tail_bound=BOUND,
                )
            )
        elif w.spline:
            layers.append(
                MaskedPiecewiseRationalQuadraticAutoregressiveTransform(
                    w.features,
                    w.hidden[0],
                    context_features=context,
                    num_bins=BINS,
                    tails="linear",
                    tail_bound=BOUND,
                    **made,
                )
            )
        else:
            layers.append(
                MaskedAffineAutoregressiveTransform(
                    w.features, w.hidden[0], context_features=context, **made
                )
            )
    return Flow(CompositeTransform(layers), StandardNormal([w.features]))


BUILDERS: dict[str, Callable[[Workload], nn.Module]] = {
    "floor": Floor,
    "bare": BareMAF,
    "ours": build_ours,
    "zuko": build_zuko,
    "nflows": build_nflows,
}


# --------------------------------------------------------------------------------------------
# Operations: a zero-argument callable per (library, workload, op).


def make_ops(
    lib: str,
    model: nn.Module,
    w: Workload,
    batch: int,
    compiled: bool = False,
    device: torch.device | None = None,
    mode: str | None = None,
) -> dict[str, Callable[[], Any]]:
    """The training step and the sampling call of one model, as closures over fixed inputs.

    ``compiled`` wraps the loss and the sampling call in ``torch.compile`` in ``mode``; in
    ``"reduce-overhead"`` each call starts a new CUDA-graph step (its outputs are not kept).
    """
    device = torch.device("cpu") if device is None else device
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(batch, w.features, generator=generator).to(device)
    c = torch.randn(batch, w.context, generator=generator).to(device) if w.context else None
    params = [p for p in model.parameters() if p.requires_grad]

    if lib == "floor":
        inputs = x if c is None else torch.cat((x, c), dim=-1)
        loss_fn: Callable[[], Tensor] = lambda: model.loss(inputs)  # noqa: E731
        sample_fn: Callable[[], Any] = lambda: model.sample(inputs)  # noqa: E731
    elif lib == "bare":
        context = c if c is not None else x.new_empty(batch, 0)
        loss_fn = lambda: -model.log_prob(x, context).mean()  # noqa: E731
        sample_fn = None  # type: ignore[assignment]
    elif lib == "nflows":
        if c is None:
            loss_fn = lambda: -model.log_prob(x).mean()  # noqa: E731
            sample_fn = lambda: model.sample(batch)  # noqa: E731
        else:
            loss_fn = lambda: -model.log_prob(x, context=c).mean()  # noqa: E731
            sample_fn = lambda: model.sample(1, context=c)  # noqa: E731
    else:  # ours and zuko share the lazy-distribution API
        if c is None:
            loss_fn = lambda: -model().log_prob(x).mean()  # noqa: E731
            sample_fn = lambda: model().sample((batch,))  # noqa: E731
        else:
            loss_fn = lambda: -model(c).log_prob(x).mean()  # noqa: E731
            sample_fn = lambda: model(c).sample()  # noqa: E731

    graphs = compiled and mode == "reduce-overhead"
    if compiled:
        loss_fn = torch.compile(loss_fn, mode=mode)
        sample_fn = torch.compile(sample_fn, mode=mode)

    def train() -> None:
        for p in params:
            p.grad = None
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        loss_fn().backward()

    def sample() -> None:
        with torch.no_grad():
            if graphs:
                torch.compiler.cudagraph_mark_step_begin()
            sample_fn()

    if sample_fn is None:
        return {"train": train}
    return {"train": train, "sample": sample}


# --------------------------------------------------------------------------------------------
# Timing


def _synchronize() -> None:
    """Wait for the GPU's queued work (set to torch.cuda.synchronize by --device cuda)."""


def _per_call(fn: Callable[[], Any], number: int) -> float:
    _synchronize()
    start = time.perf_counter()
    for _ in range(number):
        fn()
    _synchronize()
    return (time.perf_counter() - start) / number


def calibrate(fn: Callable[[], Any], min_time: float) -> int:
    """The number of calls that takes at least ``min_time`` seconds (after a warm-up call)."""
    fn()
    number = 1
    while True:
        elapsed = _per_call(fn, number) * number
        if elapsed >= min_time or number >= 10_000:
            return number
        number = max(number * 2, int(number * 1.2 * min_time / max(elapsed, 1e-9)))


def time_alternating(
    fns: dict[str, Callable[[], Any]], repeats: int, min_time: float
) -> dict[str, dict[str, float]]:
    """Median and spread of per-call seconds, libraries alternating inside each repeat."""
    numbers = {name: calibrate(fn, min_time) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            gc.collect()
            samples[name].append(_per_call(fns[name], numbers[name]))
    return {
        name: {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
            "number": numbers[name],
            "repeats": repeats,
            "samples": values,
        }
        for name, values in samples.items()
    }


# --------------------------------------------------------------------------------------------
# Wall times of commands (subprocesses)


def time_command(argv: list[str], repeats: int) -> dict[str, Any]:
    """Median wall time of a command, or the reason it could not run."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["exit code"])[-1]
            return {"ok": False, "note": f"exit {done.returncode}: {reason[:120]}"}
    return {"ok": True, "median": statistics.median(times), "min": min(times)}


def flows_command() -> str | None:
    beside = Path(sys.executable).parent / "flows"
    if beside.exists():
        return str(beside)
    return shutil.which("flows")


def command_benchmarks(repeats: int) -> dict[str, dict[str, Any]]:
    py = sys.executable
    imports = {
        "python -c pass": "pass",
        "import torch": "import torch",
        "import flows.core": "import flows.core",
        "from flows.core import MAF": "from flows.core import MAF",
        "from flows.splines import NSF": "from flows.splines import NSF",
        "import zuko": "import zuko",
        "import nflows (flows, transforms)": "import nflows.flows, nflows.transforms",
    }
    results = {label: time_command([py, "-c", code], repeats) for label, code in imports.items()}
    command = flows_command()
    if command is None:
        results["flows list-transforms"] = {
            "ok": False,
            "note": "the flows command is not installed (flows-cli)",
        }
    else:
        results["flows list-transforms"] = time_command([command, "list-transforms"], repeats)
    return results


# --------------------------------------------------------------------------------------------
# Running


@dataclass
class Row:
    threads: int
    workload: str
    label: str
    op: str
    ms: dict[str, float] = field(default_factory=dict)
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def ratio(self, a: str, b: str) -> float | None:
        """The paired ratio a / b: the median over repeats of the per-repeat ratios."""
        quartiles = self.ratio_quartiles(a, b)
        return None if quartiles is None else quartiles[1]

    def ratio_quartiles(self, a: str, b: str) -> tuple[float, float, float] | None:
        """Quartiles of the per-repeat ratios a / b (lower, median, upper)."""
        if a not in self.samples or b not in self.samples:
            return None
        ratios = [x / y for x, y in zip(self.samples[a], self.samples[b], strict=True) if y > 0]
        if not ratios:
            return None
        if len(ratios) == 1:
            return ratios[0], ratios[0], ratios[0]
        lower, median, upper = statistics.quantiles(ratios, n=4, method="inclusive")
        return lower, median, upper


def build_all(
    w: Workload, libraries: list[str], compile_ours: bool, device: torch.device | None = None
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    models, notes = {}, {}
    for lib in libraries:
        torch.manual_seed(SEED)
        try:
            models[lib] = BUILDERS[lib](w).to(device)
        except (ImportError, AttributeError, NotImplementedError, TypeError) as error:
            notes[lib] = f"unavailable: {type(error).__name__}: {error}"[:160]
    if compile_ours and "ours" in models:
        torch.manual_seed(SEED)
        models["ours+compile"] = BUILDERS["ours"](w).to(device)
    return models, notes


def run_workload(
    w: Workload,
    threads: int,
    libraries: list[str],
    args: argparse.Namespace,
) -> list[Row]:
    device = torch.device(args.device)
    models, notes = build_all(w, libraries, args.compile, device)
    ops: dict[str, dict[str, Callable[[], Any]]] = {}
    batch = w.batch if w.batch is not None else args.batch
    for name, model in models.items():
        lib = "ours" if name == "ours+compile" else name
        compiled = name == "ours+compile"
        try:
            ops[name] = make_ops(
                lib, model, w, batch, compiled=compiled, device=device, mode=args.compile_mode
            )
        except Exception as error:  # a library whose API differs must not stop the run
            notes[name] = f"failed: {type(error).__name__}: {error}"[:160]
    rows = []
    for op in ("train", "sample"):
        row = Row(threads, w.name, w.label, op, notes=dict(notes))
        fns = {}
        for name, by_op in ops.items():
            if op not in by_op:
                continue
            fn = by_op[op]
            try:
                start = time.perf_counter()
                fn()  # first call: compiles the compiled variant, checks the others run
                if name == "ours+compile":
                    row.notes[name] = f"first call (compile) {time.perf_counter() - start:.1f} s"
                fns[name] = fn
            except Exception as error:
                row.notes[name] = f"failed: {type(error).__name__}: {error}"[:160]
        timed = time_alternating(fns, args.repeats, args.min_time)
        for name, stats in timed.items():
            row.ms[name] = 1e3 * stats["median"]
            row.spread[name] = (1e3 * stats["min"], 1e3 * stats["max"])
            row.samples[name] = [1e3 * value for value in stats["samples"]]
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


COLUMNS = ("floor", "bare", "ours", "ours+compile", "zuko", "nflows")


def format_header() -> str:
    head = f"{'workload':<16}{'op':<7}" + "".join(f"{c:>13}" for c in COLUMNS)
    head += f"{'ours/floor':>12}{'bare/floor':>12}{'zuko/floor':>12}{'nflows/fl':>11}"
    head += f"{'zuko/ours':>11}"
    return head


def format_row(row: Row) -> str:
    def cell(value: float | None, width: int, suffix: str = "") -> str:
        return f"{'-' if value is None else f'{value:.2f}{suffix}':>{width}}"

    line = f"{row.label:<16}{row.op:<7}"
    line += "".join(cell(row.ms.get(c), 13) for c in COLUMNS)
    line += cell(row.ratio("ours", "floor"), 12, "x")
    line += cell(row.ratio("bare", "floor"), 12, "x")
    line += cell(row.ratio("zuko", "floor"), 12, "x")
    line += cell(row.ratio("nflows", "floor"), 11, "x")
    line += cell(row.ratio("zuko", "ours"), 11, "x")
    return line


def _fastest_ours(row: Row, pair: tuple[str, str]) -> tuple[str, str]:
    """``pair`` with "ours*" replaced by the faster of ours and ours+compile in ``row``."""
    if "ours*" not in pair:
        return pair
    timed = [name for name in ("ours", "ours+compile") if name in row.ms]
    best = min(timed, key=row.ms.__getitem__) if timed else "ours"
    first, second = pair
    return (best if first == "ours*" else first, best if second == "ours*" else second)


def check_targets(rows: list[Row], device: str = "cpu") -> list[dict[str, Any]]:
    checks = []
    for row in rows:
        for where, workload, op, wanted, bound, description in TARGETS:
            if where != device or (row.workload, row.op) != (workload, op):
                continue
            pair = _fastest_ours(row, wanted)
            speedup = pair[0] == "zuko"
            quartiles = row.ratio_quartiles(*pair)
            value = None if quartiles is None else quartiles[1]
            if value is None:
                missing = [name for name in pair if name not in row.samples]
                passed, shown = False, f"not measured ({', '.join(missing)} not timed)"
            else:
                passed = value >= bound if speedup else value <= bound
                shown = (
                    f"{pair[0]}/{pair[1]} = {value:.2f}x "
                    f"(quartiles {quartiles[0]:.2f}-{quartiles[2]:.2f})"
                )
            checks.append(
                {
                    "threads": row.threads,
                    "target": description,
                    "value": value,
                    "quartiles": quartiles,
                    "passed": passed,
                    "shown": shown,
                }
            )
    return checks


def profile_ours(args: argparse.Namespace) -> dict[str, str]:
    """Top ops by self CPU time of our training steps and sampling, beside the floor's."""
    from torch.profiler import ProfilerActivity, profile

    tables = {}
    for w in (WORKLOADS[0], WORKLOADS[1]):
        for lib in ("floor", "ours", "zuko"):
            torch.manual_seed(SEED)
            try:
                model = BUILDERS[lib](w)
            except (ImportError, AttributeError) as error:
                print(f"[profile] {lib} {w.name}: unavailable ({error})")
                continue
            ops = make_ops(lib, model, w, args.batch)
            for op, fn in ops.items():
                for _ in range(3):
                    fn()
                number = 20 if op == "train" else 5
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(number):
                        fn()
                table = prof.key_averages().table(
                    sort_by="self_cpu_time_total", row_limit=args.profile_rows
                )
                key = f"{lib} {w.name} {op} ({number} calls, {torch.get_num_threads()} threads)"
                tables[key] = table
                print(f"\n=== {key}\n{table}", flush=True)
    return tables


def parse_threads(text: str) -> list[int]:
    counts = []
    for part in text.split(","):
        part = part.strip()
        counts.append(os.cpu_count() or 1 if part == "all" else int(part))
    return list(dict.fromkeys(counts))


def machine() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": load,
        "batch": None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,all", help="comma list of counts or 'all'")
    parser.add_argument("--quick", action="store_true", help="fast smoke run")
    parser.add_argument("--compile", action="store_true", help="add torch.compile'd ours")
    parser.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode of ours+compile (default: reduce-overhead, CUDA graphs, on a "
        "GPU; default on the CPU)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu or cuda[:N]; on a GPU --compile is implied and the threads option is ignored",
    )
    parser.add_argument("--profile", action="store_true", help="torch.profiler top ops")
    parser.add_argument("--profile-rows", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--min-time", type=float, default=None, help="seconds per measurement")
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument(
        "--workloads",
        default=None,
        help="comma list (default: the small ones on a CPU, small and GPU-sized on a GPU): "
        + ",".join(w.name for w in WORKLOADS),
    )
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--no-commands", action="store_true", help="skip import/CLI timings")
    parser.add_argument("--json", type=Path, default=None, help="write results to this file")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 15
    if args.min_time is None:
        args.min_time = 0.02 if args.quick else 0.1

    global _synchronize
    device = torch.device(args.device)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            print(f"benchmarks/run.py: error: --device {args.device}: no CUDA device here")
            return 2
        torch.cuda.set_device(device)
        _synchronize = torch.cuda.synchronize
        args.compile = True
        args.threads = "1"  # the host's threads do not matter to the GPU's kernels
    if args.compile_mode is None:
        args.compile_mode = "reduce-overhead" if device.type == "cuda" else "default"
    names = DEFAULT_WORKLOADS.get(device.type, DEFAULT_WORKLOADS["cpu"])
    if args.workloads is not None:
        names = tuple(args.workloads.split(","))
    libraries = [lib.strip() for lib in args.libraries.split(",")]
    workloads = [w for w in WORKLOADS if w.name in names]
    info = machine()
    info["batch"] = args.batch
    info["device"] = str(device)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    print(
        f"torch {info['torch']}, python {info['python']}, {info['cpu_count']} CPUs, "
        f"device {info.get('gpu', device)}, "
        f"load average at start {info['loadavg_start']}, batch {args.batch} (GPU-sized: "
        f"65536), hidden {HIDDEN}, {TRANSFORMS} transforms, {args.repeats} repeats (median), "
        f"times in ms per call, ours+compile in mode {args.compile_mode if args.compile else '-'}"
    )

    rows: list[Row] = []
    profiles: dict[str, str] = {}
    default_threads = torch.get_num_threads()
    for threads in parse_threads(args.threads):
        torch.set_num_threads(threads)
        print(f"\n## {threads} thread(s)\n{format_header()}", flush=True)
        for w in workloads:
            rows += run_workload(w, threads, libraries, args)
        if args.profile and threads == 1:
            profiles = profile_ours(args)
    torch.set_num_threads(default_threads)

    notes: dict[str, list[str]] = {}
    for r in rows:
        for name, note in r.notes.items():
            ops = notes.setdefault(f"{r.workload} / {name}: {note}", [])
            ops.append(f"{r.threads} thr {r.op}")
    if notes:
        print("\nnotes:")
        for note, where in notes.items():
            print(f"  {note} ({', '.join(where)})")

    if args.compile:
        print("\ncompiled speed-up (ours eager / ours compiled):")
        for r in rows:
            ratio = r.ratio("ours", "ours+compile")
            if ratio is not None:
                print(f"  {r.threads} thr {r.label:<16}{r.op:<7}{ratio:.2f}x")

    commands = {} if args.no_commands else command_benchmarks(3 if args.quick else 7)
    if commands:
        print("\nwall time of commands (median of subprocess runs):")
        for label, result in commands.items():
            shown = f"{result['median']:.3f} s" if result["ok"] else f"skipped ({result['note']})"
            print(f"  {label:<34}{shown}")

    checks = check_targets(rows, device.type)
    listing = commands.get("flows list-transforms")
    if listing is not None:
        checks.append(
            {
                "threads": None,
                "target": "flows list-transforms < 0.3 s",
                "value": listing.get("median"),
                "passed": bool(listing["ok"] and listing["median"] < 0.3),
                "shown": f"{listing['median']:.3f} s" if listing["ok"] else listing["note"],
            }
        )
    print("\ntargets:")
    for check in checks:
        mark = "PASS" if check["passed"] else "FAIL"
        where = f"[{check['threads']} thr] " if check["threads"] else ""
        print(f"  {mark}  {where}{check['target']}: {check['shown']}")

    if args.json is not None:
        try:
            info["loadavg_end"] = os.getloadavg()
        except OSError:
            info["loadavg_end"] = None
        payload = {
            "machine": info,
            "settings": {
                "batch": args.batch,
                "hidden": HIDDEN,
                "transforms": TRANSFORMS,
                "bins": BINS,
                "repeats": args.repeats,
                "min_time": args.min_time,
                "device": str(device),
                "compile_mode": args.compile_mode if args.compile else None,
            },
            "rows": [asdict(r) for r in rows],
            "commands": commands,
            "targets": checks,
            "profiles": profiles,
        }
        args.json.write_text(json.dumps(payload, indent=2))
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
