"""Any preset of the registry inside sbi: first-party names, a plugin's, constructors, errors."""

from __future__ import annotations

import importlib
import importlib.util
import pathlib
import warnings

import pytest
import torch
from sbi.inference import NPE
from torch.distributions import MultivariateNormal

from flows.core import MAF
from flows.core.plugins import PresetSpec, RegistryError, hookimpl, register, reset, unregister
from flows.sbi import posterior_nn

EXAMPLE = pathlib.Path(__file__).parents[3] / "examples" / "flows-example-plugin" / "src"

SMALL = {
    "maf": {"transforms": 1, "hidden_features": (8, 8)},
    "nsf": {"transforms": 1, "hidden_features": (8, 8), "bins": 4},
    "naf": {"transforms": 1, "hidden_features": (8, 8), "signal": 4},
    "gf": {"transforms": 1, "components": 2},
    "realnvp": {"transforms": 2, "hidden_features": (8, 8)},
    "iaf": {"transforms": 1, "hidden_features": (8, 8)},
    "cnf": {"hidden_features": (8, 8)},
}
# tests(sbi) installs flows-splines beside flows-sbi's closure, not flows-ode: "cnf" is tested
# where it is installed (nox -s all).
NEEDS_ODE = pytest.mark.together("flows.ode")
PRESETS = [pytest.param(name, marks=NEEDS_ODE) if name == "cnf" else name for name in SMALL]


def small_batch():
    torch.manual_seed(0)
    return torch.randn(64, 2), torch.randn(64, 3)


@pytest.mark.parametrize("name", PRESETS)
def test_every_first_party_preset_builds_an_estimator(name, device):
    estimator = posterior_nn(name, **SMALL[name])(*small_batch()).to(device)
    x = torch.randn(4, 3, device=device)
    samples, log_p = estimator.sample_and_log_prob((3,), x)
    assert samples.shape == (3, 4, 2) and log_p.shape == (3, 4)
    assert estimator.log_prob(samples, x).shape == (3, 4)
    assert bool(log_p.isfinite().all())


@pytest.mark.parametrize("name", ["maf", "nsf"])
def test_a_support_bounds_every_sample_in_original_units(name, device):
    theta, x = small_batch()
    theta = 10.0 + 5.0 * theta  # far from the unit box: standardization must not move the box
    low, high = torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 20.0])
    estimator = posterior_nn(name, support=(low, high), **SMALL[name])(theta, x).to(device)
    samples = estimator.sample((500,), torch.randn(2, 3, device=device))
    assert bool((samples >= low.to(device)).all() and (samples <= high.to(device)).all())
    outside = torch.tensor([[[0.0, 25.0]], [[-2.0, 1.0]]], device=device)
    assert estimator.log_prob(outside, torch.zeros(1, 3, device=device)).isneginf().all()


def test_a_constructor_is_a_model(device):
    def tiny(features: int, context: int) -> MAF:
        return MAF(features, context, transforms=1, hidden_features=(8,))

    estimator = posterior_nn(tiny)(*small_batch()).to(device)
    assert isinstance(estimator.net, MAF) and estimator.net.arguments["context"] == 3
    with pytest.raises(TypeError, match="must build a flows LazyDistribution, got Linear"):
        posterior_nn(lambda features, context: torch.nn.Linear(features, context))(*small_batch())


@pytest.fixture
def example_plugin(monkeypatch):
    """The example plugin, registered in-process as an installed one would be found."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    plugin = importlib.import_module("flows_example_plugin.plugin")
    register(plugin, "example")
    yield plugin
    unregister(plugin)


def test_example_plugin_transform_trains_inside_npe(example_plugin):
    from flows_example_plugin.transform import SinhArcsinhTransform

    torch.manual_seed(0)
    prior = MultivariateNormal(torch.zeros(2), torch.eye(2))
    theta = prior.sample((300,))
    x = theta + 0.5 * torch.randn_like(theta)
    build = posterior_nn("maf", univariate="sinh-arcsinh", transforms=2, hidden_features=(16,))
    inference = NPE(prior, density_estimator=build, show_progress_bars=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Maximum number of epochs", category=UserWarning)
        estimator = inference.append_simulations(theta, x).train(
            max_num_epochs=10, training_batch_size=50, learning_rate=3e-3
        )
    # Each autoregressive layer's univariate transform (its ``meta``) is the plugin's.
    layers = estimator.net.transform(torch.zeros(1, 2)).transforms
    assert all(isinstance(t.meta(torch.zeros(1, 2)), SinhArcsinhTransform) for t in layers)
    posterior = inference.build_posterior()
    samples = posterior.sample((100,), x=torch.zeros(1, 2), show_progress_bars=False)
    assert samples.shape == (100, 2) and bool(samples.isfinite().all())
    assert inference._summary["best_validation_loss"][-1] < 2.2  # the prior alone scores 2.84


class _ThirdPartyPreset:
    @hookimpl
    def flows_register_presets(self):
        return [PresetSpec("sbi-test-maf", "flows.core.presets:MAF", "A MAF under another name")]


def test_a_plugin_preset_is_found_by_name():
    plugin = _ThirdPartyPreset()
    register(plugin)
    try:
        estimator = posterior_nn("sbi-test-maf", transforms=1)(*small_batch())
        assert isinstance(estimator.net, MAF)
    finally:
        unregister(plugin)


def test_a_preset_whose_package_is_missing_says_what_to_install(monkeypatch):
    with monkeypatch.context() as patch:
        patch.setenv("FLOWS_DISABLE_PLUGIN_AUTOLOAD", "1")
        reset()  # rediscover without entry points: only flows-core's presets
        try:
            with pytest.raises(RegistryError) as error:
                posterior_nn("nsf")
        finally:
            patch.undo()
            reset()
    message = str(error.value)
    assert message.startswith(
        "unknown preset 'nsf': 'nsf' is provided by flows-splines: pip install flows-splines"
    )


def test_an_unknown_name_suggests_close_names():
    with pytest.raises(RegistryError, match=r"unknown preset 'mafs'; did you mean 'maf'"):
        posterior_nn("mafs")


def test_our_code_adds_no_warnings(device):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        build = posterior_nn("nsf", support=(0.0, 1.0), **SMALL["nsf"])
        estimator = build(torch.rand(64, 2), torch.randn(64, 3)).to(device)
        x = torch.randn(4, 3, device=device)
        estimator.loss(torch.rand(4, 2, device=device), x).mean().backward()
        estimator.sample_and_log_prob((3,), x)
    assert [str(w.message) for w in caught] == []
