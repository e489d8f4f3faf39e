"""The hooks a flows plugin may implement.

A plugin is a module (or any object) whose functions are marked with
:data:`flows.core.plugins.hookimpl` and named after one of the hooks below. Hooks take no
arguments and return a list of specs; the registry collects them from every plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from flows.core.plugins.specs import PresetSpec, TransformSpec

__all__ = ["PROJECT", "hookimpl", "hookspec"]

#: The pluggy project name, which is also the entry-point group plugins declare.
PROJECT = "flows"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def flows_register_transforms() -> list[TransformSpec]:
    """Return the univariate transforms this plugin provides.

    Example:
        >>> from flows.core.plugins import TransformSpec, hookimpl
        >>> @hookimpl
        ... def flows_register_transforms():
        ...     return [
        ...         TransformSpec(
        ...             name="shift",
        ...             constructor="my_package.shift:ShiftTransform",
        ...             shapes=lambda: [()],
        ...             summary="y = x + b",
        ...         )
        ...     ]
    """


@hookspec
def flows_register_presets() -> list[PresetSpec]:
    """Return the presets (lazy distributions such as ``MAF``) this plugin provides.

    Example:
        >>> from flows.core.plugins import PresetSpec, hookimpl
        >>> @hookimpl
        ... def flows_register_presets():
        ...     return [
        ...         PresetSpec(
        ...             name="shiftflow",
        ...             constructor="my_package.presets:ShiftFlow",
        ...             summary="A flow of learned shifts",
        ...             transforms=("shift",),
        ...         )
        ...     ]
    """
