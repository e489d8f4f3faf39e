"""Every package, the example plugin and the plugin tutorial declare the same torch floor.

The floor is the oldest torch the suites run on, the first of ``TORCH_VERSIONS`` in the
noxfile: a package that declares an older one promises support nobody tests. The noxfile and the
``pyproject.toml`` files are read as text (``ast``, ``tomllib``), not imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[3]
TORCH = re.compile(r"torch(?![\w.-])")  # torch itself, not torchdiffeq


def floor() -> str:
    """``"2.13"`` from the noxfile's ``TORCH_VERSIONS = ["2.13.0", ...]``."""
    tree = ast.parse((ROOT / "noxfile.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "TORCH_VERSIONS" for t in node.targets
        ):
            oldest = ast.literal_eval(node.value)[0]
            return ".".join(oldest.split(".")[:2])
    raise AssertionError("noxfile.py defines no TORCH_VERSIONS")


def torch_requirements(dependencies: list[str]) -> list[str]:
    return [d.replace(" ", "") for d in dependencies if TORCH.match(d)]


def projects() -> list[Path]:
    return sorted(
        [*ROOT.glob("packages/flows-*/pyproject.toml"), *ROOT.glob("examples/*/pyproject.toml")]
    )


def test_the_floor_is_read_from_the_noxfile():
    assert re.fullmatch(r"\d+\.\d+", floor())


@pytest.mark.parametrize("pyproject", projects(), ids=lambda p: str(p.parent.relative_to(ROOT)))
def test_each_pyproject_that_needs_torch_declares_the_tested_floor(pyproject: Path):
    project = tomllib.loads(pyproject.read_text())["project"]
    found = torch_requirements(project.get("dependencies", []))
    if project["name"] != "flows-cli":  # the command needs torch through flows-core only
        assert found, f"{pyproject} declares no torch"
    assert all(r == f"torch>={floor()}" for r in found), (pyproject, found)


def test_the_plugin_tutorial_shows_the_tested_floor():
    text = (ROOT / "docs/pages/tutorials/plugins.md").read_text()
    declared = re.findall(r'"torch\s*>=\s*([0-9.]+)"', text)
    assert declared and set(declared) == {floor()}
