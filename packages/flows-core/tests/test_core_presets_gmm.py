"""GMM: densities of every covariance type, k-means initialization, errors."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import MultivariateNormal

from flows.core.presets import GMM
from flows.core.presets.gmm import COVARIANCE_TYPES


def reference_log_prob(dist, x):
    """The mixture density from its components' means and covariances, independently."""
    base = dist.base
    loc = base.mean
    covariance = (
        base.covariance_matrix
        if isinstance(base, MultivariateNormal)
        else torch.diag_embed(base.variance)
    )
    components = MultivariateNormal(loc, covariance)
    log_w = torch.log_softmax(dist.logits, -1)
    return torch.logsumexp(log_w + components.log_prob(x[..., None, :]), -1)


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
def test_density_is_the_mixture_of_gaussians(covariance_type, dtype, device):
    torch.manual_seed(0)
    gmm = GMM(3, components=4, covariance_type=covariance_type)
    with torch.no_grad():
        gmm.phi.add_(torch.randn_like(gmm.phi) * 0.5)
    gmm = gmm.to(dtype=dtype, device=device)
    x = torch.randn(20, 3, dtype=dtype, device=device)
    dist = gmm()
    torch.testing.assert_close(dist.log_prob(x), reference_log_prob(dist, x))


def test_tied_and_spherical_covariances_keep_their_structure():
    gmm = GMM(3, components=2, covariance_type="tied")
    with torch.no_grad():
        gmm.phi.add_(torch.randn_like(gmm.phi))
    cov = gmm().base.covariance_matrix
    torch.testing.assert_close(cov[0], cov[1])
    spherical = GMM(3, components=2, covariance_type="spherical")
    with torch.no_grad():
        spherical.phi.add_(torch.randn_like(spherical.phi))
    scale = spherical().base.stddev
    assert torch.equal(scale, scale[:, :1].expand(-1, 3))


@pytest.mark.parametrize("covariance_type", COVARIANCE_TYPES)
@pytest.mark.parametrize("context", [0, 2])
def test_initialize_finds_separated_clusters(covariance_type, context, dtype, device):
    torch.manual_seed(0)
    centers = torch.tensor([[-6.0, 0.0], [6.0, 0.0], [0.0, 8.0]], dtype=dtype, device=device)
    sizes = [300, 200, 100]
    x = torch.cat(
        [
            c + torch.randn(n, 2, dtype=dtype, device=device)
            for c, n in zip(centers, sizes, strict=True)
        ]
    )
    gmm = GMM(2, context, components=3, covariance_type=covariance_type, hidden_features=[8])
    gmm = gmm.to(dtype=dtype, device=device)
    gmm.initialize(x)
    c = torch.randn(2, dtype=dtype, device=device) if context else None
    dist = gmm(c)
    found = dist.base.mean
    order = found[:, 0] * 10 + found[:, 1]  # sorts (-6, 0), (0, 8), (6, 0)
    found = found[order.argsort()]
    expected = centers[torch.tensor([0, 2, 1])]
    torch.testing.assert_close(found, expected, atol=0.3, rtol=0.0)
    weights = torch.softmax(dist.logits, -1)[order.argsort()]
    expected_w = torch.tensor([300.0, 100.0, 200.0], dtype=dtype, device=device) / 600
    torch.testing.assert_close(weights, expected_w, atol=0.02, rtol=0.0)
    # Unit-variance clusters: the fitted density is close to the true one.
    assert dist.log_prob(x).mean() > -4.0


def test_conditional_mixture_depends_on_context():
    gmm = GMM(2, 3, components=2, hidden_features=[8])
    with torch.no_grad():
        for p in gmm.parameters():
            p.add_(torch.randn_like(p))
    x = torch.zeros(2)
    c1, c2 = torch.randn(2, 3)
    assert gmm(c1).log_prob(x) != gmm(c2).log_prob(x)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"covariance_type": "diag"}, ValueError, "covariance_type must be one of"),
        ({"components": 0}, ValueError, "components must be an int >= 1, got 0"),
        ({"hidden": [8]}, TypeError, "'hidden'"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        GMM(2, **kwargs)


def test_initialize_refuses_bad_data():
    with pytest.raises(ValueError, match=r"x must be a tensor of shape \(N, 2\)"):
        GMM(2).initialize(torch.randn(10, 3))
    with pytest.raises(ValueError, match="at least 4 points"):
        GMM(2, components=4).initialize(torch.randn(3, 2))


def test_conditional_gmm_called_without_context_raises():
    with pytest.raises(ValueError, match="context"):
        GMM(2, 3)()
