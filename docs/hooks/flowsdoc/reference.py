"""The API reference: one page per public module, generated from :mod:`flowsdoc.api`.

Each page renders the module's docstring and every object the module defines (its
``__all__``, in that order) with mkdocstrings; the names it re-exports from elsewhere are listed
with links to their home, so each object is documented exactly once. The navigation groups the
pages by distribution and follows the package tree.
"""

from __future__ import annotations

__all__ = ["Page", "nav", "pages", "uri"]

import dataclasses
import functools
import re
from typing import Any

import griffe
from flowsdoc import api, roles

_DISTRIBUTION_ROLES = {
    "nn": "networks only: MLPs, stacked, masked and monotonic layers",
    "core": "lazy distributions and transforms, autoregressive and coupling layers, the affine "
    "presets, the plugin registry, training and checkpoints",
    "splines": "spline and monotonic univariate transforms and the flows built on them",
    "ode": "continuous normalizing flows",
    "sbi": "any preset as a density estimator of sbi's NPE and NLE",
    "pyro": "any preset as a Pyro guide for stochastic variational inference",
    "image": "image flows: Glow and RealNVP, invertible 1x1 convolutions, dequantization",
    "cli": "the `flows` command (its modules are documented for contributors)",
}


@dataclasses.dataclass(frozen=True)
class Page:
    """A generated page: where it goes and what it says."""

    uri: str
    title: str
    markdown: str


def uri(module: griffe.Module) -> str:
    """The page of a module: ``reference/core/transforms/base.md``, packages as ``index.md``."""
    parts = module.path.split(".")[1:]
    if module.is_init_module:
        return "/".join(["reference", *parts, "index.md"])
    return "/".join(["reference", *parts]) + ".md"


def _directive(path: str, **options: Any) -> str:
    lines = [f"::: {path}"]
    if options:
        lines.append("    options:")
        for key, value in options.items():
            shown = str(value).lower() if isinstance(value, bool) else value
            lines.append(f"      {key}: {shown}")
    return "\n".join(lines)


_MATH = re.compile(r"(\$[^$]+\$)")


def _cell(text: str) -> str:
    r"""Text for a markdown table cell: bars escaped, except in math, where ``\|`` means ‖."""
    parts = _MATH.split(text.replace("\n", " "))
    return "".join(
        part.replace("|", r"\vert ") if _MATH.fullmatch(part) else part.replace("|", r"\|")
        for part in parts
    )


def _name(entry: api.Entry) -> str:
    if entry.external:
        return f"`{entry.name}`"
    return f"[`{entry.name}`][{entry.target}]"


def _home(entry: api.Entry) -> str:
    if entry.external:
        return f"`{entry.target.rsplit('.', 1)[0]}` (torch's, not documented here)"
    return f"`{entry.target.rsplit('.', 1)[0]}`"


def _module_page(module: griffe.Module) -> Page:
    out = [_directive(module.path, members=False, heading_level=1, show_root_full_path=True)]
    found = api.entries(module)
    elsewhere = [entry for entry in found if not entry.defined_here]
    if elsewhere:
        out += [
            "",
            "## Exported here",
            "",
            "| name | defined in | summary |",
            "| --- | --- | --- |",
        ]
        for entry in elsewhere:
            summary = _cell(_plain(entry.summary, entry.target))
            out.append(f"| {_name(entry)} | {_home(entry)} | {summary} |")
    submodules = _children(module)
    if submodules:
        out += ["", "## Modules", "", "| module | summary |", "| --- | --- |"]
        for child in submodules:
            summary = child.docstring.value.split("\n\n")[0] if child.docstring else ""
            out.append(
                f"| [`{child.path}`][{child.path}] | {_cell(_plain(summary, child.path))} |"
            )
    for entry in found:
        if entry.defined_here:
            obj = api.documented()[entry.target]
            options: dict[str, Any] = {}
            if obj.docstring is None:
                options["show_if_no_docstring"] = True
            out += ["", _directive(entry.target, **options)]
    return Page(uri(module), module.path, "\n".join(out) + "\n")


def _plain(text: str, where: str) -> str:
    """A summary line for a table: its Sphinx roles rewritten as seen from ``where``."""
    if where.startswith("flows."):
        text = roles.convert(text, where)[0]
    return text.replace("\n", " ")


def _children(module: griffe.Module) -> list[griffe.Module]:
    public = {m.path for m in api.public_modules()}
    return sorted(
        (m for m in module.modules.values() if not m.is_alias and m.path in public),
        key=lambda m: m.path,
    )


def _index_page() -> Page:
    out = [
        "# API reference",
        "",
        "Every public name of every package, generated from the docstrings. A module's public",
        "names are its `__all__`; each object is documented in the module that defines it, and",
        "the packages that re-export it (`flows.core.MAF` is `flows.core.presets.maf.MAF`)",
        "link there.",
        "",
        "| package | distribution | what it holds |",
        "| --- | --- | --- |",
    ]
    for name in api.PACKAGES:
        out.append(
            f"| [`flows.{name}`][flows.{name}] | `flows-{name}` | {_DISTRIBUTION_ROLES[name]} |"
        )
    return Page("reference/index.md", "API reference", "\n".join(out) + "\n")


@functools.cache
def pages() -> list[Page]:
    """Every page of the reference, its index first."""
    return [_index_page(), *(_module_page(module) for module in api.public_modules())]


def nav() -> list[Any]:
    """The reference's navigation: an index, then each distribution's package tree."""

    def section(module: griffe.Module) -> Any:
        children = _children(module)
        if not children:
            return {module.name: uri(module)}
        items: list[Any] = [uri(module)]
        items += [section(child) for child in children]
        title = f"flows-{module.name}" if module.parent.path == "flows" else module.name
        return {title: items}

    return ["reference/index.md", *(section(api.tree()[name]) for name in api.PACKAGES)]
