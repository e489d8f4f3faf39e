"""The registry: which transforms and presets are installed, and who provides them.

Nothing happens at import. The plugin manager is built on the first lookup: core's built-in
plugin first, then every ``flows`` entry point of the installed distributions (unless
``FLOWS_DISABLE_PLUGIN_AUTOLOAD`` is set), then whatever user code passed to :func:`register`.
A plugin that fails to import, declares an unknown hook or raises in a hook is reported and
skipped; the others load.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
import os
import threading
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any, Generic, TypeVar

import pluggy

from flows.core.plugins import hookspecs
from flows.core.plugins.specs import PresetSpec, TransformSpec

__all__ = [
    "FlowsPluginWarning",
    "PluginInfo",
    "Provided",
    "RegistryError",
    "get_preset",
    "get_transform",
    "list_presets",
    "list_transforms",
    "plugin_report",
    "preset_spec",
    "register",
    "reset",
    "transform_spec",
    "unregister",
]

DISABLE_AUTOLOAD = "FLOWS_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN = "flows.core.plugins.builtin"

# Names our own packages provide, so that a missing one can be answered with what to install.
FIRST_PARTY = {
    **dict.fromkeys(
        ["rqs", "circular-rqs", "monotonic", "umnn", "sos", "bernstein", "bounded-bernstein"],
        "flows-splines",
    ),
    **dict.fromkeys(["nsf", "ncsf", "naf", "unaf", "sospf", "bpf"], "flows-splines"),
    "cnf": "flows-ode",
}

S = TypeVar("S", TransformSpec, PresetSpec)


class RegistryError(ValueError):
    """A name that is unknown, or provided twice."""


class FlowsPluginWarning(UserWarning):
    """A plugin failed to load or to register; the others are unaffected."""


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """One plugin as the registry saw it: where it comes from and whether it loaded."""

    name: str
    distribution: str
    version: str
    status: str  # "ok" or "failed"
    error: str = ""
    hooks: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Provided(Generic[S]):
    """A spec together with the plugin and distribution that provide it."""

    spec: S
    plugin: str
    distribution: str
    version: str


@dataclasses.dataclass
class _Plugin:
    name: str
    distribution: str
    version: str
    error: str = ""


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.manager: pluggy.PluginManager | None = None
        self.plugins: dict[str, _Plugin] = {}
        self.user: list[tuple[object, str | None]] = []
        self.transforms: dict[str, list[Provided[TransformSpec]]] | None = None
        self.presets: dict[str, list[Provided[PresetSpec]]] | None = None

    # Building the manager

    def ensure(self) -> pluggy.PluginManager:
        with self.lock:
            if self.manager is None:
                self.manager = pluggy.PluginManager(hookspecs.PROJECT)
                self.manager.add_hookspecs(hookspecs)
                self._add(importlib.import_module(BUILTIN), "core", _own_distribution())
                if not os.environ.get(DISABLE_AUTOLOAD):
                    self._load_entry_points()
                for plugin, name in self.user:
                    self._add(plugin, name, ("<registered>", ""))
            return self.manager

    def _load_entry_points(self) -> None:
        for dist in list(importlib.metadata.distributions()):
            for entry_point in dist.entry_points:
                if entry_point.group != hookspecs.PROJECT:
                    continue
                origin = (dist.metadata["name"] or "?", dist.version or "")
                if entry_point.name in self.plugins:
                    continue  # the same distribution seen twice on sys.path
                try:
                    plugin = entry_point.load()
                except Exception as error:  # any failure of third-party code
                    self._fail(entry_point.name, origin, error)
                    continue
                self._add(plugin, entry_point.name, origin)

    def _add(self, plugin: object, name: str | None, origin: tuple[str, str]) -> None:
        assert self.manager is not None
        try:
            name = self.manager.register(plugin, name)
        except Exception as error:  # pluggy refuses a malformed or duplicate plugin
            self._fail(name or repr(plugin), origin, error)
            return
        assert name is not None
        unknown = [
            caller.name for caller in self.manager.get_hookcallers(plugin) or [] if not caller.spec
        ]
        if unknown:
            self.manager.unregister(plugin)
            known = ", ".join(sorted(_hook_names()))
            error = LookupError(f"unknown hook(s) {', '.join(unknown)}; known hooks: {known}")
            self._fail(name, origin, error)
            return
        self.plugins[name] = _Plugin(name, *origin)
        self.transforms = self.presets = None

    def _fail(self, name: str, origin: tuple[str, str], error: BaseException) -> None:
        message = f"{type(error).__name__}: {error}"
        self.plugins[name] = _Plugin(name, *origin, error=message)
        warnings.warn(
            f"flows plugin {name!r} from {origin[0]} {origin[1]} failed and was skipped: "
            f"{message}",
            FlowsPluginWarning,
            stacklevel=4,
        )

    # Collecting specs

    def collect(self, hook: str, kind: type[S]) -> dict[str, list[Provided[S]]]:
        manager = self.ensure()
        found: dict[str, list[Provided[S]]] = {}
        for impl in getattr(manager.hook, hook).get_hookimpls():
            plugin = self.plugins[impl.plugin_name]
            if plugin.error:
                continue
            try:
                specs = list(impl.function() or [])
                for spec in specs:
                    if not isinstance(spec, kind):
                        raise TypeError(f"{hook} returned {spec!r}, not a {kind.__name__}")
            except Exception as error:  # any failure of third-party code
                self.manager.unregister(name=impl.plugin_name)  # type: ignore[union-attr]
                self._fail(impl.plugin_name, (plugin.distribution, plugin.version), error)
                return self.collect(hook, kind)
            for spec in specs:
                provided = Provided(spec, plugin.name, plugin.distribution, plugin.version)
                found.setdefault(spec.name, []).append(provided)
        return dict(sorted(found.items()))

    def table(self, kind: type[S]) -> dict[str, list[Provided[S]]]:
        with self.lock:
            if kind is TransformSpec:
                if self.transforms is None:
                    self.transforms = self.collect("flows_register_transforms", TransformSpec)
                return self.transforms  # type: ignore[return-value]
            if self.presets is None:
                self.presets = self.collect("flows_register_presets", PresetSpec)
            return self.presets  # type: ignore[return-value]

    def lookup(self, kind: type[S], name: str) -> Provided[S]:
        what = "transform" if kind is TransformSpec else "preset"
        if not isinstance(name, str):
            raise TypeError(f"{what} name must be a string, got {type(name).__name__}")
        table = self.table(kind)
        providers = table.get(name.lower())
        if not providers:
            raise RegistryError(_unknown(what, name, sorted(table)))
        if len(providers) > 1:
            both = " and ".join(f"{p.distribution} {p.version} ({p.plugin})" for p in providers)
            raise RegistryError(
                f"{what} {name!r} is provided by both {both}; uninstall one of them"
            )
        return providers[0]


def _hook_names() -> list[str]:
    return [name for name in dir(hookspecs) if name.startswith("flows_")]


def _own_distribution() -> tuple[str, str]:
    try:
        return "flows-core", importlib.metadata.version("flows-core")
    except importlib.metadata.PackageNotFoundError:
        return "flows-core", ""


def _unknown(what: str, name: str, available: list[str]) -> str:
    message = f"unknown {what} {name!r}"
    package = FIRST_PARTY.get(name.lower())
    if package is not None:
        message += f": {name!r} is provided by {package}: pip install {package}"
    else:
        close = difflib.get_close_matches(name.lower(), available, n=3)
        if close:
            message += f"; did you mean {' or '.join(repr(c) for c in close)}?"
    return message + f" (available: {', '.join(available) or 'none'})"


_REGISTRY = _Registry()


def transform_spec(name: str) -> Provided[TransformSpec]:
    """The spec of the univariate transform registered as ``name``, with its provider.

    Raises:
        RegistryError: ``name`` is unknown (the message lists what is available and, for our
            own names, the package to install) or provided by two distributions.

    Example:
        >>> transform_spec("affine").spec.constructor
        'flows.core.transforms:MonotonicAffineTransform'
    """
    return _REGISTRY.lookup(TransformSpec, name)


def preset_spec(name: str) -> Provided[PresetSpec]:
    """The spec of the preset registered as ``name``, with its provider.

    Example:
        >>> preset_spec("maf").distribution
        'flows-core'
    """
    return _REGISTRY.lookup(PresetSpec, name)


def get_transform(name: str) -> Callable[..., Any]:
    """The constructor of the univariate transform registered as ``name`` (imported now).

    Example:
        >>> get_transform("affine").__name__
        'MonotonicAffineTransform'
    """
    return transform_spec(name).spec.load()


def get_preset(name: str) -> Callable[..., Any]:
    """The preset registered as ``name`` (imported now), ready to call.

    Example:
        >>> flow = get_preset("maf")(features=2, transforms=1)
        >>> flow().sample((4,)).shape
        torch.Size([4, 2])
    """
    return preset_spec(name).spec.load()


def list_transforms() -> list[Provided[TransformSpec]]:
    """Every registered transform, sorted by name; imports no constructor."""
    return [p for providers in _REGISTRY.table(TransformSpec).values() for p in providers]


def list_presets() -> list[Provided[PresetSpec]]:
    """Every registered preset, sorted by name; imports no constructor."""
    return [p for providers in _REGISTRY.table(PresetSpec).values() for p in providers]


def plugin_report() -> list[PluginInfo]:
    """Each plugin seen: its distribution, version, status and the hooks it implements."""
    manager = _REGISTRY.ensure()
    report = []
    for plugin in _REGISTRY.plugins.values():
        module = manager.get_plugin(plugin.name)
        hooks = (
            tuple(sorted(c.name for c in manager.get_hookcallers(module) or [])) if module else ()
        )
        report.append(
            PluginInfo(
                name=plugin.name,
                distribution=plugin.distribution,
                version=plugin.version,
                status="failed" if plugin.error else "ok",
                error=plugin.error,
                hooks=hooks,
            )
        )
    return report


def register(plugin: object, name: str | None = None) -> str:
    """Add a plugin from user code or a test, without installing anything.

    ``plugin`` is a module or an object whose methods are marked with ``hookimpl``. It stays
    registered until :func:`unregister`.

    Example:
        >>> from flows.core.plugins import TransformSpec, hookimpl
        >>> class Shift:
        ...     @hookimpl
        ...     def flows_register_transforms(self):
        ...         return [
        ...             TransformSpec(
        ...                 "doc-shift",
        ...                 "flows.core.transforms:AdditiveTransform",
        ...                 shapes=lambda: [()],
        ...                 summary="y = x + b",
        ...             )
        ...         ]
        >>> plugin = Shift()
        >>> _ = register(plugin)
        >>> transform_spec("doc-shift").distribution
        '<registered>'
        >>> unregister(plugin)
    """
    with _REGISTRY.lock:
        _REGISTRY.user.append((plugin, name))
        if _REGISTRY.manager is not None:
            _REGISTRY._add(plugin, name, ("<registered>", ""))
        _REGISTRY.transforms = _REGISTRY.presets = None
        return name or _plugin_name(plugin)


def unregister(plugin: object) -> None:
    """Remove a plugin added with :func:`register`."""
    with _REGISTRY.lock:
        _REGISTRY.user = [(p, n) for p, n in _REGISTRY.user if p is not plugin]
        manager = _REGISTRY.manager
        if manager is not None and manager.is_registered(plugin):
            name = manager.get_name(plugin)
            manager.unregister(plugin)
            _REGISTRY.plugins.pop(name, None)  # type: ignore[arg-type]
        _REGISTRY.transforms = _REGISTRY.presets = None


def reset() -> None:
    """Forget everything discovered; the next lookup discovers again (user plugins stay)."""
    with _REGISTRY.lock:
        _REGISTRY.manager = None
        _REGISTRY.plugins = {}
        _REGISTRY.transforms = _REGISTRY.presets = None


def _plugin_name(plugin: object) -> str:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    return str(id(plugin))
