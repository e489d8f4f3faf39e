"""Deferred exports: a package names its public objects but imports them on first use.

This keeps ``import flows.core`` (and ``flows.splines``, ``flows.ode``, whose plugin modules
are imported while listing what is installed) free of torch.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["deferred_exports"]


def deferred_exports(
    package: str, exports: Mapping[str, str], submodules: Iterable[str] = ()
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build a package's module ``__getattr__`` and ``__dir__`` (PEP 562).

    Arguments:
        package: The package's ``__name__``.
        exports: Public name -> the module that defines it; imported on first access, then
            cached in the package's namespace.
        submodules: Submodule names reachable as attributes (imported on first access).

    Example:
        >>> import types, sys
        >>> package = types.ModuleType("demo")
        >>> sys.modules["demo"] = package
        >>> package.__getattr__, _ = deferred_exports("demo", {"sqrt": "math"})
        >>> package.sqrt(4.0)
        2.0
        >>> del sys.modules["demo"]
    """
    submodules = tuple(submodules)

    def __getattr__(name: str) -> Any:
        namespace = vars(sys.modules[package])
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            namespace[name] = value
            return value
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*vars(sys.modules[package]), *exports, *submodules})

    return __getattr__, __dir__
