"""Dequantization and bits per dimension: the discrete-to-continuous correction by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Normal

from flows.image import (
    UniformDequantization,
    VariationalDequantization,
    bits_per_dim,
    quantize,
)


def test_bits_per_dim_of_a_uniform_density_is_log2_of_the_levels():
    # p(x) = 1 on [0, 1]^D: each of 256 levels has probability 1/256, 8 bits.
    assert bits_per_dim(torch.tensor(0.0), dims=3072, levels=256).item() == pytest.approx(8.0)
    assert bits_per_dim(torch.tensor(0.0), dims=64, levels=17).item() == pytest.approx(
        math.log2(17)
    )


def test_bits_per_dim_on_a_case_computed_by_hand():
    # D = 4 values on K = 2 levels, log p(x) - log q = -2 nats:
    # log P(k) >= -2 - 4 log 2 nats = -(2 / log 2 + 4) bits, per dim 1 + 1 / (2 log 2).
    value = bits_per_dim(torch.tensor([-2.0]), dims=4, levels=2)
    assert value.item() == pytest.approx(1.0 + 0.5 / math.log(2), abs=1e-7)
    assert value.item() == pytest.approx(1.7213475204444817, abs=1e-7)


def test_uniform_dequantization_stays_in_each_level_cell(dtype, device):
    torch.manual_seed(0)
    k = torch.randint(17, (50, 1, 4, 4), device=device)
    x, log_q = UniformDequantization(17)(k.to(dtype))
    assert x.dtype == dtype and log_q.shape == (50,)
    assert torch.equal(log_q, torch.zeros_like(log_q))
    assert bool(((x * 17 >= k) & (x * 17 < k + 1)).all())
    assert torch.equal(quantize(x, 17), k)


def test_variational_dequantization_noise_density_and_gradient(dtype, device):
    torch.manual_seed(0)
    deq = VariationalDequantization(5, (1, 4, 4), depth=1, hidden_channels=8)
    deq = deq.to(dtype=dtype, device=device)
    k = torch.randint(5, (3, 1, 4, 4), device=device)
    x, log_q = deq(k)

    assert bool(((x * 5 >= k) & (x * 5 < k + 1)).all())
    # At the start q(v | k) is the standard normal (a rotation of it): log q(u) is its density
    # at v = logit(u), less the sigmoid's log-derivative.
    u = x * 5 - k
    v = torch.logit(u)
    expected = (
        Normal(0.0, 1.0).log_prob(v)
        - torch.nn.functional.logsigmoid(v)
        - torch.nn.functional.logsigmoid(-v)
    ).sum(dim=(-3, -2, -1))
    # The starting rotation is drawn in float32: orthogonal to about 1e-7, whatever the dtype.
    tol = 1e-3 if dtype == torch.float32 else 1e-6
    torch.testing.assert_close(log_q, expected, atol=tol, rtol=tol)
    (x.sum() + log_q.sum()).backward()
    grads = [p.grad for p in deq.parameters() if p.requires_grad]
    assert any(g is not None and bool(g.abs().sum() > 0) for g in grads)


def test_levels_below_two_are_refused():
    with pytest.raises(ValueError, match="UniformDequantization: levels must be an int >= 2"):
        UniformDequantization(1)
