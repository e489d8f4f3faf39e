"""What ``fit``, ``sample`` and ``eval`` share: presets by name, standardization, processes.

A fitted flow models the standardized data :math:`z = (x - m) / s`; the density of the
original data is :math:`\\log p(x) = \\log p_z(z) - \\sum_j \\log s_j`. The checkpoint keeps
:math:`m`, :math:`s` and the column names in its ``extra``.
"""

from __future__ import annotations

import dataclasses
import inspect
import os
from typing import Any

import numpy as np

from flows.cli.main import CLIError

__all__ = [
    "Standardizer",
    "Workers",
    "build_flow",
    "default_flow",
    "load_model",
    "start_workers",
]


@dataclasses.dataclass
class Standardizer:
    """Per-column mean and standard deviation."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray, names: list[str], source: str) -> Standardizer:
        mean = values.mean(axis=0)
        std = values.std(axis=0)
        flat = [names[i] for i in np.flatnonzero(~(std > 1e-12 * np.maximum(1.0, abs(mean))))]
        if flat:
            raise CLIError(
                f"{source}: column(s) {', '.join(flat)} are constant; a density over them is "
                "degenerate, leave them out with --columns"
            )
        return cls(mean, std)

    @classmethod
    def from_extra(cls, extra: dict[str, Any], prefix: str) -> Standardizer:
        return cls(np.asarray(extra[f"{prefix}mean"]), np.asarray(extra[f"{prefix}std"]))

    def to_extra(self, prefix: str) -> dict[str, list[float]]:
        return {f"{prefix}mean": self.mean.tolist(), f"{prefix}std": self.std.tolist()}

    def forward(self, values: np.ndarray) -> np.ndarray:
        return (values - self.mean) / self.std

    def backward(self, values: np.ndarray) -> np.ndarray:
        return values * self.std + self.mean

    @property
    def log_scale(self) -> float:
        """``sum(log s)``: what standardizing subtracts from every log-density."""
        return float(np.log(self.std).sum())


def default_flow() -> str:
    """``nsf`` when a package provides it, else ``maf``."""
    from flows.core.plugins import list_presets

    names = {p.spec.name for p in list_presets()}
    return "nsf" if "nsf" in names else "maf"


def build_flow(name: str, features: int, context: int, hyper: dict[str, Any]) -> Any:
    """Construct the preset ``name`` with the hyper-parameters it accepts.

    ``hyper`` maps argument names to ``(option, value)``; an option the preset refuses is
    reported by its command-line name.
    """
    from flows.core.plugins import get_preset

    constructor = get_preset(name)
    parameters = inspect.signature(constructor).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    arguments: dict[str, Any] = {}
    for key, (option, value) in hyper.items():
        if key not in parameters and not open_ended:
            raise CLIError(
                f"flow {name!r} does not take {option} (it takes: "
                f"{', '.join(p for p in parameters if p not in ('features', 'context'))})"
            )
        arguments[key] = value
    try:
        return constructor(features=features, context=context, **arguments)
    except (TypeError, ValueError) as error:
        given = " ".join(f"{option} {_shown(value)}" for option, value in hyper.values())
        detail = " ".join(str(error).split())
        raise CLIError(
            f"flow {name!r} refused its options ({given or 'none'}): {detail}"
        ) from None


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


@dataclasses.dataclass
class Workers:
    """This process's place among the data-parallel processes (one process: rank 0 of 1)."""

    rank: int
    world: int
    device: Any
    started: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def stop(self) -> None:
        if self.started:
            import torch.distributed

            # Tearing gloo down while another rank still uses it aborts that rank: wait first.
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def start_workers(device: str | None) -> Workers:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, nccl on GPU)."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise CLIError(
            f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)"
        ) from None
    if world <= 1:
        return Workers(0, 1, chosen)
    import torch.distributed

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local)
        torch.cuda.set_device(chosen)
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return Workers(torch.distributed.get_rank(), torch.distributed.get_world_size(), chosen, True)


def load_model(path: str) -> tuple[Any, dict[str, Any], str]:
    """Load a ``flows fit`` checkpoint: the flow, its metadata, and the preset name."""
    from flows.core.checkpoint import load

    checkpoint = load(path)
    extra = checkpoint.extra
    needed = ("columns", "mean", "std")
    if any(key not in extra for key in needed):
        raise CLIError(
            f"{path!r} is a flows checkpoint but not one written by `flows fit` "
            "(it lacks the data statistics)"
        )
    checkpoint.flow.eval()
    return checkpoint.flow, extra, checkpoint.preset
