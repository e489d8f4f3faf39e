r"""The base of every preset: it records the arguments that rebuild the preset, once.

A preset's ``arguments`` are the keyword arguments that rebuild its architecture,
``type(flow)(**flow.arguments)``: :func:`flows.core.save` stores them beside the weights and
:func:`flows.core.load` calls the preset with them. :class:`Preset` binds them from the
constructor's own signature, so no preset lists its parameters a second time.
"""

from __future__ import annotations

__all__ = ["Preset"]

import functools
import inspect
from collections.abc import Callable
from typing import Any

# The arguments are recorded by name, to rebuild a preset with keywords alone.
_REFUSED = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.VAR_POSITIONAL)


class Preset:
    r"""A mixin that sets ``self.arguments`` to the arguments its constructor was called with.

    Each subclass's ``__init__`` is wrapped when the class is created. When the outermost
    constructor returns (that of ``type(self)``, not those it reaches through ``super()``),
    ``self.arguments`` maps each of its parameters to the value given, or to its default, in
    the order of its signature, followed by the extra keyword arguments (``**kwargs``) in the
    order given. The values are those given, not copies nor conversions: a list stays a list
    and a tuple a tuple. Arguments passed by position are recorded by name, so a constructor
    may not take positional-only parameters nor ``*args``.

    Every preset also takes the keyword ``support``: ``(low, high)``, with floats or one per
    feature, or a :mod:`torch.distributions.constraints` object (see
    :func:`flows.core.support.normalize_support`). Its distributions then sample inside the
    support, their ``log_prob`` :math:`-\infty` outside (see :func:`flows.core.with_support`),
    and ``arguments["support"]`` records it in plain floats, for checkpoints. Without a
    support, nothing changes: neither the parameters nor ``arguments``.

    Example:
        >>> from torch import nn
        >>> class Tiny(Preset, nn.Module):
        ...     def __init__(self, features: int, scale: float = 1.0, **kwargs: Any) -> None:
        ...         super().__init__()
        ...         self.linear = nn.Linear(features, features)
        >>> Tiny(2, hidden_features=(8,)).arguments
        {'features': 2, 'scale': 1.0, 'hidden_features': (8,)}
        >>> class Bigger(Tiny):
        ...     def __init__(self, features: int, factor: int = 2) -> None:
        ...         super().__init__(features * factor, scale=0.5)
        >>> Bigger(3).arguments
        {'features': 3, 'factor': 2}
        >>> Bigger(3, support=(0, float("inf"))).arguments
        {'features': 3, 'factor': 2, 'support': (0.0, inf)}
    """

    arguments: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = _recording(cls, init)  # type: ignore[method-assign]


def _recording(cls: type, init: Callable[..., None]) -> Callable[..., None]:
    """``init``, which then records the arguments if it is the outermost constructor."""
    signature = inspect.signature(init)
    for parameter in list(signature.parameters.values())[1:]:
        if parameter.kind in _REFUSED:
            what = (
                f"*{parameter.name}"
                if parameter.kind is inspect.Parameter.VAR_POSITIONAL
                else f"{parameter.name}, /"
            )
            raise TypeError(
                f"{cls.__qualname__}.__init__ cannot build a preset: its parameter {what} "
                "cannot be passed by keyword, so its arguments could not rebuild it"
            )

    @functools.wraps(init)
    def __init__(self: Preset, *args: Any, **kwargs: Any) -> None:
        outermost = type(self).__init__ is __init__
        # A constructor of its own "support" parameter keeps it; every other one is given it.
        taken = outermost and "support" not in signature.parameters
        support = kwargs.pop("support", None) if taken else None
        if support is not None:
            support = _normalized(signature, self, args, kwargs, support)
        init(self, *args, **kwargs)
        if outermost:
            self.arguments = _bound(signature, self, args, kwargs)
            if support is not None:
                from flows.core.support import attach_support

                attach_support(self, support)  # type: ignore[arg-type]
                self.arguments["support"] = support

    return __init__


def _normalized(
    signature: inspect.Signature,
    self: Preset,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    support: Any,
) -> Any:
    """``support`` in plain floats, checked against the preset's ``features`` before it is
    built, so that a bad support costs no construction."""
    from flows.core.support import normalize_support

    try:
        features = signature.bind(self, *args, **kwargs).arguments.get("features")
    except TypeError:  # the constructor itself says what is wrong with its arguments
        features = None
    if isinstance(features, bool) or not isinstance(features, int):
        features = None
    return normalize_support(support, features)


def _bound(
    signature: inspect.Signature, self: Preset, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    bound = signature.bind(self, *args, **kwargs)
    bound.apply_defaults()
    arguments: dict[str, Any] = {}
    for name, value in list(bound.arguments.items())[1:]:
        if signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(value)
        else:
            arguments[name] = value
    return arguments
