"""Dequantization and bits per dimension: the discrete-to-continuous correction by hand."""

from __future__ import annotations

import math
from types import SimpleNamespace

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


def _in_cells(x: torch.Tensor, k: torch.Tensor, levels: int) -> bool:
    k = k.to(x.dtype)
    return bool(((x >= k / levels) & (x < (k + 1) / levels) & (x < 1)).all())


def test_uniform_dequantization_stays_below_the_next_level_when_u_rounds_up(
    dtype, device, monkeypatch
):
    # u = the largest float below 1, a draw torch.rand can return: k + u rounds up to k + 1,
    # and x was the next level's value, exactly 1 at the top level, outside [0, 1) (whose
    # logit is infinite). In float32 at 256 levels, 29 of 1.3M draws of the top level did.
    one = torch.ones((), dtype=dtype, device=device)
    below_one = torch.nextafter(one, torch.zeros_like(one))
    monkeypatch.setattr(
        torch, "rand", lambda *args, **kwargs: below_one * torch.ones(*args, **kwargs)
    )
    k = torch.arange(256, device=device).view(1, 1, 16, 16)  # every level once
    x, _ = UniformDequantization(256)(k.to(dtype))
    assert x.dtype == dtype and _in_cells(x, k, 256)


class _SaturatedNoise(torch.nn.Module):
    """A q(v | k) drawing v = 40, where the sigmoid is 1 in floating point: u = 1."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        super().__init__()
        # VariationalDequantization reads its dtype from an image flow's buffer `zero`.
        self.register_buffer("zero", torch.zeros((), dtype=dtype, device=device))

    def forward(self, context: torch.Tensor) -> SimpleNamespace:
        v = torch.full_like(context, 40.0)
        log_q = v.new_zeros(context.shape[:-3])
        return SimpleNamespace(rsample_and_log_prob=lambda: (v, log_q))


def test_variational_dequantization_stays_below_the_next_level_when_u_saturates(dtype, device):
    # A learned q can draw v far out, where sigmoid(v) rounds to 1: x was then (k + 1) / K,
    # exactly 1 at the top level.
    deq = VariationalDequantization(4, (1, 2, 2), flow=_SaturatedNoise(dtype, device))
    k = torch.arange(4, device=device).view(1, 1, 2, 2)
    x, log_q = deq(k)
    assert x.dtype == dtype and _in_cells(x, k, 4)
    assert bool(torch.isfinite(log_q).all())


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
