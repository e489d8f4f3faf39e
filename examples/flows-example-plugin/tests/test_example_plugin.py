"""The example plugin, as a third party tests it once installed."""

import torch

from flows.core import MAF
from flows.core.plugins import transform_spec
from flows.core.testing import check_univariate


def test_installed_plugin_is_discovered_with_its_distribution():
    provided = transform_spec("sinh-arcsinh")
    assert (provided.distribution, provided.version) == ("flows-example-plugin", "0.3.0")


def test_sinh_arcsinh_passes_the_contract_kit():
    check_univariate("sinh-arcsinh")
    check_univariate("sinh-arcsinh", dtype=torch.float32)


def test_layers_take_the_plugin_by_name():
    flow = MAF(features=2, transforms=2, univariate="sinh-arcsinh")
    x = flow().sample((16,))
    assert torch.isfinite(flow().log_prob(x)).all()
