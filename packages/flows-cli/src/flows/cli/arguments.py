"""Argument types of the ``flows`` command and the error every command raises for the user.

Each type refuses a bad value with a message naming what is accepted; argparse prints it after
the usage line. :class:`CLIError` is a failure the user can fix, printed as one line.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

__all__ = [
    "MAX_SAMPLES",
    "CLIError",
    "fraction",
    "hidden_sizes",
    "key_value",
    "non_negative_int",
    "positive_float",
    "positive_int",
    "preset_name",
    "sample_count",
    "support_ranges",
]

#: The most rows ``--samples`` may generate: 10 million 2-D rows are 160 MB of float64, and a
#: typo of a few more zeros would otherwise ask for terabytes.
MAX_SAMPLES = 10_000_000


class CLIError(Exception):
    """A failure the user can fix; printed as one line, without a traceback."""


def _parsed(
    text: str, convert: Callable[[str], Any], valid: Callable[[Any], bool], what: str
) -> Any:
    """``convert(text)`` if it parses and is ``valid``, else argparse's error naming ``what``."""
    try:
        value = convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if not valid(value):
        raise argparse.ArgumentTypeError(f"expected {what}, got {text}")
    return value


def positive_int(text: str) -> int:
    return int(_parsed(text, int, lambda value: value >= 1, "a positive integer"))


def sample_count(text: str) -> int:
    """A positive number of rows to generate, at most :data:`MAX_SAMPLES`."""
    value = positive_int(text)
    if value > MAX_SAMPLES:
        raise argparse.ArgumentTypeError(f"expected at most {MAX_SAMPLES:,} rows, got {value:,}")
    return value


def non_negative_int(text: str) -> int:
    return int(_parsed(text, int, lambda value: value >= 0, "an integer >= 0"))


def positive_float(text: str) -> float:
    return float(
        _parsed(text, float, lambda value: 0 < value < math.inf, "a positive finite number")
    )


def fraction(text: str) -> float:
    return float(_parsed(text, float, lambda value: 0 <= value < 1, "a fraction in [0, 1)"))


def hidden_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive layer widths separated by commas (e.g. 64,64), got {text!r}"
        )
    return sizes


def preset_name(text: str) -> str:
    """A non-empty preset name, lower-cased (whether it is installed is checked later)."""
    name = text.strip().lower()
    if not name:
        raise argparse.ArgumentTypeError(
            "expected the name of a preset (see `flows list-flows`), got an empty string"
        )
    return name


def key_value(text: str) -> tuple[str, Any]:
    import json

    key, sep, raw = text.partition("=")
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. randperm=true), got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return key, value


def support_ranges(text: str) -> list[tuple[float, float]]:
    """Ranges ``lo:hi`` separated by commas, an empty side unbounded: ``0:1,0:,:``.

    Example:
        >>> support_ranges("0:1,-2.5:,:")
        [(0.0, 1.0), (-2.5, inf), (-inf, inf)]
    """
    ranges = []
    for part in text.split(","):
        lo_text, sep, hi_text = part.strip().partition(":")
        try:
            if not sep:
                raise ValueError(part)
            lo = float(lo_text) if lo_text.strip() else -math.inf
            hi = float(hi_text) if hi_text.strip() else math.inf
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected lo:hi ranges separated by commas, one per column or one for all, "
                f"an empty side unbounded (e.g. 0:1 or 0:,:10), got {text!r}"
            ) from None
        if math.isnan(lo) or math.isnan(hi) or not lo < hi or lo == math.inf or hi == -math.inf:
            raise argparse.ArgumentTypeError(
                f"expected lo < hi in each range, got {part.strip()!r} in {text!r}"
            )
        ranges.append((lo, hi))
    return ranges
