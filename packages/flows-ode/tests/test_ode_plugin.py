"""The cnf preset in the registry, and what users without flows-ode are told."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest

import flows.ode
from flows.core import plugins


@pytest.fixture
def fresh_registry():
    """Rediscover before and after: a test hides an installed distribution."""
    plugins.reset()
    yield
    plugins.reset()


def test_cnf_preset_is_registered_by_flows_ode(fresh_registry):
    provided = plugins.preset_spec("cnf")

    assert provided.distribution == "flows-ode"
    assert provided.version == flows.ode.__version__
    assert provided.plugin == "ode"
    assert provided.spec.constructor == "flows.ode.presets:CNF"
    assert "cnf" in {p.spec.name for p in plugins.list_presets()}


def test_get_preset_builds_a_working_cnf(fresh_registry):
    import torch

    constructor = plugins.get_preset("cnf")
    flow = constructor(features=2, context=1, transforms=1, hidden_features=(8,))

    assert constructor is flows.ode.CNF
    with torch.no_grad():
        x = flow(torch.randn(4, 1)).sample()
    assert x.shape == (4, 2)


def test_missing_flows_ode_names_the_package_to_install(monkeypatch, fresh_registry):
    def without_flows_ode():
        return [
            dist
            for dist in importlib.metadata.Distribution.discover()
            if dist.metadata["name"] != "flows-ode"
        ]

    monkeypatch.setattr(importlib.metadata, "distributions", without_flows_ode)
    plugins.reset()

    with pytest.raises(
        plugins.RegistryError, match="'cnf' is provided by flows-ode: pip install flows-ode"
    ):
        plugins.preset_spec("cnf")
    assert "maf" in {p.spec.name for p in plugins.list_presets()}  # the others still load


def test_without_autoload_cnf_names_the_package_to_install():
    code = (
        "from flows.core.plugins import RegistryError, preset_spec\n"
        "try:\n"
        "    preset_spec('cnf')\n"
        "except RegistryError as error:\n"
        "    print(error)\n"
    )
    env = {**os.environ, "FLOWS_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "unknown preset 'cnf': 'cnf' is provided by flows-ode: pip install flows-ode" in (
        result.stdout
    )


def test_flows_ode_and_its_plugin_import_no_torch():
    code = (
        "import sys\n"
        "import flows.ode, flows.ode.plugin\n"
        "specs = flows.ode.plugin.flows_register_presets()\n"
        "assert [s.name for s in specs] == ['cnf'], specs\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_public_names_are_exported():
    assert sorted(flows.ode.__all__) == [
        "CNF",
        "FFJTransform",
        "FreeFormJacobianTransform",
        "SolverUnderflowError",
    ]
    from flows.ode.ffj import FreeFormJacobianTransform, SolverUnderflowError
    from flows.ode.layers import FFJTransform
    from flows.ode.presets import CNF

    assert flows.ode.FreeFormJacobianTransform is FreeFormJacobianTransform
    assert flows.ode.FFJTransform is FFJTransform
    assert flows.ode.CNF is CNF
    assert flows.ode.SolverUnderflowError is SolverUnderflowError
