r"""Sphinx roles and directives in docstrings, rewritten into what mkdocstrings renders.

The docstrings are written with Sphinx's markup (``:class:`MLP```, ``:math:`x```,
``.. math::``); the sources stay as they are and the rewrite happens when the site is built:

- ``:class:``, ``:func:``, ``:meth:``, ``:mod:``, ``:data:``, ``:attr:`` become autorefs
  cross-references ``[`MLP`][flows.nn.mlp.MLP]`` when the target is in the reference, and
  inline code when it lives elsewhere (torch, the standard library, a private helper). A
  leading ``~`` shows the last part of the name only, as in Sphinx. A name that resolves
  nowhere is a problem: the build reports it, and ``--strict`` fails.
- ``:math:`x``` becomes ``$x$`` and a ``.. math::`` block a ``$$`` block, which
  ``pymdownx.arithmatex`` picks up (and :mod:`flowsdoc.mathml` turns into MathML); a
  ``.. code-block:: python`` becomes a fenced code block.
- ``:py:`x``` becomes inline code, and an ``Example:`` section the ``Examples:`` section of
  the Google style.

Names are resolved the way Python would see them from the docstring's object: its class (with
inherited members), the classes around it, its module (imports included), then absolute paths.

Example:
    >>> convert(":class:`MLP` of :math:`x_i`", "flows.nn.monotonic.MonotonicMLP")[0]
    '[`MLP`][flows.nn.mlp.MLP] of $x_i$'
"""

from __future__ import annotations

__all__ = ["SphinxRoles", "convert", "resolve"]

import builtins
import re
from typing import Any

import griffe
from flowsdoc import api

_ROLE = re.compile(r":(?P<role>class|func|meth|mod|data|attr|obj|exc):`(?P<target>[^`]+)`")
_MATH = re.compile(r":math:`(?P<tex>[^`]+)`")
_PY = re.compile(r":py:`(?P<code>[^`]+)`")
_DIRECTIVE = re.compile(r"^(?P<indent>[ \t]*)\.\. (?P<name>math|code-block)::[ \t]*(?P<first>.*)$")

_EXAMPLE = re.compile(r"^Example:[ \t]*$", re.M)
_LOGGER = griffe.logger


def _lookup(scope: griffe.Object, parts: list[str]) -> griffe.Object | griffe.Alias | None:
    """``parts`` looked up from ``scope``: the first in its members, the rest below it."""
    members = scope.all_members if scope.is_class else scope.members
    if parts[0] not in members:
        return None
    found: Any = members[parts[0]]
    for part in parts[1:]:
        try:
            target = api.home(found)
        except griffe.CyclicAliasError:
            return None
        if target is None:
            return found  # below an external name: reported as external by the caller
        members = target.all_members if target.is_class else target.members
        if part not in members:
            return None
        found = members[part]
    return found  # type: ignore[no-any-return]


def _scopes(path: str) -> list[griffe.Object]:
    """The object at ``path`` (when it has members) and the objects around it, innermost first."""
    flows = api.tree()
    obj: Any = flows.get_member(path.removeprefix("flows."))
    scopes = []
    while obj is not None and obj.path != "flows":
        if obj.is_class or obj.is_module:
            scopes.append(obj)
        obj = obj.parent
    return scopes


def resolve(target: str, where: str) -> tuple[str | None, bool]:
    """The path of ``target`` as seen from the object at ``where``.

    Returns:
        ``(path, documented)``: the dotted path it resolves to (``None`` if nothing by that
        name exists) and whether the reference renders an anchor for it.
    """
    parts = target.split(".")
    found: griffe.Object | griffe.Alias | None = None
    for scope in _scopes(where):
        found = _lookup(scope, parts)
        if found is not None:
            break
    if found is None and parts[0] == "flows" and len(parts) > 1:
        found = _lookup(api.tree(), parts[1:])
    if found is None:
        if parts[0] == "flows" or (not hasattr(builtins, parts[0]) and parts[0] not in _EXTERNAL):
            return None, False
        return target, False  # a builtin or another library: shown as code
    home = api.home(found)
    if home is None:
        return target, False  # re-exported from another library
    path = _anchor(home)
    return path, path in api.documented()


# Libraries the docstrings name without importing them where they are named.
_EXTERNAL = {"torch", "os", "pathlib", "numpy", "argparse", "pluggy", "torchdiffeq"}


def _anchor(obj: griffe.Object) -> str:
    """The path the reference renders ``obj`` under (a class's ``__init__`` is the class)."""
    if obj.name == "__init__" and obj.parent is not None and obj.parent.is_class:
        return obj.parent.path
    return obj.path


def convert(text: str, where: str) -> tuple[str, list[str]]:
    """Rewrite the Sphinx markup of one docstring of the object at ``where``.

    Returns:
        The rewritten text and the problems found (names that resolve nowhere).
    """
    problems: list[str] = []

    def role(match: re.Match[str]) -> str:
        # A target wrapped across lines of the docstring is one name.
        raw = re.sub(r"\s+", "", match.group("target"))
        short = raw.startswith("~")
        name = raw.lstrip("~.")
        shown = name.rsplit(".", 1)[-1] if short else name
        if match.group("role") in {"func", "meth"} and not shown.endswith(")"):
            shown += "()"
        path, documented = resolve(name, where)
        if path is None and match.group("role") == "mod" and not name.startswith("flows."):
            return f"`{shown}`"  # another library's module, installed here or not
        if path is None:
            problems.append(f"{where}: cannot resolve :{match.group('role')}:`{raw}`")
            return f"`{shown}`"
        if not documented:
            return f"`{shown}`"
        return f"[`{shown}`][{path}]"

    text = _directives(text)
    # Google style names the section "Examples"; ours say "Example", which griffe would read
    # as an admonition and render the doctest as prose.
    text = _EXAMPLE.sub("Examples:", text)
    text = _MATH.sub(lambda m: f"${m.group('tex').strip()}$", text)
    text = _PY.sub(lambda m: f"`{m.group('code')}`", text)
    text = _ROLE.sub(role, text)
    return text, problems


def _directives(text: str) -> str:
    """``.. math::`` as a ``$$`` block and ``.. code-block:: LANG`` as a fenced block.

    A directive's body is its first line (for math) and the lines after it that are blank or
    indented deeper than the directive; blank lines at its end belong to what follows.
    """
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _DIRECTIVE.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        indent, first = match.group("indent"), match.group("first").strip()
        i += 1
        end = i
        while end < len(lines) and (
            not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > len(indent)
        ):
            end += 1
        while end > i and not lines[end - 1].strip():
            end -= 1
        body = lines[i:end]
        i = end
        if match.group("name") == "math":
            tex = [first, *(line.strip() for line in body)]
            out += [f"{indent}$$", *(f"{indent}{line}" for line in tex if line), f"{indent}$$"]
        else:
            # The body keeps its own indentation, less the deepest common part.
            depth = min((len(x) - len(x.lstrip()) for x in body if x.strip()), default=0)
            code = [line[depth:] if line.strip() else "" for line in body]
            while code and not code[0]:
                code.pop(0)
            out += [f"{indent}```{first}", *(f"{indent}{line}" for line in code), f"{indent}```"]
    return "\n".join(out)


class SphinxRoles(griffe.Extension):
    """Griffe extension: rewrite every docstring of the flows packages as it is loaded."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None or not obj.path.startswith("flows."):
            return
        text, problems = convert(obj.docstring.value, obj.path)
        for problem in problems:
            _LOGGER.warning(problem)
        obj.docstring.value = text
