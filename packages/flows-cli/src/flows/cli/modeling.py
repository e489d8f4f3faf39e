"""What ``fit``, ``sample`` and ``eval`` share: presets by name and standardization.

A fitted flow models the standardized data :math:`z = (x - m) / s`; the density of the
original data is :math:`\\log p(x) = \\log p_z(z) - \\sum_j \\log s_j`. The checkpoint keeps
:math:`m`, :math:`s` and the column names in its ``extra``.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import numpy as np

from flows.cli.arguments import CLIError

__all__ = [
    "Standardizer",
    "build_flow",
    "default_flow",
    "load_model",
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
