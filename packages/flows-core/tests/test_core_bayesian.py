"""Tests of flows.core.bayesian: the weight posterior of any preset, its KL, weight draws,
ELBO training, the predictive spread, and the checkpoint round trip."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator

import pytest
import torch
from torch import nn
from torch.distributions import Normal, kl_divergence

import flows.nn
from flows.core import GF, GMM, MAF, NICE, BayesianFlow, RealNVP, fit_bayesian, load, save
from flows.core.checkpoint import CheckpointError

H = {"hidden_features": [8]}
CASES: dict[str, tuple[Callable[[], nn.Module], int, int]] = {
    "maf": (lambda: MAF(3, transforms=2, **H), 3, 0),
    "maf-context": (lambda: MAF(2, 2, transforms=1, **H), 2, 2),
    "nice": (lambda: NICE(4, transforms=2, **H), 4, 0),
    "realnvp-context": (lambda: RealNVP(3, 2, transforms=2, **H), 3, 2),
    "gf-context": (lambda: GF(2, 3, transforms=1, components=3, **H), 2, 3),
    "gmm-context": (lambda: GMM(2, 1, components=2, covariance_type="diagonal", **H), 2, 1),
}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(name: str, dtype: torch.dtype, device: torch.device, **kwargs):
    factory, features, context = CASES[name]
    torch.manual_seed(0)
    bayesian = BayesianFlow(factory(), **kwargs).to(dtype=dtype, device=device)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(5, features, generator=generator, dtype=dtype).to(device)
    c = torch.randn(5, context, generator=generator, dtype=dtype).to(device) if context else None
    return bayesian, x, c


def density(bayesian: BayesianFlow, x: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
    return (bayesian() if c is None else bayesian(c)).log_prob(x)


def assert_same_draws(
    loaded: BayesianFlow, saved: BayesianFlow, x: torch.Tensor, c: torch.Tensor | None
) -> None:
    """The two posteriors give the same densities under the same draw of the weights."""
    torch.manual_seed(3)
    with saved.sampled():
        expected = density(saved, x, c)
    torch.manual_seed(3)
    with loaded.sampled():
        torch.testing.assert_close(density(loaded, x, c), expected)


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_preset_gets_a_posterior_on_its_linear_layers(name, dtype, device):
    bayesian, x, c = build(name, dtype, device, init_scale=0.05)
    linear = (nn.Linear, flows.nn.Linear, flows.nn.MaskedLinear)
    expected = [
        f"{prefix}.{leaf}"
        for prefix, module in bayesian.flow.named_modules()
        if isinstance(module, linear)
        for leaf in ("weight", "bias")
        if getattr(module, leaf, None) is not None
    ]
    assert list(bayesian.names) == expected and expected
    # The means are the flow's own parameters: its state_dict keys are unchanged.
    assert set(bayesian.flow.state_dict()) == set(CASES[name][0]().state_dict())

    with bayesian.posterior_mean():
        mean = density(bayesian, x, c)
    plain = (bayesian.flow() if c is None else bayesian.flow(c)).log_prob(x)
    torch.testing.assert_close(mean, plain, rtol=0, atol=0)

    with bayesian.sampled():
        first, again = density(bayesian, x, c), density(bayesian, x, c)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert not torch.allclose(first, mean)
    other = density(bayesian, x, c)  # a call outside a block draws anew
    assert not torch.allclose(other, first)

    other.sum().backward()  # every scale and mean gets a gradient through the draw
    assert all(p.grad is not None for p in bayesian.log_scales)
    means = dict(bayesian.flow.named_parameters())
    assert all(means[name].grad is not None for name in bayesian.names)


def test_kl_matches_the_closed_form_of_independent_normals(dtype, device):
    bayesian, _, _ = build("maf-context", dtype, device, prior_scale=0.7)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for log_scale in bayesian.log_scales:
            noise = torch.randn(log_scale.shape, generator=generator, dtype=dtype).to(device)
            log_scale.copy_(0.3 * noise - 1.0)
    expected = torch.zeros((), dtype=dtype, device=device)
    for name, log_scale in zip(bayesian.names, bayesian.log_scales, strict=True):
        owner = bayesian.flow.get_submodule(name.rpartition(".")[0])
        mean = bayesian.flow.get_parameter(name)
        terms = kl_divergence(Normal(mean, log_scale.exp()), Normal(0.0, 0.7))
        if name.endswith("weight"):
            terms = terms[owner.mask != 0]  # masked weights do nothing and have no posterior
        expected = expected + terms.sum()
    torch.testing.assert_close(bayesian.kl(), expected)
    bayesian.kl().backward()
    assert all(p.grad is not None for p in bayesian.log_scales)


def test_weight_draws_have_the_posterior_mean_and_scale(device):
    bayesian, _, _ = build("nice", torch.float64, device, init_scale=0.2)
    name = bayesian.names[0]
    draws = torch.stack([bayesian.draw()[name].detach() for _ in range(1000)])
    mean = bayesian.flow.get_parameter(name).detach()
    torch.testing.assert_close(draws.mean(0), mean, atol=0.03, rtol=0)
    torch.testing.assert_close(draws.std(0), torch.full_like(mean, 0.2), atol=0.02, rtol=0)


def test_fit_bayesian_maximizes_the_elbo_and_the_spread_grows_away_from_the_data(device):
    dtype = torch.float64
    generator = torch.Generator().manual_seed(0)
    x = (0.5 * torch.randn(512, 2, generator=generator, dtype=dtype)).to(device)
    torch.manual_seed(0)
    bayesian = BayesianFlow(MAF(2, transforms=1, **H), prior_scale=1.0, init_scale=0.05)
    bayesian = bayesian.to(dtype=dtype, device=device)
    before = float(bayesian.kl().detach())
    result = fit_bayesian(bayesian, x, epochs=40, batch_size=128, lr=1e-2, patience=None, seed=0)
    assert result.flow is bayesian and result.steps == 40 * 4
    first, last = result.history[0]["train_nll"], result.history[-1]["train_nll"]
    assert last < first
    # The posterior mean fits N(0, 0.5^2 I): NLL near its entropy, 1.45 nats.
    assert result.val_nll == pytest.approx(math.log(2 * math.pi * math.e * 0.25), abs=0.15)
    assert float(bayesian.kl().detach()) != before

    # Weight draws agree where the data were and disagree far from them.
    # The second variable's network reads the first: move the first away from the data.
    points = torch.tensor([[0.0, 0.0], [0.5, 0.0], [3.0, 0.0], [6.0, 0.0]], dtype=dtype)
    points = points.to(device)
    with torch.no_grad():
        torch.manual_seed(1)
        spread = bayesian.log_probs(points, samples=64).std(0)
        predictive = bayesian.predictive_log_prob(points, samples=64)
    assert float(spread[0]) < float(spread[2]) < float(spread[3])
    assert float(spread[1]) < float(spread[2])
    assert predictive.shape == (4,) and bool(torch.isfinite(predictive).all())


def test_kl_weight_zero_is_maximum_likelihood_under_noise(device):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 2, generator=generator, dtype=torch.float64).to(device)
    torch.manual_seed(0)
    bayesian = BayesianFlow(MAF(2, transforms=1, **H)).to(dtype=torch.float64, device=device)
    fit_bayesian(bayesian, x, steps=3, kl_weight=0.0, validation=0.0, seed=0)
    with pytest.raises(ValueError, match="kl_weight must be a number >= 0, got -1"):
        fit_bayesian(bayesian, x, steps=1, kl_weight=-1)


def test_save_and_load_keep_the_posterior(tmp_path, dtype, device):
    bayesian, x, c = build("maf-context", dtype, device, prior_scale=0.5, init_scale=0.1)
    with torch.no_grad():
        bayesian.log_scales[0].add_(0.3)
    path = tmp_path / "posterior.pt"
    bayesian.save(path, extra={"note": "hello"})
    again, extra = BayesianFlow.load(path, map_location=device)
    again = again.to(dtype=dtype)
    assert extra == {"note": "hello"}
    assert again.prior_scale == 0.5 and again.names == bayesian.names
    torch.testing.assert_close(again.kl(), bayesian.kl())
    assert_same_draws(again, bayesian, x, c)
    # The file is an ordinary checkpoint: flows.core.load gives the posterior mean flow.
    mean_flow, stored = load(path, map_location=device)
    assert "bayesian" in stored
    with bayesian.posterior_mean():
        torch.testing.assert_close(
            mean_flow.to(dtype=dtype)(c).log_prob(x), density(bayesian, x, c)
        )


@pytest.mark.parametrize("selection", ["one layer", "a frozen bias"])
def test_a_posterior_of_some_weights_loads_as_saved(selection, tmp_path, dtype, device):
    torch.manual_seed(0)
    flow = MAF(2, 2, transforms=2, **H).to(dtype=dtype, device=device)
    linears = [m for m in flow.modules() if isinstance(m, flows.nn.MaskedLinear)]
    if selection == "one layer":
        bayesian = BayesianFlow(flow, init_scale=0.1, layers=lambda m: m is linears[0])
        expected = 2  # its weight and bias
    else:
        linears[1].bias.requires_grad_(False)
        bayesian = BayesianFlow(flow, init_scale=0.1)
        expected = 2 * len(linears) - 1
    assert len(bayesian.names) == expected
    with torch.no_grad():
        bayesian.log_scales[0].add_(0.3)
    path = tmp_path / "posterior.pt"
    bayesian.save(path)
    again, _ = BayesianFlow.load(path, map_location=device)
    again = again.to(dtype=dtype)
    assert again.names == bayesian.names
    for theirs, ours in zip(again.log_scales, bayesian.log_scales, strict=True):
        torch.testing.assert_close(theirs, ours)
    x = torch.randn(5, 2, dtype=dtype, device=device)
    c = torch.randn(5, 2, dtype=dtype, device=device)
    assert_same_draws(again, bayesian, x, c)


def test_names_choose_the_weights_and_are_checked(device):
    flow = MAF(2, transforms=1, **H).to(device)
    every = BayesianFlow(flow).names
    chosen = BayesianFlow(flow, names=every[:2])
    assert chosen.names == every[:2] and len(chosen.log_scales) == 2
    with pytest.raises(TypeError, match="give layers or names, not both"):
        BayesianFlow(flow, layers=lambda m: True, names=every)
    with pytest.raises(ValueError, match=r"names: 'nope\.weight' is not a floating-point param"):
        BayesianFlow(flow, names=["nope.weight"])
    with pytest.raises(ValueError, match="names must name each parameter once"):
        BayesianFlow(flow, names=[every[0], every[0]])
    for bad in (every[0], 3, [every[0], 3]):
        with pytest.raises(TypeError, match="names must be a sequence of dotted parameter name"):
            BayesianFlow(flow, names=bad)


def test_a_flow_that_drew_weights_can_be_copied(dtype, device):
    bayesian, x, c = build("maf-context", dtype, device)
    density(bayesian, x, c).sum().backward()
    twin = copy.deepcopy(bayesian)
    with bayesian.posterior_mean(), twin.posterior_mean():
        torch.testing.assert_close(density(twin, x, c), density(bayesian, x, c))


def test_errors_name_what_is_wrong(tmp_path, device):
    with pytest.raises(ValueError, match="flow GMM has no trainable linear layer"):
        BayesianFlow(GMM(2, components=2))
    with pytest.raises(ValueError, match="prior_scale must be"):
        BayesianFlow(MAF(2, transforms=1), prior_scale=0.0)
    bayesian = BayesianFlow(MAF(2, transforms=1))
    with pytest.raises(CheckpointError, match="extra must not have the key 'bayesian'"):
        bayesian.save(tmp_path / "a.pt", extra={"bayesian": 1})
    save(MAF(2, transforms=1), tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="holds a flow but no Bayesian posterior"):
        BayesianFlow.load(tmp_path / "plain.pt")
