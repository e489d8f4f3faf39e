"""The examples of the reference documents (seeds 001-004), with our imports.

Examples with ``MonotonicRQSTransform`` need flows-splines, absent from core's isolated test
environment: they are skipped there, and each has a twin with the affine univariate transform,
so the behaviour they show is always tested.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from flows.core.distributions import BoxUniform, DiagNormal, NormalizingFlow
from flows.core.layers import GeneralCouplingTransform, MaskedAutoregressiveTransform
from flows.core.lazy import (
    Flow,
    LazyDistribution,
    UnconditionalDistribution,
    UnconditionalTransform,
)
from flows.core.presets import MAF
from flows.core.transforms import (
    AffineTransform,
    AutoregressiveTransform,
    ComposedTransform,
    ExpTransform,
    MonotonicAffineTransform,
    PermutationTransform,
    RotationTransform,
    SigmoidTransform,
)


def rqs():
    from flows.splines import MonotonicRQSTransform

    return MonotonicRQSTransform


# Seed 001: tutorial.


def test_lazy_gaussian_model_returns_a_normal_whose_loss_falls_in_training():
    torch.manual_seed(0)
    x = torch.distributions.Normal(0, 1).sample((1024,))
    c = torch.distributions.Normal(x, 1).sample((3,)).T

    class GaussianModel(LazyDistribution):
        def __init__(self) -> None:
            super().__init__()
            self.hyper = nn.Sequential(
                nn.Linear(3, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 2)
            )

        def forward(self, c: torch.Tensor) -> torch.distributions.Normal:
            mu, log_sigma = self.hyper(c).unbind(dim=-1)
            return torch.distributions.Normal(mu, log_sigma.exp())

    model = GaussianModel()
    distribution = model(c=c[0])
    assert isinstance(distribution, torch.distributions.Normal)
    assert distribution.log_prob(x[0]).grad_fn is not None
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = -model(c).log_prob(x).mean().item()
    for _ in range(16):  # the seed's 64 steps, shortened: the loss already falls
        loss = -model(c).log_prob(x).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert -model(c).log_prob(x).mean().item() < before


def check_seed001_autoregressive(transform):
    f = transform()
    x = torch.randn(5)
    y = f(x)
    xx = f.inv(y)
    torch.testing.assert_close(xx, x, atol=1e-5, rtol=1e-5)
    jacobian = torch.autograd.functional.jacobian(f, x)
    assert torch.equal(jacobian.triu(diagonal=1), torch.zeros(5, 5))
    assert (jacobian.diagonal() > 0).all()


@pytest.mark.together("flows.splines")
def test_masked_autoregressive_rqs_inverts_with_lower_triangular_jacobian():
    transform = MaskedAutoregressiveTransform(
        features=5,
        context=0,
        univariate=rqs(),
        shapes=([8], [8], [7]),
        hidden_features=(64, 128, 256),
    )
    check_seed001_autoregressive(transform)


def test_masked_autoregressive_affine_inverts_with_lower_triangular_jacobian():
    transform = MaskedAutoregressiveTransform(
        features=5,
        context=0,
        univariate=MonotonicAffineTransform,
        shapes=[(), ()],
        hidden_features=(64, 128, 256),
    )
    check_seed001_autoregressive(transform)


def test_conditional_maf_samples_one_event_per_context():
    flow = MAF(features=5, context=8, transforms=3)
    c = torch.randn(8)
    assert flow(c).sample().shape == (5,)


def seed001_custom_flow(univariate, shapes) -> Flow:
    return Flow(
        transform=[
            UnconditionalTransform(
                AffineTransform, torch.tensor(1 / 512), torch.tensor(1 / 256), buffer=True
            ),
            UnconditionalTransform(lambda: SigmoidTransform().inv),
            MaskedAutoregressiveTransform(features=5, context=8, passes=5),
            UnconditionalTransform(RotationTransform, torch.randn(5, 5)),
            GeneralCouplingTransform(
                features=5,
                context=8,
                univariate=univariate,
                shapes=shapes,
                hidden_features=(256, 256),
                activation=torch.nn.ELU,
            ).inv,
        ],
        base=UnconditionalDistribution(
            BoxUniform, torch.full([5], -3.0), torch.full([5], +3.0), buffer=True
        ),
    )


def check_seed001_custom_flow(flow: Flow) -> None:
    assert [name for name, _ in flow.named_buffers()][:2] == [
        "transform.transforms.0._0",
        "transform.transforms.0._1",
    ]
    c = torch.randn(8)
    x = flow(c).sample((10,))
    assert x.shape == (10, 5)
    # Samples lie in the data domain ]0, 255[ and have finite densities.
    assert ((x > 0) & (x < 255)).all()
    log_p = flow(c).log_prob(x)
    assert torch.isfinite(log_p).all()
    flow(c).log_prob(x).mean().backward()
    assert all(p.grad is not None for p in flow.parameters())


@pytest.mark.together("flows.splines")
def test_custom_flow_with_rqs_coupling_samples_in_domain_and_trains():
    check_seed001_custom_flow(seed001_custom_flow(rqs(), ([8], [8], [7])))


def test_custom_flow_with_affine_coupling_samples_in_domain_and_trains():
    check_seed001_custom_flow(seed001_custom_flow(MonotonicAffineTransform, [(), ()]))


# Seed 002: the lazy module.


def test_unconditional_distribution_repr_and_seeded_sample():
    f = DiagNormal
    mu, sigma = torch.zeros(3), torch.ones(3)
    base = UnconditionalDistribution(f, mu, sigma, buffer=True)
    assert repr(base()) == "DiagNormal(loc: torch.Size([3]), scale: torch.Size([3]))"
    torch.manual_seed(0)
    torch.testing.assert_close(
        base().sample(), torch.tensor([1.5410, -0.2934, -2.1788]), atol=1e-4, rtol=0
    )


def test_unconditional_transform_repr_and_values():
    t = UnconditionalTransform(ExpTransform)
    assert repr(t()) == "ExpTransform()"
    x = torch.randn(3)
    torch.testing.assert_close(t()(x), x.exp())


def test_flow_called_with_context_returns_a_normalizing_flow():
    flow = Flow(
        MaskedAutoregressiveTransform(3, 2),
        UnconditionalDistribution(DiagNormal, torch.zeros(3), torch.ones(3), buffer=True),
    )
    assert isinstance(flow(torch.randn(2)), NormalizingFlow)


# Seed 003: AutoregressiveTransform.


class AutoregressiveNet(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, 64), nn.ReLU(), nn.Linear(64, features * 2))

    def forward(self, x):
        shift, scale = self.net(x).chunk(2, dim=-1)
        return MonotonicAffineTransform(shift, scale)


def test_autoregressive_transform_inverse_and_ladj_shapes():
    net = AutoregressiveNet(features=5)
    transform = AutoregressiveTransform(meta=net, passes=3)
    x = torch.randn(32, 5)
    y = transform(x)
    assert transform.inv(y).shape == (32, 5)
    assert transform.log_abs_det_jacobian(x, y).shape == (32,)


class MaskedLinear(nn.Linear):
    def __init__(self, in_features, out_features, mask):
        super().__init__(in_features, out_features)
        self.register_buffer("mask", mask)

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class AutoregressiveMaskedNet(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        # The seed's mask, tril(...).expand(64, -1), cannot expand a (5, 5) matrix to 64 rows;
        # here hidden unit k sees inputs < degree(k), and feature i's output units have degree
        # i, as in MADE.
        degree = torch.arange(64) % features
        hidden_mask = (torch.arange(features)[None, :] < degree[:, None]).float()
        output_mask = (degree[None, :] <= torch.arange(features)[:, None]).float()
        output_mask = torch.cat([output_mask, output_mask]) * (degree > 0).float()
        self.masked = MaskedLinear(features, 64, hidden_mask)
        self.output = MaskedLinear(64, features * 2, output_mask)

    def forward(self, x):
        h = F.relu(self.masked(x))
        shift, scale = self.output(h).chunk(2, dim=-1)
        return MonotonicAffineTransform(shift, scale)


def test_autoregressive_transform_over_masked_net_is_exactly_invertible():
    net = AutoregressiveMaskedNet(features=5)
    transform = AutoregressiveTransform(meta=net, passes=5)
    x = torch.randn(32, 5)
    y, ladj = transform.call_and_ladj(x)
    assert ladj.shape == (32,)
    torch.testing.assert_close(transform.inv(y), x, atol=1e-5, rtol=1e-5)


def test_autoregressive_transforms_with_permutations_keep_the_shape():
    transforms = []
    for _ in range(3):
        transforms.append(AutoregressiveTransform(meta=AutoregressiveNet(10), passes=3))
        transforms.append(PermutationTransform(torch.randperm(10)))
    flow = ComposedTransform(*transforms)
    assert flow(torch.randn(64, 10)).shape == (64, 10)


# Seed 004: MAF.


def test_unconditional_maf_sample_and_log_prob_shapes():
    flow = MAF(features=3, transforms=3, hidden_features=[64, 64])
    dist = flow()
    samples = dist.sample((1000,))
    assert samples.shape == (1000, 3)
    assert dist.log_prob(samples).shape == (1000,)


def test_conditional_maf_sample_and_log_prob_shapes():
    flow = MAF(features=3, context=4, transforms=3)
    c = torch.randn(4)
    x = flow(c).sample()
    log_p = flow(c).log_prob(x)
    assert x.shape == (3,)
    assert log_p.shape == ()


def test_maf_training_loop_lowers_the_loss():
    torch.manual_seed(0)
    flow = MAF(features=10, transforms=5, hidden_features=[128, 128])
    data = torch.randn(256, 10) * 2 + 1
    dataloader = data.split(64)
    optimizer = torch.optim.Adam(flow.parameters(), lr=1e-3)
    first = -flow().log_prob(data).mean().item()
    for _ in range(2):
        for x in dataloader:
            optimizer.zero_grad()
            loss = -flow().log_prob(x).mean()
            loss.backward()
            optimizer.step()
    assert -flow().log_prob(data).mean().item() < first


def test_maf_with_two_passes_samples_with_finite_log_prob():
    flow = MAF(features=100, transforms=3, passes=2)
    assert all(t.passes == 2 for t in flow.transform.transforms)
    x = flow().sample((4,))
    assert x.shape == (4, 100)
    assert torch.isfinite(flow().log_prob(x)).all()


def test_maf_takes_a_univariate_constructor_with_shapes():
    flow = MAF(features=5, univariate=MonotonicAffineTransform, shapes=[(), ()])
    assert flow().sample().shape == (5,)


def test_maf_keeps_a_given_feature_order():
    order = torch.tensor([2, 0, 1, 3, 4])
    flow = MAF(features=5, transforms=3, order=order)
    assert torch.equal(flow.transform.transforms[0].order, order)
    assert flow().sample((2,)).shape == (2, 5)
