"""The public API of the flows packages, read statically from their sources with griffe.

A module is public when no part of its dotted path starts with an underscore; its public names
are its ``__all__``. Each public object is documented once, in the module that defines it; a
module that re-exports a name (``flows.core.MAF``) links to that home instead of repeating it.
Nothing here imports the packages, so the model is the same with or without torch.
"""

from __future__ import annotations

__all__ = [
    "PACKAGES",
    "ROOT",
    "SEARCH_PATHS",
    "Entry",
    "documented",
    "entries",
    "home",
    "is_private",
    "public_modules",
    "rendered_members",
    "tree",
]

import dataclasses
import functools
from pathlib import Path

import griffe

ROOT = Path(__file__).resolve().parents[3]
# The distributions in the order of their dependencies: the reference follows it.
PACKAGES = ("nn", "core", "splines", "ode", "sbi", "pyro", "image", "cli")
SEARCH_PATHS = [ROOT / "packages" / f"flows-{name}" / "src" for name in PACKAGES]


@functools.cache
def tree() -> griffe.Module:
    """The ``flows`` namespace package, every distribution loaded, aliases resolved."""
    loader = griffe.GriffeLoader(
        search_paths=[str(path) for path in SEARCH_PATHS], docstring_parser="google"
    )
    flows = loader.load("flows")
    loader.resolve_aliases(external=False, implicit=False)
    return flows  # type: ignore[return-value]


def is_private(path: str) -> bool:
    """Whether any part of a dotted path is private (starts with ``_``, dunders included)."""
    return any(part.startswith("_") for part in path.split("."))


def public_modules() -> list[griffe.Module]:
    """Every public module and package of every distribution, packages first, by path."""
    found: list[griffe.Module] = []

    def walk(module: griffe.Module) -> None:
        for member in module.modules.values():
            if not member.is_alias and not is_private(member.path):
                found.append(member)
                walk(member)

    for name in PACKAGES:
        package = tree()[name]
        found.append(package)
        walk(package)
    return found


def home(obj: griffe.Object | griffe.Alias) -> griffe.Object | None:
    """The object an alias finally points to (the object itself if it is none).

    ``None`` for a name re-exported from another library (``flows.core.transforms`` hands on
    torch's own transforms): its home is outside the reference.
    """
    if not obj.is_alias:
        return obj  # type: ignore[return-value]
    try:
        return obj.final_target  # type: ignore[return-value]
    except griffe.AliasResolutionError:
        return None


def _external_path(alias: griffe.Alias) -> str:
    """The dotted path an unresolvable alias ends at (``torch.distributions....``)."""
    target: griffe.Object | griffe.Alias = alias
    while target.is_alias:
        try:
            target = target.target  # type: ignore[assignment,union-attr]
        except griffe.AliasResolutionError:
            return target.target_path  # type: ignore[union-attr]
    return target.path


def _exports(module: griffe.Module) -> list[str]:
    return [str(name) for name in (module.exports or [])]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One public name of one module: where it is exported and where it is documented."""

    module: str
    name: str
    target: str
    kind: str
    defined_here: bool
    summary: str

    @property
    def external(self) -> bool:
        """Whether the name comes from another library (its home is not in the reference)."""
        return not self.target.startswith("flows.")


def _summary(obj: griffe.Object) -> str:
    if obj.docstring is None:
        return ""
    return obj.docstring.value.strip().split("\n\n")[0].replace("\n", " ")


def entries(module: griffe.Module) -> list[Entry]:
    """The public names of ``module``, in the order of its ``__all__``."""
    found = []
    for name in _exports(module):
        member = module.members[name]
        target = home(member)
        found.append(
            Entry(
                module=module.path,
                name=name,
                target=_external_path(member) if target is None else target.path,  # type: ignore[arg-type]
                kind="" if target is None else target.kind.value,
                defined_here=not member.is_alias,
                summary="" if target is None else _summary(target),
            )
        )
    return found


def rendered_members(obj: griffe.Object) -> list[griffe.Object]:
    """The members mkdocstrings shows under a class: public, declared there, documented.

    The handler's options (``filters: ["!^_"]``, ``show_if_no_docstring: false``, no
    inherited members) decide what is shown; this mirrors them so that cross-references only
    point at anchors that exist.
    """
    if not obj.is_class:
        return []
    shown = []
    for name, member in obj.members.items():
        if name.startswith("_") or member.is_alias or member.docstring is None:
            continue
        shown.append(member)
    return shown


@functools.cache
def documented() -> dict[str, griffe.Object]:
    """Every anchor the reference renders: each public object at its home, and its members."""
    found: dict[str, griffe.Object] = {}

    def add(path: str, obj: griffe.Object) -> None:
        found[path] = obj
        for member in rendered_members(obj):
            add(f"{path}.{member.name}", member)

    for module in public_modules():
        found[module.path] = module
        for entry in entries(module):
            if entry.defined_here:
                add(entry.target, module.members[entry.name])  # type: ignore[arg-type]
    return found
