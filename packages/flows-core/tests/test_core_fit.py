"""MAF learns a known density: a 2-D mixture of two Gaussians, in a few seconds of CPU."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from flows.core.distributions import DiagNormal, Mixture
from flows.core.presets import MAF


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small matrices: one thread is fastest, and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_maf_fits_a_gaussian_mixture(one_thread):
    torch.manual_seed(0)
    target = Mixture(
        DiagNormal(torch.tensor([[-1.5, -1.0], [1.5, 1.0]]), torch.full((2, 2), 0.5)),
        torch.zeros(2),
    )
    train, test = target.sample((4096,)), target.sample((8192,))
    entropy = -target.log_prob(test).mean()  # the best achievable held-out NLL (~2.14 nats)
    gaussian = torch.distributions.MultivariateNormal(train.mean(0), torch.cov(train.T))
    gaussian_nll = -gaussian.log_prob(test).mean()  # the best single Gaussian (~2.77 nats)

    flow = MAF(2, transforms=3, hidden_features=[64, 64])
    optimizer = torch.optim.Adam(flow.parameters(), lr=3e-3)
    with torch.no_grad():
        before = -flow().log_prob(test).mean()
    for _ in range(250):
        x = train[torch.randint(len(train), (256,))]
        loss = -flow().log_prob(x).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        after = -flow().log_prob(test).mean()

    assert after < before
    # Within 0.15 nats of the entropy: far better than any Gaussian, so the flow learned the
    # two modes.
    assert after < entropy + 0.15
    assert entropy + 0.15 < gaussian_nll
