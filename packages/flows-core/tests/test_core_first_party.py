"""Core's first-party list names exactly what our other packages provide, each with its package.

``FIRST_PARTY`` lets an unknown name be answered with the package to install ("'rqs' is provided
by flows-splines"). It is written by hand, so these tests read the names from the packages'
sources: every ``packages/flows-*`` folder's ``[project.entry-points.flows]`` hook modules,
parsed with ``ast`` rather than imported, so that they run in core's isolated environment, where
no other package of ours is installed.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

from flows.core.plugins.registry import FIRST_PARTY

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pytest itself depends on tomli there
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).parents[3]
HOOKS = {"flows_register_transforms", "flows_register_presets"}
SPECS = {"TransformSpec", "PresetSpec"}


def _hook_module_file(package: Path, module: str) -> Path:
    base = package / "src" / Path(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    raise AssertionError(f"{package.name}: entry point module {module!r} has no source file")


def _spec_names(source: str, where: str) -> list[str]:
    """The literal names of the specs that the hook functions of ``source`` build."""
    names = []
    hooks = [
        node
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.FunctionDef) and node.name in HOOKS
    ]
    if not hooks:
        raise AssertionError(f"{where}: an entry point module with no hook function")
    for node in hooks:
        calls = [
            call
            for call in ast.walk(node)
            if isinstance(call, ast.Call)
            and (getattr(call.func, "id", None) or getattr(call.func, "attr", None)) in SPECS
        ]
        if not calls:
            raise AssertionError(f"{where}: {node.name} builds no spec this test can read")
        for call in calls:
            given = [k.value for k in call.keywords if k.arg == "name"] or call.args[:1]
            if not (
                given and isinstance(given[0], ast.Constant) and isinstance(given[0].value, str)
            ):
                raise AssertionError(
                    f"{where}, line {call.lineno}: a spec's name must be a string literal so "
                    "that core's first-party list can be checked"
                )
            names.append(given[0].value)
    return names


def provided_names(root: Path) -> dict[str, str]:
    """Every name a first-party package other than flows-core provides, mapped to its package."""
    provided: dict[str, str] = {}
    for pyproject in sorted(root.glob("packages/flows-*/pyproject.toml")):
        project = tomllib.loads(pyproject.read_text())["project"]
        distribution = project["name"]
        if distribution == "flows-core":
            continue  # core's own names are always installed
        for module in project.get("entry-points", {}).get("flows", {}).values():
            path = _hook_module_file(pyproject.parent, module)
            for name in _spec_names(path.read_text(), str(path.relative_to(root))):
                if name in provided:
                    raise AssertionError(
                        f"{name!r} is provided by both {provided[name]} and {distribution}"
                    )
                provided[name] = distribution
    return provided


def first_party_mismatches(provided: dict[str, str], first_party: dict[str, str]) -> list[str]:
    """What ``first_party`` misses, maps to the wrong package, or names that nothing provides."""
    problems = [
        f"{name!r} (from {package}) is missing from FIRST_PARTY"
        for name, package in sorted(provided.items())
        if name not in first_party
    ]
    problems += [
        f"FIRST_PARTY maps {name!r} to {first_party[name]}, but {package} provides it"
        for name, package in sorted(provided.items())
        if name in first_party and first_party[name] != package
    ]
    problems += [
        f"FIRST_PARTY names {name!r} ({package}), which no package provides"
        for name, package in sorted(first_party.items())
        if name not in provided
    ]
    return problems


def test_first_party_list_equals_what_our_packages_provide():
    provided = provided_names(ROOT)
    assert first_party_mismatches(provided, FIRST_PARTY) == []
    # The sources were really read: the spline and ODE packages and some of their names.
    assert {"flows-splines", "flows-ode"} <= set(provided.values())
    assert provided["rqs"] == "flows-splines" and provided["cnf"] == "flows-ode"


def _write_package(root: Path, name: str, plugin: str | None = None) -> None:
    folder = root / "packages" / f"flows-{name}"
    (folder / "src" / "flows" / name).mkdir(parents=True)
    entry_points = f'\n[project.entry-points.flows]\n{name} = "flows.{name}.plugin"\n'
    (folder / "pyproject.toml").write_text(
        f'[project]\nname = "flows-{name}"\n' + (entry_points if plugin else "")
    )
    if plugin:
        (folder / "src" / "flows" / name / "plugin.py").write_text(textwrap.dedent(plugin))


TRANSFORMS = """
    @hookimpl
    def flows_register_transforms():
        return [TransformSpec(name="warp", constructor="flows.extra.warp:Warp", shapes=f,
                              summary="s")]
"""
CORE = """
    @hookimpl
    def flows_register_transforms():
        return [TransformSpec("affine", "flows.core.transforms:Affine", f, "s")]
"""
PRESETS = """
    @hookimpl
    def flows_register_presets():
        return [specs.PresetSpec("wf", "flows.extra.presets:WF", "s", ("warp",))]
"""


def test_a_new_package_without_its_hint_is_reported(tmp_path: Path):
    _write_package(tmp_path, "core", CORE)  # core's own names are not first-party hints
    _write_package(tmp_path, "cli")  # a package without entry points provides nothing
    _write_package(tmp_path, "extra", TRANSFORMS + PRESETS)
    provided = provided_names(tmp_path)
    assert provided == {"warp": "flows-extra", "wf": "flows-extra"}
    assert first_party_mismatches(provided, {"warp": "flows-extra"}) == [
        "'wf' (from flows-extra) is missing from FIRST_PARTY"
    ]
    assert first_party_mismatches(provided, {"warp": "flows-extra", "wf": "flows-other"}) == [
        "FIRST_PARTY maps 'wf' to flows-other, but flows-extra provides it"
    ]
    assert first_party_mismatches(provided, {**provided, "gone": "flows-extra"}) == [
        "FIRST_PARTY names 'gone' (flows-extra), which no package provides"
    ]
    assert first_party_mismatches(provided, provided) == []


def test_a_spec_name_that_is_not_a_literal_is_refused(tmp_path: Path):
    computed = """
        @hookimpl
        def flows_register_presets():
            return [PresetSpec(NAME, "flows.extra.presets:WF", "s")]
    """
    _write_package(tmp_path, "extra", computed)
    with pytest.raises(AssertionError, match="line 4: a spec's name must be a string literal"):
        provided_names(tmp_path)


def test_a_name_provided_by_two_packages_is_refused(tmp_path: Path):
    _write_package(tmp_path, "extra", TRANSFORMS)
    _write_package(tmp_path, "more", TRANSFORMS)
    with pytest.raises(AssertionError, match="'warp' is provided by both flows-extra and flows-"):
        provided_names(tmp_path)


def test_an_entry_point_module_without_hooks_is_refused(tmp_path: Path):
    _write_package(tmp_path, "extra", "def register():\n    return []\n")
    with pytest.raises(AssertionError, match=r"plugin\.py: an entry point module with no hook"):
        provided_names(tmp_path)
