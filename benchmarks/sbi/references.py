r"""Regenerate the reference posterior samples of benchmarks/sbi/references/.

For each task: the observation ``x_o`` (simulated once at the task's ``theta_o``, seed 0) in
``<task>_x_o.npy``, and 5000 exact posterior samples at it in ``<task>_theta.npy`` (float32).

    python benchmarks/sbi/references.py
"""

from __future__ import annotations

import pathlib

import numpy as np
import torch
from tasks import TASKS

HERE = pathlib.Path(__file__).parent / "references"
ROWS = 5000


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for index, task in enumerate(TASKS.values()):
        torch.manual_seed(index)
        x_o = task.simulate(torch.tensor([task.theta_o]))[0].numpy().astype(np.float64)
        samples = task.reference(x_o, ROWS, np.random.default_rng(index))
        np.save(HERE / f"{task.name}_x_o.npy", x_o.astype(np.float32))
        np.save(HERE / f"{task.name}_theta.npy", samples.astype(np.float32))
        print(f"{task.name}: x_o {np.round(x_o, 3).tolist()}, {len(samples)} samples")


if __name__ == "__main__":
    main()
