"""FlowGuide's mechanics: the flow it builds, each site's bijection and log-det, its errors."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, JitTrace_ELBO, Predictive, Trace_ELBO

from flows.core import IAF, MAF, Flow, MaskedAutoregressiveTransform
from flows.core.plugins.registry import RegistryError
from flows.core.presets.maf import standard_normal_base
from flows.pyro import FlowGuide, FlowPosterior


def _model(dtype, device):
    """A positive scale, a probability and a plate of three locations: 5 latent dimensions."""
    one = torch.ones((), dtype=dtype, device=device)

    def model():
        scale = pyro.sample("scale", dist.LogNormal(0 * one, one))
        p = pyro.sample("p", dist.Beta(2 * one, 2 * one))
        with pyro.plate("groups", 3):
            loc = pyro.sample("loc", dist.Normal(0 * one, scale))
            pyro.sample(
                "x", dist.Normal(loc, one), obs=p * torch.ones(3, dtype=dtype, device=device)
            )

    return model


def _latent_site(trace):
    (site,) = [
        s for s in trace.nodes.values() if s["type"] == "sample" and s["infer"].get("is_auxiliary")
    ]
    return site


def test_guide_log_density_is_flows_minus_each_sites_log_det(dtype, device):
    pyro.set_rng_seed(0)
    guide = FlowGuide(_model(dtype, device), "iaf", transforms=1, hidden_features=(8,))
    trace = poutine.trace(guide).get_trace()
    u = _latent_site(trace)["value"]
    assert u.shape == (5,) and u.dtype == dtype and u.device == device
    values = {name: trace.nodes[name]["value"] for name in ("scale", "p", "loc")}
    assert values["scale"].shape == () and values["p"].shape == () and values["loc"].shape == (3,)
    # The sites in the order the model samples them: exp for the scale, sigmoid for p.
    torch.testing.assert_close(values["scale"], u[0].exp())
    torch.testing.assert_close(values["p"], torch.sigmoid(u[1]))
    torch.testing.assert_close(values["loc"], u[2:])
    trace.compute_log_prob()
    total = sum(site["log_prob_sum"] for site in trace.nodes.values() if site["type"] == "sample")
    # log q(z) = log q(u) - log|exp'(u0)| - log|sigmoid'(u1)|, the flow scoring u afresh.
    log_det = u[0] + torch.nn.functional.logsigmoid(u[1]) + torch.nn.functional.logsigmoid(-u[1])
    expected = guide.flow().log_prob(u) - log_det
    torch.testing.assert_close(total, expected)


def test_posterior_reads_back_the_log_density_of_its_own_sample(dtype, device):
    torch.manual_seed(0)
    flow = IAF(features=4, transforms=2, hidden_features=(8,)).to(device=device, dtype=dtype)
    posterior = FlowPosterior(flow())
    x = posterior.rsample((6,))
    log_q = posterior.log_prob(x)
    assert log_q.shape == (6,)
    torch.testing.assert_close(log_q, flow().log_prob(x))
    # Any other tensor, even equal in value, is scored afresh.
    torch.testing.assert_close(posterior.log_prob(x.clone()), log_q)
    assert posterior.expand((2, 3)).rsample().shape == (2, 3, 4)


def test_posterior_refuses_a_distribution_without_reparameterized_samples():
    with pytest.raises(
        ValueError, match=r"base must be reparameterizable \(has_rsample\), got Categorical"
    ):
        FlowPosterior(torch.distributions.Categorical(torch.ones(3)))
    with pytest.raises(
        TypeError, match=r"base must be a torch\.distributions\.Distribution, got str"
    ):
        FlowPosterior("iaf")


def test_predictive_median_and_quantiles_have_each_sites_shape(dtype, device):
    pyro.set_rng_seed(0)
    model = _model(dtype, device)
    guide = FlowGuide(model, "maf", transforms=1, hidden_features=(8,), quantile_samples=512)
    samples = Predictive(model, guide=guide, num_samples=7, parallel=True)()
    assert samples["scale"].shape == (7, 1) and samples["loc"].shape == (7, 3)
    assert bool((samples["scale"] > 0).all()) and bool(
        ((samples["p"] > 0) & (samples["p"] < 1)).all()
    )
    median = guide.median()
    assert {name: tuple(v.shape) for name, v in median.items()} == {
        "scale": (),
        "p": (),
        "loc": (3,),
    }
    quantiles = guide.quantiles([0.1, 0.5, 0.9])
    assert quantiles["loc"].shape == (3, 3) and quantiles["scale"].shape == (3,)
    assert quantiles["loc"].dtype == dtype and quantiles["loc"].device == device
    # Quantiles rise with the level, and every site's bijection here is increasing.
    for value in quantiles.values():
        assert bool((value[0] < value[1]).all()) and bool((value[1] < value[2]).all())


def test_flow_by_name_constructor_or_built(dtype, device):
    model = _model(dtype, device)
    by_name = FlowGuide(model, "iaf", transforms=2, hidden_features=(8,))
    by_constructor = FlowGuide(model, MAF, transforms=2, hidden_features=(8,))
    built = Flow(
        [MaskedAutoregressiveTransform(5, hidden_features=(8,)).inv], standard_normal_base(5)
    )
    built = built.to(device=device, dtype=dtype)
    given = FlowGuide(model, built)
    for guide, kind in ((by_name, IAF), (by_constructor, MAF), (given, Flow)):
        guide()
        assert guide.latent_dim == 5
        assert isinstance(guide.flow, kind)
        parameter = next(guide.flow.parameters())
        assert parameter.dtype == dtype and parameter.device == device
    assert by_name.flow.arguments["transforms"] == 2
    assert given.flow is built


def test_guide_parameters_enter_the_param_store(dtype, device):
    guide = FlowGuide(_model(dtype, device), "iaf", transforms=1, hidden_features=(8,))
    guide()
    stored = set(pyro.get_param_store().keys())
    assert stored and all(name.startswith("FlowGuide.flow$$$") for name in stored)
    assert len(stored) == len(list(guide.flow.parameters()))


# Deprecated in torch, still what Pyro's JitTrace_ELBO runs; its notes are torch's and Pyro's.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.*")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("particles", [1, 4])
def test_the_iaf_guide_trains_under_the_jit_elbo(particles, dtype, device):
    # The default flow under torch.jit.trace: its networks' in-place activations once failed.
    pyro.set_rng_seed(0)
    model = _model(dtype, device)
    guide = FlowGuide(model, "iaf", transforms=2, hidden_features=(8,))
    elbo = JitTrace_ELBO(
        num_particles=particles, vectorize_particles=particles > 1, ignore_jit_warnings=True
    )
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), elbo)
    losses = [svi.step() for _ in range(3)]
    before = [p.detach().clone() for p in guide.flow.parameters()]
    losses.append(svi.step())
    assert all(math.isfinite(loss) for loss in losses)
    assert any(not torch.equal(b, p) for b, p in zip(before, guide.flow.parameters(), strict=True))


def test_the_guide_samples_with_the_values_of_pyros_parameter_store(tmp_path, dtype, device):
    model = _model(dtype, device)
    pyro.set_rng_seed(0)
    trained = FlowGuide(model, "iaf", transforms=1, hidden_features=(8,))
    svi = SVI(model, trained, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(5):
        svi.step()
    path = tmp_path / "store.pt"
    pyro.get_param_store().save(path)
    pyro.clear_param_store()
    pyro.get_param_store().load(path, map_location=device)
    # Pyro's way to restore a guide: load the store, build the guide anew.
    rebuilt = FlowGuide(model, "iaf", transforms=1, hidden_features=(8,))
    rebuilt()
    for theirs, ours in zip(rebuilt.flow.parameters(), trained.flow.parameters(), strict=True):
        assert torch.equal(theirs, ours)
    # SVI steps the stored tensors, so the flow that samples is the one that trains.
    before = [p.detach().clone() for p in rebuilt.flow.parameters()]
    SVI(model, rebuilt, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO()).step()
    after = list(rebuilt.flow.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))


def test_a_guide_of_another_flow_replaces_the_stored_values_that_do_not_fit(dtype, device):
    # A notebook re-runs its guide cell with other arguments, the store left as it was.
    model = _model(dtype, device)
    first = FlowGuide(model, "iaf", transforms=1, hidden_features=(8,))
    SVI(model, first, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO()).step()
    second = FlowGuide(model, "iaf", transforms=2, hidden_features=(4,))
    svi = SVI(model, second, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    svi.step()
    before = [p.detach().clone() for p in second.flow.parameters()]
    svi.step()
    after = list(second.flow.parameters())
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    store = dict(pyro.get_param_store().items())
    own = {f"FlowGuide.flow$$${name}": p for name, p in second.flow.named_parameters()}
    assert store.keys() == own.keys()
    assert all(store[key] is own[key] for key in own)


def test_guide_refuses_bad_flows(dtype, device):
    model = _model(dtype, device)
    with pytest.raises(
        TypeError, match="flow must be a preset name, a constructor or a LazyDistribution, got int"
    ):
        FlowGuide(model, 3)
    built = IAF(features=5)
    with pytest.raises(
        TypeError,
        match=r"kwargs go to the preset FlowGuide builds: with a built flow, got \['transforms'\]",
    ):
        FlowGuide(model, built, transforms=2)
    with pytest.raises(ValueError, match="FlowGuide: quantile_samples must be an int >= 1, got 0"):
        FlowGuide(model, quantile_samples=0)
    wrong = FlowGuide(model, IAF(features=4).to(device=device, dtype=dtype))
    with pytest.raises(
        ValueError,
        match=r"flow must have 5 features, the size of the model's unconstrained latent sites, "
        r"got event_shape \(4,\)",
    ):
        wrong()
    with pytest.raises(ValueError, match="flow must have 5 features"):
        wrong()  # a second call refuses it again rather than sampling a mismatched flow
    not_a_flow = FlowGuide(model, lambda features: torch.nn.Linear(features, features))
    with pytest.raises(
        TypeError,
        match="flow must build a LazyDistribution when called with features=, got Linear",
    ):
        not_a_flow()
    with pytest.raises(RegistryError, match="unknown preset 'nope'"):
        FlowGuide(model, "nope")()


def test_a_model_without_latent_sites_is_refused_on_every_call(dtype, device):
    data = torch.randn(4, dtype=dtype, device=device)

    def observed_only():
        with pyro.plate("data", 4):
            pyro.sample("x", dist.Normal(0 * data, 1), obs=data)

    guide = FlowGuide(observed_only)
    for _ in range(2):  # Pyro's own check, not an assertion of ours, the second time too
        with pytest.raises(RuntimeError, match="FlowGuide found no latent variables"):
            guide()


def test_quantiles_refuse_levels_outside_the_unit_interval(dtype, device):
    guide = FlowGuide(_model(dtype, device), "iaf", transforms=1, hidden_features=(8,))
    with pytest.raises(
        ValueError, match=r"quantiles must be a sequence of levels in \[0, 1\], got \[0.5, 1.5\]"
    ):
        guide.quantiles([0.5, 1.5])
