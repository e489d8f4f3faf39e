r"""NPE with our NSF inside sbi, against sbi's own "nsf" (nflows) and "zuko_nsf".

Every estimator gets the same architecture (5 transforms, hidden layers (50, 50), 10 bins; ours
on the splines' interval [-5, 5] of our preset and zuko, or ``--bound``), the same
simulations (one set per task, seeded) and sbi's same training settings; ours is also given the
prior's support where the prior is a box (``support=prior.support``). For each task of
``tasks.py``: C2ST of 5000 posterior samples at the task's observation against the 5000
reference samples of ``references/`` (sbi's ``c2st``, its default random forest, 5 folds; 0.5
is indistinguishable), the training wall time (``NPE.train``), and the wall time of
``posterior.sample((10000,), x=x_o)``, rejection of samples outside the prior included.

    python benchmarks/sbi/run.py                              # 10k simulations, sbi's stopping
    python benchmarks/sbi/run.py --simulations 2000 --max-epochs 20   # a reduced budget
    python benchmarks/sbi/run.py --json out.json
    python benchmarks/sbi/run.py --estimators flows flows-unbounded --bound 3   # nflows' interval
    python benchmarks/sbi/run.py --seed 0 1 2 3 4 --draws 5   # the proposed criterion

With several seeds (each its own simulations, training and C2ST folds) the verdicts are taken
on the medians over seeds; with ``--draws N`` a posterior's C2ST is the mean over N sets of
samples, which takes out the spread of C2ST itself (about 0.007 between sets of one posterior).
Two verdicts are printed: the issue's targets (C2ST at most the better of sbi's two plus 0.01,
training at most 0.5x zuko_nsf's CPU time, sampling at most 0.3x) and the C2ST criterion
proposed in BENCHMARKS.md (C2ST within 0.02 of the better of sbi's two, or the held-out loss
within 0.05 of the better of theirs).

A full run (sbi's stopping, 10k simulations, every task) trains each estimator for roughly 90
to 170 epochs: about 4 minutes of CPU time per 2-D task (nflows' about half of it) and more for
the 5-D one, some 15 to 20 minutes on one thread of an idle machine; on a loaded one the wall
time grows with the load. ``--max-epochs 15`` takes about 2 minutes.

Times are per process on ``--threads`` intra-op threads (default 1); the estimators of a task
run one after another in one process. Each time is given as wall time and as the process's CPU
time; the targets' verdicts use CPU time, which a machine shared with other work inflates less
(on one thread, on an idle machine, the two agree).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time
import warnings
from typing import Any

import numpy as np
import torch
from sbi.inference import NPE
from sbi.neural_nets import posterior_nn as sbi_posterior_nn
from sbi.utils.metrics import c2st

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from tasks import TASKS, Task

from flows.sbi import posterior_nn

REFERENCES = pathlib.Path(__file__).parent / "references"
ESTIMATORS = ("nsf", "zuko_nsf", "flows")
# Ours without the prior's support, to see what the support changes (not run by default).
EXTRA = ("flows-unbounded",)
# Our splines' interval [-B, B]: our preset's default, zuko's; sbi's nflows NSF uses 3 (its
# tail bound). Neither is better on every task (BENCHMARKS.md measures both).
BOUND = 5.0


def builder(name: str, task: Task, bound: float = BOUND) -> object:
    if name == "nsf":  # nflows' coupling NSF: residual networks of width 50, two blocks
        return sbi_posterior_nn(model="nsf", hidden_features=50, num_transforms=5, num_bins=10)
    if name == "zuko_nsf":
        return sbi_posterior_nn(
            model="zuko_nsf", hidden_features=[50, 50], num_transforms=5, num_bins=10
        )
    bounded = task.bounded and name == "flows"
    support = {"support": task.prior().support} if bounded else {}
    return posterior_nn(
        "nsf", transforms=5, hidden_features=(50, 50), bins=10, bound=bound, **support
    )


def run(task: Task, name: str, seed: int, theta, x, x_o, reference, args) -> dict[str, object]:
    prior = task.prior()
    torch.manual_seed(seed)
    build = builder(name, task, args.bound)
    inference = NPE(prior, density_estimator=build, show_progress_bars=False)
    inference.append_simulations(theta, x)
    options = {} if args.max_epochs is None else {"max_num_epochs": args.max_epochs}
    start, cpu = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sbi's and nflows' notes, the same for every run
        inference.train(**options)
    train, train_cpu = time.perf_counter() - start, time.process_time() - cpu
    epochs = inference._summary["epochs_trained"][-1]
    posterior = inference.build_posterior()
    posterior.sample((100,), x=x_o, show_progress_bars=False)  # first-call costs, not timed
    start, cpu = time.perf_counter(), time.process_time()
    samples = posterior.sample((10_000,), x=x_o, show_progress_bars=False)
    sample, sample_cpu = time.perf_counter() - start, time.process_time() - cpu
    accepted = prior.support.check(posterior.posterior_estimator.sample((10_000,), x_o)[:, 0])
    scores = [c2st(samples[: len(reference)], reference, seed=seed).item()]
    for draw in range(1, args.draws):
        more = posterior.sample((len(reference),), x=x_o, show_progress_bars=False)
        scores.append(c2st(more, reference, seed=seed + 1000 * draw).item())
    return {
        "task": task.name,
        "estimator": name,
        "seed": seed,
        "c2st": statistics.fmean(scores),
        "c2st_draws": scores,
        "train_s": train,
        "train_cpu_s": train_cpu,
        "epochs": epochs,
        # sbi's held-out loss, the mean negative log-density in theta's units: comparable
        # across estimators, and less noisy than C2ST for telling fits apart.
        "best_validation_loss": float(inference._summary["best_validation_loss"][-1]),
        "sample_10k_s": sample,
        "sample_10k_cpu_s": sample_cpu,
        "acceptance": accepted.float().mean().item(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        "--estimators", nargs="+", default=list(ESTIMATORS), choices=ESTIMATORS + EXTRA
    )
    parser.add_argument("--simulations", type=int, default=10_000)
    parser.add_argument("--max-epochs", type=int, default=None, help="default: sbi's stopping")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--bound", type=float, default=BOUND, help="our splines' interval [-B, B] (default 5)"
    )
    parser.add_argument(
        "--seed", type=int, nargs="+", default=[0], help="one run per seed; medians over them"
    )
    parser.add_argument(
        "--draws", type=int, default=1, help="C2ST as the mean over this many sample sets"
    )
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()
    json_path = None if args.json is None else args.json.resolve()
    os.chdir(tempfile.mkdtemp(prefix="sbi-bench-"))  # sbi's trainers log to ./sbi-logs
    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
        f"{args.threads} thread(s), {args.simulations} simulations, "
        f"max epochs {args.max_epochs or 'sbi default'}, seeds {args.seed}, "
        f"our splines on [-{args.bound:g}, {args.bound:g}]"
    )
    results = []
    for name in args.tasks:
        task = TASKS[name]
        x_o = torch.from_numpy(np.load(REFERENCES / f"{name}_x_o.npy"))[None]
        reference = torch.from_numpy(np.load(REFERENCES / f"{name}_theta.npy"))
        for seed in args.seed:
            torch.manual_seed(seed)
            theta = task.prior().sample((args.simulations,))
            x = task.simulate(theta)
            for estimator in args.estimators:
                result = run(task, estimator, seed, theta, x, x_o, reference, args)
                results.append(result)
                report(result)
    print()
    print(
        "| task | estimator | seed | C2ST | val | train CPU (s) | train wall (s) | epochs "
        "| sample 10k CPU (s) | sample 10k wall (s) | in prior |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in results:
        print(
            f"| {r['task']} | {r['estimator']} | {r['seed']} | {r['c2st']:.3f} "
            f"| {r['best_validation_loss']:.3f} | {r['train_cpu_s']:.1f} | {r['train_s']:.1f} "
            f"| {r['epochs']} | {r['sample_10k_cpu_s']:.3f} | {r['sample_10k_s']:.3f} "
            f"| {r['acceptance']:.3f} |"
        )
    if set(ESTIMATORS) <= set(args.estimators):
        print()
        for name in args.tasks:
            print(verdicts(name, [r for r in results if r["task"] == name]))
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def report(result: dict[str, Any]) -> None:
    """One line for a run as it ends."""
    print(
        f"{result['task']:9} {result['estimator']:9} seed {result['seed']}"
        f"  c2st {result['c2st']:.3f}"
        f"  train {result['train_s']:7.1f} s, cpu {result['train_cpu_s']:7.1f} s"
        f" ({result['epochs']} epochs, val {result['best_validation_loss']:.3f})"
        f"  sample 10k {result['sample_10k_s']:6.3f} s, cpu {result['sample_10k_cpu_s']:6.3f} s"
        f"  acceptance {result['acceptance']:.3f}",
        flush=True,
    )


#: The scores whose medians over seeds the verdicts compare.
MEDIANS = ("c2st", "best_validation_loss", "train_cpu_s", "sample_10k_cpu_s")


def verdicts(task: str, results: list[dict[str, Any]]) -> str:
    """The targets on one task's runs, each score the median over seeds, times in CPU time."""

    def median(estimator: str, key: str) -> float:
        return statistics.median(r[key] for r in results if r["estimator"] == estimator)

    ours, zuko, nflows = ({k: median(e, k) for k in MEDIANS} for e in ("flows", "zuko_nsf", "nsf"))
    best_c2st = min(zuko["c2st"], nflows["c2st"])
    best_val = min(zuko["best_validation_loss"], nflows["best_validation_loss"])
    train = ours["train_cpu_s"] / zuko["train_cpu_s"]
    sample = ours["sample_10k_cpu_s"] / zuko["sample_10k_cpu_s"]
    proposed = ours["c2st"] <= best_c2st + 0.02 or ours["best_validation_loss"] <= best_val + 0.05
    seeds = len({r["seed"] for r in results})
    return (
        f"{task} (medians of {seeds} seed(s)): C2ST {ours['c2st']:.3f} vs best of sbi's "
        f"{best_c2st:.3f} ({_mark(ours['c2st'] <= best_c2st + 0.01)} <= +0.01); "
        f"train {train:.2f}x zuko_nsf ({_mark(train <= 0.5)} <= 0.5x); "
        f"sample {sample:.2f}x zuko_nsf ({_mark(sample <= 0.3)} <= 0.3x); proposed: C2ST "
        f"within 0.02, or val {ours['best_validation_loss']:.3f} within 0.05 of sbi's best "
        f"{best_val:.3f} ({_mark(proposed)})"
    )


def _mark(met: bool) -> str:
    return "ok" if met else "MISSED"


if __name__ == "__main__":
    sys.exit(main())
