"""The glow and realnvp-image presets in the registry; flows is a namespace package."""

from __future__ import annotations

import pytest

import flows
import flows.image
from flows.core import plugins


@pytest.fixture
def fresh_registry():
    plugins.reset()
    yield
    plugins.reset()


@pytest.mark.parametrize(
    "name, constructor",
    [("glow", "flows.image.presets:Glow"), ("realnvp-image", "flows.image.presets:RealNVPImage")],
)
def test_presets_are_registered_by_flows_image(name, constructor, fresh_registry):
    provided = plugins.preset_spec(name)
    assert provided.distribution == "flows-image"
    assert provided.version == flows.image.__version__
    assert provided.spec.constructor == constructor
    assert plugins.get_preset(name) is getattr(flows.image, constructor.rpartition(":")[2])


def test_flows_stays_a_namespace_package():
    assert flows.__file__ is None
