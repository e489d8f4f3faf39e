r"""Argument checks shared by the network constructors."""

from __future__ import annotations

__all__ = ["check_features", "check_hidden_features"]

import operator
from collections.abc import Sequence


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def check_features(name: str, value: object) -> int:
    r"""Returns :py:`value` as an :py:`int` if it is a positive integer.

    Raises:
        TypeError: if :py:`value` is not an integer.
        ValueError: if :py:`value` is not positive.
    """

    integer = _as_int(value)
    if integer is None:
        raise TypeError(f"{name} must be a positive integer, got {value!r}")
    if integer < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return integer


def check_hidden_features(value: object) -> tuple[int, ...]:
    r"""Returns :py:`value` as a tuple of :py:`int` if it is a sequence of positive integers.

    Raises:
        TypeError: if :py:`value` is not a sequence.
        ValueError: if an entry is not a positive integer.
    """

    expected = "a sequence of positive integers such as (64, 64)"
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"hidden_features must be {expected}, got {value!r}")
    widths = []
    for entry in value:
        width = _as_int(entry)
        if width is None or width < 1:
            raise ValueError(
                f"hidden_features must be {expected}, got {value!r} (bad entry {entry!r})"
            )
        widths.append(width)
    return tuple(widths)
