"""NPE and NLE with our estimators inside sbi: analytic posteriors, MAP, bounded priors, saving.

The simulator is linear-Gaussian, theta ~ N(0, I) and x = theta + sigma * noise, whose posterior
is N(x / (1 + sigma^2), sigma^2 / (1 + sigma^2) I). Budgets are small and seeds fixed.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import warnings

import pytest
import torch
from sbi.inference import NLE, NPE
from sbi.inference.posteriors.posterior_parameters import MCMCPosteriorParameters
from sbi.utils import BoxUniform
from torch.distributions import MultivariateNormal

from flows.sbi import FlowEstimator, likelihood_nn, posterior_nn

SIGMA = 0.5
SHRINK = 1.0 / (1.0 + SIGMA**2)  # the posterior mean is SHRINK * x
VARIANCE = SIGMA**2 * SHRINK  # and its variance, per element
X_O = [[0.5, -1.0]]


def simulate(prior, n):
    theta = prior.sample((n,))
    return theta, theta + SIGMA * torch.randn_like(theta)


def gaussian_prior(device):
    return MultivariateNormal(torch.zeros(2, device=device), torch.eye(2, device=device))


@pytest.fixture(scope="module")
def npe(request, tmp_path_factory):
    """A MAF posterior trained by sbi's NPE on the requested device, and its prior."""
    device = request.config.getoption("--device")
    # Module-scoped, so it runs before the per-test folder of conftest.py: its own folder for
    # the ./sbi-logs that NPE makes.
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("npe"))
        return _trained_npe(device)


def _trained_npe(device):
    torch.manual_seed(0)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    prior = gaussian_prior(device)
    build = posterior_nn("maf", transforms=2, hidden_features=(32, 32))
    inference = NPE(prior, density_estimator=build, device=device, show_progress_bars=False)
    inference.append_simulations(*simulate(prior, 2000))
    with warnings.catch_warnings():
        # sbi's own note that 30 epochs did not reach its convergence criterion.
        warnings.filterwarnings("ignore", message="Maximum number of epochs", category=UserWarning)
        inference.train(max_num_epochs=30, training_batch_size=100)
    torch.set_num_threads(previous)
    return inference.build_posterior(), prior


def test_npe_recovers_the_analytic_posterior(npe, device):
    posterior, _ = npe
    assert isinstance(posterior.posterior_estimator, FlowEstimator)
    x_o = torch.tensor(X_O, device=device)
    torch.manual_seed(1)
    samples = posterior.sample((4000,), x=x_o, show_progress_bars=False)
    assert samples.shape == (4000, 2) and samples.device == x_o.device
    torch.testing.assert_close(samples.mean(0), SHRINK * x_o[0], atol=0.08, rtol=0)
    covariance = torch.cov(samples.T)
    torch.testing.assert_close(
        covariance, VARIANCE * torch.eye(2, device=device), atol=0.05, rtol=0
    )


def test_npe_posterior_log_prob_matches_the_analytic_density(npe, device):
    posterior, _ = npe
    x_o = torch.tensor(X_O, device=device)
    theta = SHRINK * x_o + VARIANCE**0.5 * torch.tensor([[0.0, 0.0], [1.0, -0.5]], device=device)
    exact = MultivariateNormal(SHRINK * x_o[0], VARIANCE * torch.eye(2, device=device))
    torch.testing.assert_close(
        posterior.log_prob(theta, x=x_o), exact.log_prob(theta), atol=0.25, rtol=0
    )


def test_npe_map_is_the_posterior_mode(npe, device):
    posterior, _ = npe
    x_o = torch.tensor(X_O, device=device)
    torch.manual_seed(2)
    posterior = pickle.loads(pickle.dumps(posterior)).set_default_x(x_o)
    mode = posterior.map(num_iter=200, num_init_samples=100, show_progress_bars=False)
    torch.testing.assert_close(mode[0], SHRINK * x_o[0], atol=0.1, rtol=0)


def test_npe_samples_batched_observations(npe, device):
    posterior, _ = npe
    xs = torch.tensor([[0.5, -1.0], [2.0, 2.0], [-1.0, 0.0]], device=device)
    torch.manual_seed(3)
    samples = posterior.sample_batched((2000,), x=xs, show_progress_bars=False)
    assert samples.shape == (2000, 3, 2)
    torch.testing.assert_close(samples.mean(0), SHRINK * xs, atol=0.1, rtol=0)


def test_posterior_pickles_and_loads_in_a_fresh_process(npe, device, tmp_path):
    posterior, _ = npe
    x_o = torch.tensor(X_O, device=device)
    theta = torch.tensor([[0.3, -0.7], [0.0, 0.0]], device=device)
    expected = posterior.log_prob(theta, x=x_o).tolist()
    copy = pickle.loads(pickle.dumps(posterior))
    torch.testing.assert_close(copy.log_prob(theta, x=x_o).tolist(), expected)
    path = tmp_path / "posterior.pt"
    torch.save(posterior, path)
    script = (
        "import json, sys, torch\n"
        f"posterior = torch.load({str(path)!r}, weights_only=False)\n"
        f"x, theta = torch.tensor({X_O}), torch.tensor({theta.tolist()})\n"
        f"x, theta = x.to({str(device)!r}), theta.to({str(device)!r})\n"
        "samples = posterior.sample((10,), x=x, show_progress_bars=False)\n"
        "print(json.dumps([type(posterior.posterior_estimator).__module__,\n"
        "    posterior.log_prob(theta, x=x).tolist(), list(samples.shape)]))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    module, log_prob, shape = json.loads(run.stdout)
    assert module == "flows.sbi.estimator"
    assert shape == [10, 2]
    torch.testing.assert_close(log_prob, expected)


def test_nle_with_mcmc_recovers_the_analytic_posterior(device):
    torch.manual_seed(0)
    prior = gaussian_prior(device)
    build = likelihood_nn("maf", transforms=1, hidden_features=(16, 16))
    inference = NLE(prior, density_estimator=build, device=device, show_progress_bars=False)
    inference.append_simulations(*simulate(prior, 2000))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Maximum number of epochs", category=UserWarning)
        inference.train(max_num_epochs=20, training_batch_size=100, learning_rate=3e-3)
    mcmc = MCMCPosteriorParameters(
        method="slice_np_vectorized", num_chains=20, warmup_steps=50, thin=1
    )
    posterior = inference.build_posterior(posterior_parameters=mcmc)
    x_o = torch.tensor(X_O, device=device)
    samples = posterior.sample((1000,), x=x_o, show_progress_bars=False)
    torch.testing.assert_close(samples.mean(0), SHRINK * x_o[0], atol=0.1, rtol=0)
    covariance = torch.cov(samples.T)
    torch.testing.assert_close(
        covariance, VARIANCE * torch.eye(2, device=device), atol=0.06, rtol=0
    )


def _train_on_box(device, density_estimator):
    """NPE on a unit-box prior, briefly trained; the posterior at an observation in a corner."""
    torch.manual_seed(0)
    prior = BoxUniform(torch.zeros(2, device=device), torch.ones(2, device=device))
    theta = prior.sample((500,))
    x = theta + 0.3 * torch.randn_like(theta)
    torch.manual_seed(0)
    inference = NPE(
        prior, density_estimator=density_estimator, device=device, show_progress_bars=False
    )
    inference.append_simulations(theta, x)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Maximum number of epochs", category=UserWarning)
        inference.train(max_num_epochs=3, training_batch_size=100)
    return inference.build_posterior(), prior


def _acceptance(posterior, prior, device):
    """The fraction of the estimator's samples inside the prior: sbi's rejection rate."""
    x_o = torch.tensor([[0.95, 0.05]], device=device)
    torch.manual_seed(4)
    samples = posterior.posterior_estimator.sample((2000,), x_o)[:, 0]
    return prior.support.check(samples).float().mean().item()


# nflows, inside sbi's "nsf", calls a deprecated torch function; the warning is theirs.
@pytest.mark.filterwarnings("ignore:torch.triangular_solve is deprecated:UserWarning")
def test_sbi_default_nsf_leaks_outside_a_box_prior(device):
    posterior, prior = _train_on_box(device, "nsf")
    assert _acceptance(posterior, prior, device) < 0.95


def test_bounded_prior_support_makes_acceptance_one(device):
    prior_box = BoxUniform(torch.zeros(2, device=device), torch.ones(2, device=device))
    build_ = posterior_nn("nsf", support=prior_box.support, transforms=2, hidden_features=(16, 16))
    posterior, prior = _train_on_box(device, build_)
    assert _acceptance(posterior, prior, device) == 1.0
    x_o = torch.tensor([[0.95, 0.05]], device=device)
    samples = posterior.sample((500,), x=x_o, show_progress_bars=False)
    assert bool(prior.support.check(samples).all())
    log_prob = posterior.log_prob(samples[:50], x=x_o)
    assert bool(log_prob.isfinite().all())
    outside = torch.tensor([[1.5, 0.5], [-0.1, 0.5]], device=device)
    assert posterior.posterior_estimator.log_prob(outside[:, None], x_o).isneginf().all()


def test_sbi_tutorial_runs_with_only_the_builder_swapped():
    # sbi's "density estimators" tutorial, its import of posterior_nn replaced by ours.
    from sbi.inference import simulate_for_sbi
    from sbi.utils.user_input_checks import check_sbi_inputs, process_prior, process_simulator

    torch.manual_seed(0)
    prior = BoxUniform(low=-2 * torch.ones(3), high=2 * torch.ones(3))

    def simulator(theta):
        return theta + 1.0 + torch.randn_like(theta) * 0.1

    prior, num_parameters, prior_returns_numpy = process_prior(prior)
    simulator = process_simulator(simulator, prior, prior_returns_numpy)
    check_sbi_inputs(simulator, prior)
    density_estimator_build_fun = posterior_nn(model="nsf", hidden_features=60, num_transforms=3)
    inference = NPE(prior=prior, density_estimator=density_estimator_build_fun)
    theta, x = simulate_for_sbi(simulator, prior, 300, show_progress_bar=False)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Maximum number of epochs", category=UserWarning)
        density_estimator = inference.append_simulations(theta, x).train(max_num_epochs=2)
    posterior = inference.build_posterior(density_estimator)
    x_o = torch.zeros(3)
    samples = posterior.sample((200,), x=x_o, show_progress_bars=False)
    assert samples.shape == (200, 3) and num_parameters == 3
    assert density_estimator.net.arguments["transforms"] == 3
    assert posterior.log_prob(samples[:5], x=x_o).shape == (5,)
