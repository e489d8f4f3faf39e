"""Lazy modules: Flow, LazyComposedTransform, LazyInverse and the Unconditional wrappers."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

from flows.core.distributions import BoxUniform, DiagNormal, NormalizingFlow
from flows.core.layers import MaskedAutoregressiveTransform
from flows.core.lazy import (
    Flow,
    LazyComposedTransform,
    LazyDistribution,
    LazyInverse,
    LazyTransform,
    UnconditionalDistribution,
    UnconditionalTransform,
)
from flows.core.transforms import (
    AffineTransform,
    ComposedTransform,
    ExpTransform,
    MonotonicAffineTransform,
    SigmoidTransform,
)


def affine(features: int = 3, spread: float = 1.0) -> UnconditionalTransform:
    return UnconditionalTransform(
        MonotonicAffineTransform, spread * torch.randn(features), spread * torch.randn(features)
    )


def normal(features: int = 3) -> UnconditionalDistribution:
    return UnconditionalDistribution(
        DiagNormal, torch.zeros(features), torch.ones(features), buffer=True
    )


def test_abstract_lazy_classes_cannot_be_instantiated():
    with pytest.raises(TypeError):
        LazyDistribution()
    with pytest.raises(TypeError):
        LazyTransform()


def test_subclass_of_lazy_distribution_builds_its_distribution():
    class Gaussian(LazyDistribution):
        def __init__(self):
            super().__init__()
            self.hyper = nn.Linear(3, 2)

        def forward(self, c):
            mu, log_sigma = self.hyper(c).unbind(-1)
            return torch.distributions.Normal(mu, log_sigma.exp())

    model = Gaussian()
    c = torch.randn(10, 3)
    loss = -model(c).log_prob(torch.randn(10)).mean()
    loss.backward()
    assert model.hyper.weight.grad is not None
    assert model(c).batch_shape == (10,)


def test_lazy_inverse_builds_the_inverse_and_inverts_back():
    t = affine()
    x = torch.randn(3)
    inverse = t.inv
    assert isinstance(inverse, LazyInverse)
    assert torch.allclose(inverse()(t()(x)), x, atol=1e-6)
    assert inverse.inv is t
    # The inverse shares the parameters, not copies.
    assert {id(p) for p in inverse.parameters()} == {id(p) for p in t.parameters()}


def test_lazy_inverse_rejects_non_lazy_transform():
    with pytest.raises(TypeError, match="LazyTransform"):
        LazyInverse(ExpTransform())


def test_lazy_composed_transform_applies_in_order():
    t = LazyComposedTransform(UnconditionalTransform(ExpTransform), affine())
    f = t()
    assert isinstance(f, ComposedTransform)
    x = torch.randn(3)
    first, second = t.transforms
    assert torch.allclose(f(x), second()(first()(x)))


def test_lazy_composed_transform_errors():
    with pytest.raises(ValueError, match="at least one"):
        LazyComposedTransform()
    with pytest.raises(TypeError, match=r"transforms\[1\]"):
        LazyComposedTransform(affine(), ExpTransform())


def test_flow_log_prob_is_change_of_variables():
    t, base = affine(), normal()
    flow = Flow(t, base)
    x = torch.randn(7, 3)
    z = t()(x)
    ladj = t().log_abs_det_jacobian(x, z).sum(-1)
    expected = base().log_prob(z) + ladj
    dist = flow()
    assert isinstance(dist, NormalizingFlow)
    assert torch.allclose(dist.log_prob(x), expected)


def test_flow_takes_a_list_of_transforms():
    flow = Flow([affine(), affine()], normal())
    assert isinstance(flow.transform, LazyComposedTransform)
    assert len(flow.transform.transforms) == 2
    assert flow().sample((4,)).shape == (4, 3)


def test_flow_rejects_bad_arguments():
    with pytest.raises(TypeError, match="transform"):
        Flow(ExpTransform(), normal())
    with pytest.raises(TypeError, match="base"):
        Flow(affine(), DiagNormal(torch.zeros(3), torch.ones(3)))


def test_flow_batched_context_gives_batched_distribution(dtype, device):
    flow = Flow([MaskedAutoregressiveTransform(3, 2, hidden_features=[8])], normal())
    flow = flow.to(dtype=dtype, device=device)
    c = torch.randn(5, 2, dtype=dtype, device=device)
    dist = flow(c)
    assert dist.batch_shape == (5,)
    assert dist.event_shape == (3,)
    x = dist.sample()
    assert x.shape == (5, 3) and x.dtype == dtype
    assert dist.log_prob(x).shape == (5,)
    # A sample shape in front of the batch shape.
    assert dist.sample((4,)).shape == (4, 5, 3)


def test_unconditional_registers_parameters_or_buffers():
    trainable = UnconditionalDistribution(DiagNormal, torch.zeros(3), torch.ones(3))
    fixed = UnconditionalDistribution(DiagNormal, torch.zeros(3), torch.ones(3), buffer=True)
    assert len(list(trainable.parameters())) == 2
    assert len(list(fixed.parameters())) == 0
    assert len(list(fixed.buffers())) == 2


def test_unconditional_keyword_tensors_and_plain_values():
    t = UnconditionalTransform(AffineTransform, loc=torch.tensor(1.0), scale=2.0)
    assert [name for name, _ in t.named_parameters()] == ["_loc"]
    assert t()(torch.tensor(3.0)) == 7.0


def test_unconditional_module_arguments_are_submodules():
    class Build(nn.Module):
        def __init__(self):
            super().__init__()
            self.loc = nn.Parameter(torch.zeros(2))

        def forward(self):
            return DiagNormal(self.loc, torch.ones_like(self.loc))

    build = Build()
    lazy = UnconditionalDistribution(build)
    assert list(lazy.parameters()) == [build.loc]
    inner = nn.Linear(2, 2)
    t = UnconditionalTransform(lambda m: AffineTransform(m.bias, 1.0), inner)
    assert set(t.parameters()) == set(inner.parameters())


def test_unconditional_ignores_context_and_matches_seed_repr():
    mu, sigma = torch.zeros(3), torch.ones(3)
    base = UnconditionalDistribution(DiagNormal, mu, sigma, buffer=True)
    assert repr(base()) == "DiagNormal(loc: torch.Size([3]), scale: torch.Size([3]))"
    assert repr(base(torch.randn(4))) == repr(base())
    assert "DiagNormal" in repr(base)


def test_unconditional_rejects_non_callable():
    with pytest.raises(TypeError, match="callable"):
        UnconditionalTransform(3.0)


def test_unconditional_follows_to_dtype(dtype, device):
    base = UnconditionalDistribution(DiagNormal, torch.zeros(3), torch.ones(3), buffer=True)
    base = base.to(dtype=dtype, device=device)
    sample = base().sample()
    assert sample.dtype == dtype and sample.device.type == device.type


def seed_like_flow() -> Flow:
    """A custom flow like the tutorial's: buffers, a lambda, a hyper-network, free parameters."""
    return Flow(
        transform=[
            UnconditionalTransform(
                AffineTransform, torch.tensor(1 / 512), torch.tensor(1 / 256), buffer=True
            ),
            UnconditionalTransform(lambda: SigmoidTransform().inv),
            MaskedAutoregressiveTransform(features=3, context=2, hidden_features=[8]),
            affine(spread=0.1),
        ],
        base=UnconditionalDistribution(
            BoxUniform, torch.full([3], -3.0), torch.full([3], 3.0), buffer=True
        ),
    )


def test_flow_with_lambda_deepcopies_and_round_trips_state_dict():
    flow = seed_like_flow()
    x = 64 + torch.rand(6, 3) * 128  # well inside the base's support after the logit
    c = torch.randn(6, 2)
    expected = flow(c).log_prob(x)
    twin = copy.deepcopy(flow)
    assert torch.equal(twin(c).log_prob(x), expected)

    other = seed_like_flow()
    assert not torch.equal(other(c).log_prob(x), expected)
    buffer = io.BytesIO()
    torch.save(flow.state_dict(), buffer)
    buffer.seek(0)
    other.load_state_dict(torch.load(buffer))
    assert torch.equal(other(c).log_prob(x), expected)


def test_whole_flow_save_and_load():
    flow = Flow([affine(), MaskedAutoregressiveTransform(3, hidden_features=[8])], normal())
    x = torch.randn(4, 3)
    buffer = io.BytesIO()
    torch.save(flow, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    assert torch.equal(loaded().log_prob(x), flow().log_prob(x))
