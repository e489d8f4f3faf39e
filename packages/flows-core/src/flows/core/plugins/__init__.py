"""The plugin registry: find transforms and presets by name, from any installed package.

A plugin author needs only :data:`hookimpl` and the two spec classes. Importing this module
does no discovery and imports no torch; the first lookup does the discovery.

Example:
    >>> from flows.core.plugins import get_preset
    >>> get_preset("maf").__name__
    'MAF'
"""

from flows.core.plugins.hookspecs import hookimpl
from flows.core.plugins.registry import (
    FlowsPluginWarning,
    PluginInfo,
    Provided,
    RegistryError,
    get_preset,
    get_transform,
    list_presets,
    list_transforms,
    plugin_report,
    preset_spec,
    register,
    reset,
    transform_spec,
    unregister,
)
from flows.core.plugins.specs import PresetSpec, TransformSpec

__all__ = [
    "FlowsPluginWarning",
    "PluginInfo",
    "PresetSpec",
    "Provided",
    "RegistryError",
    "TransformSpec",
    "get_preset",
    "get_transform",
    "hookimpl",
    "list_presets",
    "list_transforms",
    "plugin_report",
    "preset_spec",
    "register",
    "reset",
    "transform_spec",
    "unregister",
]
