r"""Paired training steps of our NSF and sbi's "zuko_nsf", without sbi's trainer around them.

A step is what sbi's trainer does per batch: the mean of ``loss`` over 200 simulations,
backward, gradient norm clipped at 5, Adam (lr 5e-4). For each task of ``tasks.py``, blocks of
``--steps`` steps alternate between zuko_nsf and the ``--estimators`` (equal architecture as
in ``run.py``); the ratios of their CPU times to zuko_nsf's, block by block, give quartiles
that a shared machine's drift affects less than one long run does. ``bare`` is the same
estimator written by hand in plain torch and ``floor`` its networks alone (``bare.py``).

    python benchmarks/sbi/steps.py                       # ours with the box support
    python benchmarks/sbi/steps.py --estimators flows bare floor --tasks crescent
    python benchmarks/sbi/steps.py --phases   # where a step's time goes, estimator by estimator
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time
import warnings
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from bare import BareNSF, NetworksFloor
from run import builder
from tasks import TASKS


def block(
    net: Any, optimizer: torch.optim.Optimizer, theta: Tensor, x: Tensor, steps: int
) -> float:
    """CPU milliseconds per training step, over ``steps`` steps."""
    start = time.process_time()
    for _ in range(steps):
        batch = torch.randint(0, 9_000, (200,))
        optimizer.zero_grad()
        net.loss(theta[batch], x[batch]).mean().backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        optimizer.step()
    return (time.process_time() - start) / steps * 1e3


HAND = {"bare": BareNSF, "floor": NetworksFloor}

PHASES = ("zero_grad", "forward", "backward", "clip", "adam")


def phases(
    net: Any, optimizer: torch.optim.Optimizer, theta: Tensor, x: Tensor, steps: int
) -> None:
    """Print the CPU milliseconds of each phase of a step, averaged over ``steps`` steps."""
    batch = torch.randint(0, 9_000, (200,))
    theta, x = theta[batch], x[batch]
    totals = dict.fromkeys(PHASES, 0.0)
    for _ in range(steps):
        marks = [time.process_time()]
        optimizer.zero_grad()
        marks.append(time.process_time())
        loss = net.loss(theta, x).mean()
        marks.append(time.process_time())
        loss.backward()
        marks.append(time.process_time())
        torch.nn.utils.clip_grad_norm_(net.parameters(), 5.0)
        marks.append(time.process_time())
        optimizer.step()
        marks.append(time.process_time())
        for phase, start, end in zip(PHASES, marks, marks[1:], strict=False):
            totals[phase] += end - start
    print("  ".join(f"{p} {t / steps * 1e3:.2f}" for p, t in totals.items()), "ms", flush=True)


def quartiles(times: list[float], reference: list[float]) -> str:
    """The quartiles of the block-by-block ratios ``times / reference``."""
    ratios = [t / r for t, r in zip(times, reference, strict=True)]
    return " / ".join(f"{q:.3f}" for q in statistics.quantiles(ratios, n=4))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument(
        "--estimators", nargs="+", default=["flows"], choices=("flows", "flows-unbounded", *HAND)
    )
    parser.add_argument("--blocks", type=int, default=12)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument(
        "--phases", action="store_true", help="time each phase of a step instead of the ratio"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    for name in args.tasks:
        task = TASKS[name]
        torch.manual_seed(0)
        theta = task.prior().sample((10_000,))
        x = task.simulate(theta)
        nets = {}
        for estimator in ("zuko_nsf", *args.estimators):
            make = HAND.get(estimator) or builder(estimator, task)
            net = make(theta, x)  # type: ignore[operator]
            nets[estimator] = (net, torch.optim.Adam(net.parameters(), lr=5e-4))

        for estimator in nets:  # first-call costs, not timed
            block(*nets[estimator], theta, x, 20)
        if args.phases:
            for estimator in nets:
                print(f"{name}: {estimator}", end="  ")
                phases(*nets[estimator], theta, x, 500)
            continue
        times: dict[str, list[float]] = {estimator: [] for estimator in nets}
        for _ in range(args.blocks):
            for estimator in nets:
                times[estimator].append(block(*nets[estimator], theta, x, args.steps))
        print(f"{name}: zuko_nsf {statistics.median(times['zuko_nsf']):.2f} ms a step", flush=True)
        for estimator in args.estimators:
            against = [r for r in ("zuko_nsf", "bare") if r in times and r != estimator]
            ratios = "; ".join(f"to {r} {quartiles(times[estimator], times[r])}" for r in against)
            print(
                f"  {estimator} {statistics.median(times[estimator]):.2f} ms a step; "
                f"ratio quartiles {ratios}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
