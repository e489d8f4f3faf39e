"""The registry: which transforms and presets are installed, and who provides them.

Nothing happens at import. The plugin manager is built on the first lookup: core's built-in
plugin first, then every ``flows`` entry point of the installed distributions, our own
distributions' first (unless autoload is disabled, below), then whatever user code passed to
:func:`register`.

No plugin can take the registry down, nor pass for another. Each of these is skipped with a
:class:`FlowsPluginWarning` naming the plugin, its distribution and the reason, and shown as
``failed`` by :func:`plugin_report`, while the others load:

- a plugin that fails to import, declares an unknown hook, raises in a hook or returns
  something other than a list of specs; "raises" means any exception, ``SystemExit`` included,
  except ``KeyboardInterrupt``;
- a distribution whose ``entry_points.txt`` cannot be read or parsed, even one that declares no
  ``flows`` plugin (it would otherwise break every lookup);
- an entry point whose name another distribution already uses: the first-party (else the
  first) one keeps the name and the message names both. The same distribution seen twice on
  ``sys.path`` is one distribution: its first copy is used, as ``import`` does.

``FLOWS_DISABLE_PLUGIN_AUTOLOAD`` set to ``1``, ``true``, ``yes`` or ``on`` (any case) skips the
entry points; unset, empty, ``0``, ``false``, ``no`` or ``off`` leaves them on. Any other value
skips them too, with a warning.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.metadata
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping
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
REGISTERED = "<registered>"

# Names our own packages provide, so that a missing one can be answered with what to install.
FIRST_PARTY = {
    **dict.fromkeys(
        ["rqs", "circular-rqs", "monotonic", "umnn", "sos", "bernstein", "bounded-bernstein"],
        "flows-splines",
    ),
    **dict.fromkeys(["nsf", "ncsf", "naf", "unaf", "sospf", "bpf"], "flows-splines"),
    "cnf": "flows-ode",
    **dict.fromkeys(["glow", "realnvp-image"], "flows-image"),
}

# Our own distributions load their entry points before any other, so that a third party
# declaring the same entry-point name cannot take their place.
FIRST_PARTY_DISTRIBUTIONS = frozenset({"flows-core", *FIRST_PARTY.values()})

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"", "0", "false", "no", "off"})

# Longest error text kept: a plugin's message must not flood the terminal.
_MAX_TEXT = 300

S = TypeVar("S", TransformSpec, PresetSpec)

_HOOKS: tuple[tuple[str, type[TransformSpec] | type[PresetSpec]], ...] = (
    ("flows_register_transforms", TransformSpec),
    ("flows_register_presets", PresetSpec),
)


class RegistryError(ValueError):
    """A name that is unknown, or provided twice."""


class FlowsPluginWarning(UserWarning):
    """A plugin failed to load or to register; the others are unaffected."""


@dataclasses.dataclass(frozen=True)
class PluginInfo:
    """One plugin as the registry saw it: where it comes from and whether it loaded.

    ``name`` is the entry-point name; it is empty for a distribution whose entry points could
    not be read at all.
    """

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
    hooks: tuple[str, ...] = ()
    # The plugin object, so that unregister() can forget a user plugin that failed.
    obj: object = dataclasses.field(default=None, repr=False, compare=False)


class _HookError(Exception):
    """A hook returned something that is not a list of specs."""


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.manager: pluggy.PluginManager | None = None
        # Plugins by the name they hold, loaded or failed, in discovery order.
        self.plugins: dict[str, _Plugin] = {}
        # Failures that hold no name: unreadable distributions, names already taken.
        self.rejected: list[_Plugin] = []
        self.user: list[tuple[object, str | None]] = []
        self.tables: dict[type, dict[str, list[Provided[Any]]]] | None = None

    # Building the manager

    def ensure(self) -> pluggy.PluginManager:
        with self.lock:
            if self.manager is None:
                self.manager = pluggy.PluginManager(hookspecs.PROJECT)
                self.manager.add_hookspecs(hookspecs)
                try:
                    builtin = importlib.import_module(BUILTIN)
                    self._add(builtin, "core", _own_distribution())
                    if _autoload():
                        self._load_entry_points()
                    for plugin, name in self.user:
                        if not self.manager.is_registered(plugin):  # not by a plugin's import
                            self._add(plugin, name, (REGISTERED, ""))
                except BaseException:
                    # Warnings turned into errors, or an interrupt: no half-built registry.
                    self.manager, self.plugins, self.rejected = None, {}, []
                    raise
            return self.manager

    def _load_entry_points(self) -> None:
        try:
            distributions = list(importlib.metadata.distributions())
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # a sys.path entry that cannot be listed
            self._reject("", ("?", ""), f"cannot list the installed distributions: {_text(error)}")
            return
        seen: set[object] = set()
        found = []
        for dist in distributions:
            key = _distribution_key(dist)
            if key in seen:
                continue  # the same distribution seen twice on sys.path: import uses the first
            seen.add(key)
            try:
                entry_points = [
                    (str(ep.name), ep) for ep in dist.entry_points if ep.group == hookspecs.PROJECT
                ]
            except KeyboardInterrupt:
                raise
            except BaseException as error:  # a malformed entry_points.txt, in any distribution
                self._reject("", _origin(dist), _entry_points_problem(dist, error))
                continue
            if entry_points:
                found.append((_origin(dist), entry_points))
        found.sort(key=lambda item: item[0][0] not in FIRST_PARTY_DISTRIBUTIONS)
        for origin, entry_points in found:
            for name, entry_point in entry_points:
                owner = self.plugins.get(name)
                if owner is not None:
                    if owner.distribution != origin[0]:
                        self._reject(name, origin, _taken(name, owner, origin))
                    continue  # else the same name declared twice in one file
                try:
                    plugin = entry_point.load()
                except KeyboardInterrupt:
                    raise
                except BaseException as error:  # any failure of third-party code, sys.exit too
                    self._fail(_Plugin(name, *origin), _text(error))
                    continue
                self._add(plugin, name, origin)

    def _add(self, plugin: object, name: str | None, origin: tuple[str, str]) -> None:
        manager = self.manager
        assert manager is not None
        label = name or _plugin_name(plugin)
        owner = self.plugins.get(label)
        if owner is not None:
            self._reject(label, origin, _taken(label, owner, origin), obj=plugin)
            return
        record = _Plugin(label, *origin, obj=plugin)
        try:
            registered = manager.register(plugin, name)
            if registered is None:
                raise TypeError(f"{plugin!r} is not a plugin")
            record.name = registered
            callers = manager.get_hookcallers(plugin) or []
            record.hooks = tuple(sorted(caller.name for caller in callers))
            unknown = [caller.name for caller in callers if not caller.spec]
        except KeyboardInterrupt:
            raise
        except BaseException as error:  # pluggy refuses it, or a hostile attribute raised
            _forget(manager, plugin, record.name)
            if record.name in self.plugins:
                self._reject(record.name, origin, _text(error), obj=plugin)
            else:
                self._fail(record, _text(error))
            return
        if unknown:
            _forget(manager, plugin, record.name)
            known = ", ".join(sorted(_hook_names()))
            self._fail(
                record, f"LookupError: unknown hook(s) {', '.join(unknown)}; known hooks: {known}"
            )
            return
        self.plugins[record.name] = record
        self.tables = None

    def _fail(self, record: _Plugin, message: str) -> None:
        if self.manager is not None:
            _forget(self.manager, record.obj, record.name)
        record.error = message
        self.plugins[record.name] = record
        self.tables = None
        _warn(record)

    def _reject(
        self, name: str, origin: tuple[str, str], message: str, obj: object = None
    ) -> None:
        record = _Plugin(name, *origin, error=message, obj=obj)
        self.rejected.append(record)
        _warn(record)

    # Collecting specs

    def collect(self) -> dict[type, dict[str, list[Provided[Any]]]]:
        """Call every plugin's hooks; a plugin failing in one hook contributes to none."""
        with self.lock:
            manager = self.ensure()
            if self.tables is not None:
                return self.tables
            calls: list[tuple[type, _Plugin, list[Any]]] = []
            for hook, kind in _HOOKS:
                for impl in getattr(manager.hook, hook).get_hookimpls():
                    record = self.plugins.get(impl.plugin_name)
                    if record is None or record.error:
                        continue
                    try:
                        specs = _specs(impl.function, hook, kind)
                    except KeyboardInterrupt:
                        raise
                    except _HookError as error:
                        self._fail(record, str(error))
                    except BaseException as error:  # any failure of third-party code
                        self._fail(record, f"{hook} raised {_text(error)}")
                    else:
                        calls.append((kind, record, specs))
            tables: dict[type, dict[str, list[Provided[Any]]]] = {
                TransformSpec: {},
                PresetSpec: {},
            }
            for kind, record, specs in calls:
                if record.error:
                    continue
                for spec in specs:
                    provided = Provided(spec, record.name, record.distribution, record.version)
                    tables[kind].setdefault(spec.name, []).append(provided)
            # Sorted by name, then by provider: listings and errors read the same on every run,
            # whatever order the file system lists distributions in.
            self.tables = {
                kind: {
                    name: sorted(providers, key=lambda p: (p.distribution, p.plugin))
                    for name, providers in sorted(table.items())
                }
                for kind, table in tables.items()
            }
            return self.tables

    def table(self, kind: type[S]) -> dict[str, list[Provided[S]]]:
        return self.collect()[kind]

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

    def report(self) -> list[_Plugin]:
        with self.lock:
            self.collect()  # a plugin whose hook fails is failed, not "ok"
            return [*self.plugins.values(), *self.rejected]


def _specs(
    function: Callable[[], Any], hook: str, kind: type[TransformSpec] | type[PresetSpec]
) -> list[Any]:
    """What a hook returned, checked: a list of ``kind`` with distinct names."""
    result = function()
    if result is None:
        return []
    if isinstance(result, (str, bytes, Mapping)) or not isinstance(result, Iterable):
        raise _HookError(f"{hook} returned {_repr(result)}, not a list of {kind.__name__}")
    specs = list(result)
    names: set[str] = set()
    for spec in specs:
        if not isinstance(spec, kind):
            raise _HookError(f"{hook} returned {_repr(spec)}, not a {kind.__name__}")
        name = spec.name
        if not isinstance(name, str):
            raise _HookError(f"{hook} returned a {kind.__name__} named {_repr(name)}")
        if name in names:
            raise _HookError(f"{hook} returned {name!r} twice")
        names.add(name)
    return specs


def _autoload() -> bool:
    raw = os.environ.get(DISABLE_AUTOLOAD, "")
    value = raw.strip().lower()
    if value in _FALSE:
        return True
    if value not in _TRUE:
        warnings.warn(
            f"{DISABLE_AUTOLOAD}={raw!r} is neither 1, true, yes, on nor 0, false, no, off; "
            "plugin autoload is disabled",
            FlowsPluginWarning,
            stacklevel=5,
        )
    return False


def _distribution_key(dist: importlib.metadata.Distribution) -> object:
    # The normalized name, read from the folder name where possible: reading every
    # distribution's METADATA would slow down each listing.
    try:
        name = dist._normalized_name  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        raise
    except BaseException:
        name = None
    return name if isinstance(name, str) and name else id(dist)


def _origin(dist: importlib.metadata.Distribution) -> tuple[str, str]:
    """The distribution's name and version, as safe one-line texts."""
    try:
        # PackageMetadata declares get() from Python 3.12 on; the email Message it is on
        # earlier versions has it too.
        metadata = dist.metadata
        name = metadata.get("Name")  # type: ignore[attr-defined]
        version = metadata.get("Version")  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        raise
    except BaseException:
        name = version = None
    if not name:
        path = getattr(dist, "_path", None)
        name = getattr(path, "name", None) or "?"
    return _clip(str(name)), _clip(str(version or ""))


def _entry_points_problem(dist: importlib.metadata.Distribution, error: BaseException) -> str:
    """One line saying what is wrong with a distribution's ``entry_points.txt``."""
    try:
        text = dist.read_text("entry_points.txt") or ""
    except KeyboardInterrupt:
        raise
    except BaseException as unreadable:
        return f"cannot read entry_points.txt: {_text(unreadable)}"
    section = None
    # The format importlib.metadata parses: "[group]" lines, then "name = value" lines.
    for number, line in enumerate(str(text).splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif section is not None and "=" not in line:
            return (
                f"malformed entry_points.txt, line {number}: {_clip(line)!r} is not 'name = value'"
            )
    return f"malformed entry_points.txt: {_text(error)}"


def _taken(name: str, owner: _Plugin, origin: tuple[str, str]) -> str:
    owned = f"{owner.distribution} {owner.version}".rstrip()
    fix = "register it under another name" if origin[0] == REGISTERED else "uninstall one of them"
    return f"its name {name!r} is already taken by {owned} ({fix})"


def _forget(manager: pluggy.PluginManager, plugin: object, name: str) -> None:
    """Unregister ``plugin`` if it is registered as ``name``.

    Under another name it is a registration that stays: the same module registered twice.
    """
    try:
        if plugin is not None and manager.get_name(plugin) == name:
            manager.unregister(plugin)
    except Exception:  # a plugin pluggy half-knows: there is nothing more to undo
        pass


def _warn(record: _Plugin) -> None:
    origin = f"{record.distribution} {record.version}".rstrip()
    who = f"flows plugin {record.name!r} from {origin}" if record.name else origin
    warnings.warn(
        f"{who} failed and was skipped: {record.error}",
        FlowsPluginWarning,
        stacklevel=5,
    )


def _text(error: BaseException) -> str:
    """``Type: message`` on one line, however hostile the exception's ``__str__``."""
    try:
        message = str(error)
    except KeyboardInterrupt:
        raise
    except BaseException:
        message = "(message unprintable)"
    message = _clip(message)
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _repr(value: object) -> str:
    try:
        return _clip(repr(value))
    except KeyboardInterrupt:
        raise
    except BaseException:
        return f"a {type(value).__name__}"


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


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
    """Every registered transform, sorted by name; imports no constructor.

    A name provided by two distributions appears once for each.
    """
    return [p for providers in _REGISTRY.table(TransformSpec).values() for p in providers]


def list_presets() -> list[Provided[PresetSpec]]:
    """Every registered preset, sorted by name; imports no constructor."""
    return [p for providers in _REGISTRY.table(PresetSpec).values() for p in providers]


def plugin_report() -> list[PluginInfo]:
    """Each plugin seen: its distribution, version, status and the hooks it implements.

    The hooks are called first, so a plugin whose hook raises or returns garbage is reported
    ``failed`` with its error, as are unreadable distributions and entry-point names taken twice.

    Example:
        >>> core = plugin_report()[0]
        >>> core.name, core.distribution, core.status, core.hooks
        ('core', 'flows-core', 'ok', ('flows_register_presets', 'flows_register_transforms'))
    """
    return [
        PluginInfo(
            name=plugin.name,
            distribution=plugin.distribution,
            version=plugin.version,
            status="failed" if plugin.error else "ok",
            error=plugin.error,
            hooks=plugin.hooks,
        )
        for plugin in _REGISTRY.report()
    ]


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
            _REGISTRY._add(plugin, name, (REGISTERED, ""))
        _REGISTRY.tables = None
        return name or _plugin_name(plugin)


def unregister(plugin: object) -> None:
    """Remove a plugin added with :func:`register`."""
    with _REGISTRY.lock:
        _REGISTRY.user = [(p, n) for p, n in _REGISTRY.user if p is not plugin]

        def mine(record: _Plugin) -> bool:
            return record.obj is plugin and record.distribution == REGISTERED

        manager = _REGISTRY.manager
        for name, record in list(_REGISTRY.plugins.items()):
            if mine(record):
                del _REGISTRY.plugins[name]
                if manager is not None:
                    _forget(manager, plugin, name)
        _REGISTRY.rejected = [r for r in _REGISTRY.rejected if not mine(r)]
        _REGISTRY.tables = None


def reset() -> None:
    """Forget everything discovered; the next lookup discovers again (user plugins stay)."""
    with _REGISTRY.lock:
        _REGISTRY.manager = None
        _REGISTRY.plugins = {}
        _REGISTRY.rejected = []
        _REGISTRY.tables = None


def _plugin_name(plugin: object) -> str:
    # pluggy's own default name (a module's or class's name, else the object's id), read
    # without trusting the object's attribute hooks.
    try:
        name = getattr(plugin, "__name__", None)
    except KeyboardInterrupt:
        raise
    except BaseException:
        name = None
    return name if isinstance(name, str) and name else str(id(plugin))
