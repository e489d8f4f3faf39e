"""What ``fit``, ``sample`` and ``eval`` share: presets by name and standardization.

A fitted flow models the standardized data :math:`z = (x - m) / s`; the density of the
original data is :math:`\\log p(x) = \\log p_z(z) - \\sum_j \\log s_j`. The checkpoint keeps
:math:`m`, :math:`s` and the column names in its ``extra``; :func:`load_model` refuses a
checkpoint whose statistics or column names do not fit its flow. A support ``(lo, hi)`` given
in the data's units (``flows fit --support``) is kept there too; the flow's own support is its
standardized image :math:`((lo - m) / s, (hi - m) / s)`, and samples brought back to the data's
units are kept strictly inside it.

Example:
    >>> # Squares of the first column overflow; the second is tiny, not constant.
    >>> values = np.array([[-4e154, -1e-20], [4e154, 1e-20]])
    >>> scale = Standardizer.of(values, ["a", "b"], "data")
    >>> scale.mean.tolist(), scale.std.tolist()
    ([0.0, 0.0], [4e+154, 1e-20])
    >>> scale.forward(values).tolist()
    [[-1.0, -1.0], [1.0, 1.0]]
"""

from __future__ import annotations

import collections.abc
import dataclasses
import inspect
import json
import math
import types
import typing
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
    """Per-column mean and standard deviation.

    Arguments:
        mean: The column means :math:`m`, finite.
        std: The column standard deviations :math:`s`, positive and finite.
        low: The lower bounds of the data's support, in its units (``-inf`` where open), or
            ``None`` for no support.
        high: The upper bounds.
    """

    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    @classmethod
    def of(cls, values: np.ndarray, names: list[str], source: str) -> Standardizer:
        """The statistics of the finite ``values``, computed without overflow or underflow.

        Each column is first divided by its largest magnitude, so its sum and its squares stay
        within float64 however large (1e155 squares past the largest double) or small (1e-20)
        its values are; the variance is the mean of the squared deviations from the mean (two
        passes, no cancellation).

        Raises:
            CLIError: A column holds one value only, or its statistics or standardized values
                are not finite numbers in float64 (the message names the columns).
        """
        values = np.asarray(values, dtype=np.float64)
        # max == min rather than ptp == 0: ptp overflows for values spanning the doubles.
        flat = [names[i] for i in np.flatnonzero(values.max(axis=0) == values.min(axis=0))]
        if flat:
            raise CLIError(
                f"{source}: column(s) {', '.join(flat)} are constant; a density over them is "
                "degenerate, leave them out with --columns"
            )
        magnitude = np.abs(values).max(axis=0)  # > 0: no column is constant
        unit = values / magnitude
        unit_mean = unit.mean(axis=0)
        unit_std = np.sqrt(np.square(unit - unit_mean).mean(axis=0))
        scale = cls(unit_mean * magnitude, unit_std * magnitude)
        with np.errstate(all="ignore"):
            usable = np.isfinite(scale.mean) & np.isfinite(scale.std) & (scale.std > 0)
            usable &= np.isfinite(np.log(scale.std))
            usable &= np.isfinite(scale.forward(values)).all(axis=0)
        if not usable.all():
            bad = [names[i] for i in np.flatnonzero(~usable)]
            raise CLIError(
                f"{source}: column(s) {', '.join(bad)} cannot be standardized in float64 (their "
                "spread is too small or too large to represent); rescale them first"
            )
        return scale

    @classmethod
    def from_extra(cls, extra: dict[str, Any], prefix: str) -> Standardizer:
        """The statistics a checkpoint's ``extra`` holds (checked by :func:`load_model`)."""
        support = extra.get(f"{prefix}support")
        low, high = (None, None) if support is None else np.asarray(support, dtype=np.float64)
        return cls(
            np.asarray(extra[f"{prefix}mean"], dtype=np.float64),
            np.asarray(extra[f"{prefix}std"], dtype=np.float64),
            low,
            high,
        )

    def to_extra(self, prefix: str) -> dict[str, Any]:
        extra: dict[str, Any] = {
            f"{prefix}mean": self.mean.tolist(),
            f"{prefix}std": self.std.tolist(),
        }
        if self.low is not None and self.high is not None:
            extra[f"{prefix}support"] = [self.low.tolist(), self.high.tolist()]
        return extra

    def forward(self, values: np.ndarray) -> np.ndarray:
        """``(x - m) / s``; entries that do not fit in float64 come out as inf, not NaN."""
        with np.errstate(over="ignore", invalid="ignore"):
            z = (values - self.mean) / self.std
            lost = ~np.isfinite(z)
            if lost.any():
                # x - m overflows when both are near the largest double with opposite signs;
                # halving is exact there, so compute those entries from the halves.
                halves = (values * 0.5 - self.mean * 0.5) / (self.std * 0.5)
                z = np.where(lost, halves, z)
        return z

    def backward(self, values: np.ndarray) -> np.ndarray:
        """``z s + m``, kept strictly inside the support (rounding may reach a bound)."""
        x = values * self.std + self.mean
        if self.low is not None and self.high is not None:
            x = np.clip(x, np.nextafter(self.low, self.high), np.nextafter(self.high, self.low))
        return x

    def with_support(
        self,
        bounds: list[tuple[float, float]],
        values: np.ndarray,
        names: list[str],
        source: str,
        numbers: np.ndarray | None = None,
    ) -> Standardizer:
        """These statistics with the support ``bounds`` (one ``(lo, hi)`` per column, or one
        for all), which every row of ``values`` must lie strictly inside; ``numbers`` are the
        rows' numbers in the data (from 1; by default their positions).

        Raises:
            CLIError: The bounds are not one per column nor one for all, or rows lie on or
                outside them (the message names the first rows and their columns).
        """
        columns = values.shape[1]
        if len(bounds) not in (1, columns):
            raise CLIError(
                f"--support gives {len(bounds)} ranges for {columns} columns "
                f"({', '.join(names)}); give one lo:hi per column, or one for all"
            )
        low = np.array([lo for lo, _ in bounds] * (columns // len(bounds)), dtype=np.float64)
        high = np.array([hi for _, hi in bounds] * (columns // len(bounds)), dtype=np.float64)
        outside = (values <= low) | (values >= high)
        rows = np.flatnonzero(outside.any(axis=1))
        if len(rows):
            from flows.cli.datasets import row_numbers

            columns_out = [names[j] for j in np.flatnonzero(outside[rows].any(axis=0))]
            ranges = ", ".join(
                f"{names[j]} in ({low[j]:g}, {high[j]:g})" for j in range(len(names))
            )
            raise CLIError(
                f"{source}: {len(rows)} row(s) lie outside --support (data rows "
                f"{row_numbers(rows + 1 if numbers is None else numbers[rows])}, counted from "
                f"1; columns "
                f"{', '.join(columns_out)}): the support is open, {ranges}"
            )
        return dataclasses.replace(self, low=low, high=high)

    def kept_inside(self, z: Any, values: np.ndarray) -> Any:
        """The float32 tensor ``z`` of standardized ``values``, its rows strictly inside the
        support in the data's units kept strictly inside the flow's: rounding to float32 can
        bring a row near a bound onto it, where the flow gives no density. Rows outside stay."""
        support = self.standardized_support()
        if support is None or self.low is None or self.high is None:
            return z
        import torch

        from flows.core.transforms import SupportTransform

        bounds = SupportTransform(torch.tensor(support[0]), torch.tensor(support[1]))
        low, high = bounds.open_bounds(z)
        inside = ((values > self.low) & (values < self.high)).all(axis=1)
        return torch.where(torch.as_tensor(inside)[:, None], z.clamp(low, high), z)

    def standardized_support(self) -> tuple[list[float], list[float]] | None:
        """The support of the standardized data, ``(lo - m) / s`` (infinite sides stay so)."""
        if self.low is None or self.high is None:
            return None
        with np.errstate(over="ignore", invalid="ignore"):
            low = np.where(np.isfinite(self.low), self.forward(self.low), -np.inf)
            high = np.where(np.isfinite(self.high), self.forward(self.high), np.inf)
        return low.tolist(), high.tolist()

    @property
    def log_scale(self) -> float:
        """``sum(log s)``: what standardizing subtracts from every log-density."""
        return float(np.log(self.std).sum())


def default_flow() -> str:
    """``nsf`` when a package provides it, else ``maf``."""
    from flows.core.plugins import list_presets

    names = {p.spec.name for p in list_presets()}
    return "nsf" if "nsf" in names else "maf"


def build_flow(
    name: str, features: int, context: int, hyper: dict[str, Any], support: Any = None
) -> Any:
    """Construct the preset ``name`` with the hyper-parameters it accepts.

    ``hyper`` maps argument names to ``(option, value)``; an option the preset does not take,
    or whose value does not have the type of the preset's annotation (or default), is reported
    by its command-line name before anything is built. ``support`` (the standardized data's,
    ``(low, high)``) is given to the preset, which must then be a :class:`flows.core.Preset`.

    Raises:
        CLIError: An option the preset does not take, of the wrong type, or that it refuses.
        RegistryError: The preset, or a transform it is built from, is unknown or provided
            twice (its own message says which and what to do).
    """
    from flows.core.plugins import RegistryError, get_preset

    constructor = get_preset(name)
    if support is not None:
        from flows.core.presets import Preset

        if not (inspect.isclass(constructor) and issubclass(constructor, Preset)):
            raise CLIError(
                f"--support: flow {name!r} takes no support (it is not a flows.core.Preset)"
            )
    parameters = inspect.signature(constructor).parameters
    hints = _type_hints(constructor)
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    arguments: dict[str, Any] = {}
    for key, (option, value) in hyper.items():
        if key == "support":
            raise CLIError(f"{option}: give the support with --support, in the data's units")
        if key in ("features", "context"):
            raise CLIError(
                f"{option}: the number of {key} is set by the data; choose the columns with "
                "--columns and --context-columns"
            )
        if key not in parameters and not open_ended:
            raise CLIError(
                f"flow {name!r} does not take {option} (it takes: "
                f"{', '.join(p for p in parameters if p not in ('features', 'context'))})"
            )
        if key in parameters:
            expected = hints.get(key, _default_type(parameters[key]))
            if expected is not None and not _accepts(expected, value):
                raise CLIError(
                    f"{option}: flow {name!r} expects {_describe(expected)}, got {_json(value)}"
                )
        arguments[key] = value
    if support is not None:
        arguments["support"] = support
    try:
        return constructor(features=features, context=context, **arguments)
    except RegistryError:
        raise  # a transform the preset needs is missing or provided twice: not the options
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


def _json(value: Any) -> str:
    """``value`` as the user wrote it: JSON, or the bare text that was not JSON."""
    if isinstance(value, str):
        return repr(value)
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _type_hints(constructor: Any) -> dict[str, Any]:
    target = constructor.__init__ if inspect.isclass(constructor) else constructor
    try:
        return typing.get_type_hints(target)
    except Exception:  # annotations naming what cannot be imported: judge by the defaults
        return {}


def _default_type(parameter: inspect.Parameter) -> Any:
    default = parameter.default
    return type(default) if type(default) in (bool, int, float, str) else None


_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)
_MAPPINGS = (dict, collections.abc.Mapping)


def _accepts(expected: Any, value: Any) -> bool:
    """Whether the JSON ``value`` has the annotated type (unknown annotations accept)."""
    origin = typing.get_origin(expected) or expected
    arguments = typing.get_args(expected)
    if expected is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(option, value) for option in arguments)
    if expected is type(None) or expected is None:
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        return number and math.isfinite(value)
    if expected is str:
        return isinstance(value, str)
    if origin in _SEQUENCES:
        if not isinstance(value, (list, tuple)):
            return False
        if origin is tuple and arguments and arguments[-1] is not Ellipsis:
            return len(value) == len(arguments) and all(map(_accepts, arguments, value))
        item = arguments[0] if arguments else Any
        return all(_accepts(item, v) for v in value)
    if origin in _MAPPINGS:
        return isinstance(value, dict)
    return True  # a type JSON cannot spell: the preset judges the value itself


def _describe(expected: Any) -> str:
    origin = typing.get_origin(expected) or expected
    arguments = typing.get_args(expected)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(option) for option in arguments)
    if expected is type(None) or expected is None:
        return "null"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if expected in names:
        return names[expected]
    if origin in _SEQUENCES:
        item = arguments[0] if arguments else Any
        return "a list" + ("" if item is Any else f" of {_describe(item)}s").replace("an ", "")
    if origin in _MAPPINGS:
        return "a JSON object"
    return getattr(expected, "__name__", str(expected))


def load_model(path: str) -> tuple[Any, dict[str, Any], str]:
    """Load a ``flows fit`` checkpoint: the flow, its metadata, and the preset name.

    Raises:
        CLIError: The checkpoint lacks the data statistics, or its column names, means or
            standard deviations do not fit its flow (the message names the file and field).
    """
    from flows.core.checkpoint import load

    checkpoint = load(path)
    extra = checkpoint.extra
    needed = ("columns", "mean", "std")
    if any(key not in extra for key in needed):
        raise CLIError(
            f"{path!r} is a flows checkpoint but not one written by `flows fit` "
            "(it lacks the data statistics)"
        )
    _check_extra(extra, checkpoint.arguments, path)
    checkpoint.flow.eval()
    return checkpoint.flow, extra, checkpoint.preset


def _check_extra(extra: dict[str, Any], arguments: dict[str, Any], path: str) -> None:
    """Refuse statistics no ``flows fit`` writes: the flow would answer NaN or nonsense."""
    where = f"checkpoint {path!r}"
    for prefix, field, what in (
        ("", "columns", "features"),
        ("context_", "context_columns", "context"),
    ):
        names = extra.get(field, [])
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
            raise CLIError(f"{where}: {field!r} must be a list of column names, got {names!r}")
        width = arguments.get(what, 0 if what == "context" else None)
        if isinstance(width, int) and len(names) != width:
            raise CLIError(
                f"{where}: {field!r} names {len(names)} column(s) but its flow has {width} "
                f"{'features' if what == 'features' else 'context features'}"
            )
        if not names:
            continue
        _check_support(extra.get(prefix + "support"), len(names), where, prefix + "support")
        for statistic in ("mean", "std"):
            key = prefix + statistic
            values = _numbers(extra.get(key))
            if values is None or len(values) != len(names):
                raise CLIError(
                    f"{where}: {key!r} must hold {len(names)} number(s), one per column in "
                    f"{field!r}, got {extra.get(key)!r}"
                )
            array = np.asarray(values, dtype=np.float64)
            good = np.isfinite(array) & ((array > 0) if statistic == "std" else True)
            if not good.all():
                i = int(np.flatnonzero(~good)[0])
                rule = (
                    "a standard deviation must be positive and finite"
                    if statistic == "std"
                    else "a mean must be finite"
                )
                raise CLIError(
                    f"{where}: {key!r} holds {values[i]!r} for column {names[i]!r}; {rule}"
                )


def _check_support(support: Any, width: int, where: str, key: str) -> None:
    """Refuse a recorded support that is not two lists of bounds, one per column, lo < hi."""
    if support is None:
        return
    pair = support if isinstance(support, (list, tuple)) and len(support) == 2 else None
    low, high = (None, None) if pair is None else (_numbers(pair[0]), _numbers(pair[1]))
    if low is None or high is None or len(low) != width or len(high) != width:
        raise CLIError(
            f"{where}: {key!r} must hold two lists of {width} bound(s), got {support!r}"
        )
    for lo, hi in zip(low, high, strict=True):
        if not lo < hi or lo == math.inf or hi == -math.inf:
            raise CLIError(f"{where}: {key!r} holds the empty range ({lo}, {hi})")


def _numbers(value: Any) -> list[float] | None:
    if hasattr(value, "tolist"):
        value = value.tolist()  # a tensor written by hand: judge its entries
    if not isinstance(value, (list, tuple)):
        return None
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    return list(value)
