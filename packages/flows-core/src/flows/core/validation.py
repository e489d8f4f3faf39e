r"""Argument checks for counts, positive numbers, fractions, sizes, shapes and choices.

Every constructor and hook of the flows packages checks its arguments with these functions, so
a bad argument is refused the same way everywhere: a :class:`TypeError` when the value has the
wrong type, a :class:`ValueError` when it is out of range, the message naming the argument, what
it must be and the value given, optionally after its owner (``"MAF: transforms must be ..."``).
The module imports no torch: plugin hooks use it while listing what is installed.

Example:
    >>> check_count("transforms", 3)
    3
    >>> check_count("transforms", 0, owner="MAF")
    Traceback (most recent call last):
        ...
    ValueError: MAF: transforms must be an int >= 1, got 0
    >>> check_fraction("validation", 1.0, one=False)
    Traceback (most recent call last):
        ...
    ValueError: validation must be a fraction in [0, 1), got 1.0
"""

from __future__ import annotations

__all__ = [
    "check_choice",
    "check_count",
    "check_event_shape",
    "check_fraction",
    "check_positive",
    "check_shape",
    "check_sizes",
]

import math
from collections.abc import Collection, Sequence
from typing import Literal, TypeGuard, TypeVar, overload

T = TypeVar("T")


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int to Python, never a count to a user.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _refuse(
    error: type[Exception], owner: str | None, name: str, what: str, value: object
) -> Exception:
    prefix = f"{owner}: " if owner else ""
    return error(f"{prefix}{name} must be {what}, got {value!r}")


@overload
def check_count(
    name: str,
    value: object,
    *,
    minimum: int = ...,
    optional: Literal[False] = ...,
    owner: str | None = ...,
) -> int: ...


@overload
def check_count(
    name: str, value: object, *, minimum: int = ..., optional: bool, owner: str | None = ...
) -> int | None: ...


def check_count(
    name: str,
    value: object,
    *,
    minimum: int = 1,
    optional: bool = False,
    owner: str | None = None,
) -> int | None:
    r"""Check that ``value`` is an int (not a bool) of at least ``minimum``.

    Arguments:
        name: The argument's name, as the caller knows it.
        value: The value given.
        minimum: The smallest count accepted.
        optional: Whether ``None`` is accepted too.
        owner: The function or class the argument belongs to, if the message should say.

    Returns:
        ``value``, unchanged.

    Raises:
        TypeError: ``value`` is not an int (a bool, a float, a NumPy integer, ...).
        ValueError: ``value`` is smaller than ``minimum``.

    Example:
        >>> check_count("context", 0, minimum=0)
        0
        >>> check_count("epochs", None, optional=True) is None
        True
        >>> check_count("bins", 2.0)
        Traceback (most recent call last):
            ...
        TypeError: bins must be an int >= 1, got 2.0
        >>> check_count("features", 1, minimum=2, owner="RealNVP")
        Traceback (most recent call last):
            ...
        ValueError: RealNVP: features must be an int >= 2, got 1
    """
    if value is None and optional:
        return None
    what = f"an int >= {minimum}" + (" or None" if optional else "")
    if not _is_int(value):
        raise _refuse(TypeError, owner, name, what, value)
    if value < minimum:
        raise _refuse(ValueError, owner, name, what, value)
    return value


@overload
def check_positive(
    name: str,
    value: object,
    *,
    finite: bool = ...,
    optional: Literal[False] = ...,
    owner: str | None = ...,
) -> float: ...


@overload
def check_positive(
    name: str, value: object, *, finite: bool = ..., optional: bool, owner: str | None = ...
) -> float | None: ...


def check_positive(
    name: str,
    value: object,
    *,
    finite: bool = False,
    optional: bool = False,
    owner: str | None = None,
) -> float | None:
    r"""Check that ``value`` is a real number (an int or a float, not a bool) :math:`> 0`.

    NaN is refused; infinity too when ``finite``.

    Arguments:
        name: The argument's name, as the caller knows it.
        value: The value given.
        finite: Whether infinity is refused.
        optional: Whether ``None`` is accepted too.
        owner: The function or class the argument belongs to, if the message should say.

    Returns:
        ``value``, unchanged.

    Raises:
        TypeError: ``value`` is not an int or a float.
        ValueError: ``value`` is not positive, or not finite when ``finite``.

    Example:
        >>> check_positive("atol", 1e-6)
        1e-06
        >>> check_positive("lr", float("inf"), finite=True)
        Traceback (most recent call last):
            ...
        ValueError: lr must be a finite positive number, got inf
        >>> check_positive("clip_grad", "1", optional=True)
        Traceback (most recent call last):
            ...
        TypeError: clip_grad must be a positive number or None, got '1'
    """
    if value is None and optional:
        return None
    what = ("a finite positive number" if finite else "a positive number") + (
        " or None" if optional else ""
    )
    if not _is_real(value):
        raise _refuse(TypeError, owner, name, what, value)
    if not value > 0 or (finite and math.isinf(value)):
        raise _refuse(ValueError, owner, name, what, value)
    return value


def check_fraction(
    name: str,
    value: object,
    *,
    zero: bool = True,
    one: bool = True,
    owner: str | None = None,
) -> float:
    r"""Check that ``value`` is a real number in :math:`[0, 1]`, a probability or a fraction.

    Arguments:
        name: The argument's name, as the caller knows it.
        value: The value given.
        zero: Whether 0 is accepted.
        one: Whether 1 is accepted.
        owner: The function or class the argument belongs to, if the message should say.

    Returns:
        ``value``, unchanged.

    Raises:
        TypeError: ``value`` is not an int or a float.
        ValueError: ``value`` is outside the interval (NaN included).

    Example:
        >>> check_fraction("p", 1)
        1
        >>> check_fraction("slope", 0.0, zero=False, one=False)
        Traceback (most recent call last):
            ...
        ValueError: slope must be a fraction in (0, 1), got 0.0
    """
    what = f"a fraction in {'[' if zero else '('}0, 1{']' if one else ')'}"
    if not _is_real(value):
        raise _refuse(TypeError, owner, name, what, value)
    low = value >= 0 if zero else value > 0
    high = value <= 1 if one else value < 1
    if not (low and high):
        raise _refuse(ValueError, owner, name, what, value)
    return value


def _check_ints(
    name: str, value: object, minimum: int, what: str, owner: str | None
) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _refuse(TypeError, owner, name, what, value)
    for i, entry in enumerate(value):
        if not _is_int(entry) or entry < minimum:
            error = TypeError if not _is_int(entry) else ValueError
            prefix = f"{owner}: " if owner else ""
            raise error(f"{prefix}{name} must be {what}, got {value!r} ({name}[{i}] is {entry!r})")
    return tuple(value)


def check_sizes(name: str, value: object, *, owner: str | None = None) -> tuple[int, ...]:
    r"""Check that ``value`` is a sequence (a list, a tuple, ...) of positive ints.

    Such are the widths of hidden layers; the sequence may be empty.

    Arguments:
        name: The argument's name, as the caller knows it.
        value: The value given.
        owner: The function or class the argument belongs to, if the message should say.

    Returns:
        The sizes, as a tuple.

    Raises:
        TypeError: ``value`` is not a sequence (a string is not), or an entry not an int.
        ValueError: An entry is smaller than 1.

    Example:
        >>> check_sizes("hidden_features", [64, 64])
        (64, 64)
        >>> check_sizes("hidden_features", (64, 0))
        Traceback (most recent call last):
            ...
        ValueError: hidden_features must be a sequence of ints >= 1, got (64, 0) (hidden_features[1] is 0)
    """  # noqa: E501
    return _check_ints(name, value, 1, "a sequence of ints >= 1", owner)


def check_shape(name: str, value: object, *, owner: str | None = None) -> tuple[int, ...]:
    r"""Check that ``value`` is a shape: a sequence of ints :math:`\geq 0`, such as ``(3, 4)``.

    A ``torch.Size`` is one; ``()`` is the shape of a scalar.

    Arguments:
        name: The argument's name, as the caller knows it.
        value: The value given.
        owner: The function or class the argument belongs to, if the message should say.

    Returns:
        The shape, as a tuple.

    Raises:
        TypeError: ``value`` is not a sequence (a bare int is not), or an entry not an int.
        ValueError: An entry is negative.

    Example:
        >>> check_shape("event_shape", [2, 0])
        (2, 0)
        >>> check_shape("event_shape", 3)
        Traceback (most recent call last):
            ...
        TypeError: event_shape must be a shape (a sequence of ints >= 0), got 3
    """
    return _check_ints(name, value, 0, "a shape (a sequence of ints >= 0)", owner)


def check_event_shape(name: str, shape: Sequence[int], event: Sequence[int]) -> None:
    """Check that a value of shape ``shape`` is a batch of events of shape ``event``.

    Distributions broadcast their argument's batch dimensions, not its event dimensions: a
    narrower value would otherwise broadcast against a transform's parameters and get a
    density it has no meaning for.

    Raises:
        ValueError: ``shape`` does not end in ``event``.

    Example:
        >>> check_event_shape("x", (5, 2), (2,))
        >>> check_event_shape("x", (5, 1), (2,))
        Traceback (most recent call last):
            ...
        ValueError: x must have shape (*, 2), the distribution's event shape, got (5, 1)
    """
    cut = len(shape) - len(event)
    if cut < 0 or tuple(shape[cut:]) != tuple(event):
        wanted = "".join(f", {size}" for size in event)
        raise ValueError(
            f"{name} must have shape (*{wanted}), the distribution's event shape, got "
            f"{tuple(shape)}"
        )


def check_choice(name: str, value: T, choices: Collection[T], *, owner: str | None = None) -> T:
    r"""Check that ``value`` is one of ``choices``.

    Arguments:
        name: The argument's name, as the caller knows it.
        value: The value given.
        choices: The values accepted, in the order the message lists them.
        owner: The function or class the argument belongs to, if the message should say.

    Returns:
        ``value``, unchanged.

    Raises:
        ValueError: ``value`` is not one of ``choices``.

    Example:
        >>> check_choice("covariance_type", "diag", ("full", "diagonal"), owner="GMM")
        Traceback (most recent call last):
            ...
        ValueError: GMM: covariance_type must be one of 'full', 'diagonal', got 'diag'
    """
    if value not in choices:
        what = f"one of {', '.join(map(repr, choices))}"
        raise _refuse(ValueError, owner, name, what, value)
    return value
