"""The stepwise inverse of MaskedAutoregressiveTransform: one group per pass, only its outputs.

Every stepwise result is checked against the generic fixed-point inverse of
:class:`AutoregressiveTransform` (the meta-function evaluated in full at every pass), and its
log-determinant against the forward one at the solution.
"""

from __future__ import annotations

import copy
import io
import pickle
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.core import MAF
from flows.core.layers import MaskedAutoregressiveTransform
from flows.core.testing import assert_no_graph_breaks
from flows.core.transforms import AutoregressiveTransform, MonotonicAffineTransform


def perturbed(module: torch.nn.Module, dtype, device, scale: float = 0.3) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
    return module.to(dtype=dtype, device=device)


def generic_inverse(f: AutoregressiveTransform, y: torch.Tensor) -> torch.Tensor:
    """The fixed-point inverse that evaluates the full meta-function at every pass."""
    return AutoregressiveTransform._inverse(f, y)


def tolerance(dtype) -> dict[str, float]:
    return {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-9, "rtol": 1e-9}


CONFIGURATIONS = [
    {},
    {"passes": 2},
    {"passes": 3},
    {"order": [3, 0, 4, 1, 2]},
    {"hidden_features": [16]},
    {"hidden_features": [16, 24, 16]},
    {"activation": torch.nn.ELU},
    {"residual": True},  # no stepwise plan: the generic inverse
]


@pytest.mark.parametrize("gradients", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize("context", [0, 3])
@pytest.mark.parametrize("kwargs", CONFIGURATIONS, ids=str)
def test_inverse_matches_the_generic_fixed_point(kwargs, context, gradients, dtype, device):
    # Without gradients the passes update the first layer in place and reuse a cached plan.
    torch.manual_seed(0)
    kwargs = {"hidden_features": [16, 16], **kwargs}
    t = perturbed(MaskedAutoregressiveTransform(5, context, **kwargs), dtype, device)
    c = torch.randn(7, context, dtype=dtype, device=device) if context else None
    f = t(c)
    y = torch.randn(7, 5, dtype=dtype, device=device)

    with torch.set_grad_enabled(gradients):
        x = f.inv(y)
        x_ladj, ladj = f.inv.call_and_ladj(y)
    assert x.shape == y.shape
    torch.testing.assert_close(x, generic_inverse(f, y), **tolerance(dtype))
    torch.testing.assert_close(f(x), y, **tolerance(dtype))

    torch.testing.assert_close(x_ladj, x, **tolerance(dtype))
    _, forward_ladj = f.call_and_ladj(x_ladj)
    assert ladj.shape == (7,)
    torch.testing.assert_close(ladj, -forward_ladj, **tolerance(dtype))


def test_plain_masked_networks_get_a_stepwise_plan():
    assert MaskedAutoregressiveTransform(4, hidden_features=[8, 8]).stepwise is not None
    assert MaskedAutoregressiveTransform(4, 2, passes=2).stepwise is not None
    # Residual blocks and single-pass layers keep the generic inverse.
    assert MaskedAutoregressiveTransform(4, hidden_features=[8, 8], residual=True).stepwise is None
    assert MaskedAutoregressiveTransform(4, passes=1, context=2).stepwise is None


def test_each_pass_builds_and_inverts_only_its_group():
    shapes_seen: list[tuple[int, ...]] = []

    def recording_affine(shift, scale):
        shapes_seen.append(tuple(shift.shape))
        return MonotonicAffineTransform(shift, scale)

    torch.manual_seed(0)
    t = MaskedAutoregressiveTransform(
        6, passes=3, univariate=recording_affine, shapes=[(), ()], hidden_features=[16, 16]
    )
    f = t()
    y = torch.randn(4, 6)
    shapes_seen.clear()
    x = f.inv(y)
    assert shapes_seen == [(4, 2)] * 3  # three groups of two features, one pass each
    torch.testing.assert_close(x, generic_inverse(f, y), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("y_batch", "c_batch", "batch"),
    [((), (), ()), ((2, 3), (3,), (2, 3)), ((), (4,), (4,)), ((4, 1), (5,), (4, 5))],
)
def test_batch_shapes_broadcast_like_the_generic_inverse(y_batch, c_batch, batch, dtype, device):
    torch.manual_seed(1)
    t = perturbed(MaskedAutoregressiveTransform(3, 2, hidden_features=[8, 8]), dtype, device)
    f = t(torch.randn(*c_batch, 2, dtype=dtype, device=device))
    y = torch.randn(*y_batch, 3, dtype=dtype, device=device)
    x, ladj = f.inv.call_and_ladj(y)
    assert x.shape == (*batch, 3)
    assert ladj.shape == batch
    torch.testing.assert_close(x, generic_inverse(f, y), **tolerance(dtype))
    assert f.inv(y).shape == (*batch, 3)


def test_unconditional_batch_shapes(dtype, device):
    torch.manual_seed(2)
    t = perturbed(MaskedAutoregressiveTransform(4, hidden_features=[8, 8]), dtype, device)
    f = t()
    for shape in [(4,), (3, 4), (2, 3, 4), (0, 4)]:
        y = torch.randn(*shape, dtype=dtype, device=device)
        x, ladj = f.inv.call_and_ladj(y)
        assert x.shape == shape and ladj.shape == shape[:-1]
        torch.testing.assert_close(x, generic_inverse(f, y), **tolerance(dtype))


def test_gradients_through_the_inverse_match_the_generic_ones(dtype, device):
    torch.manual_seed(3)
    t = perturbed(MaskedAutoregressiveTransform(4, 2, hidden_features=[8, 8]), dtype, device)
    c = torch.randn(5, 2, dtype=dtype, device=device)
    y = torch.randn(5, 4, dtype=dtype, device=device, requires_grad=True)
    parameters = [y, *t.parameters()]

    x, ladj = t(c).inv.call_and_ladj(y)
    stepwise = torch.autograd.grad((x.square().sum() + ladj.sum()), parameters)
    f = t(c)
    x = generic_inverse(f, y)
    generic = torch.autograd.grad((x.square().sum() - f.call_and_ladj(x)[1].sum()), parameters)
    for a, b in zip(stepwise, generic, strict=True):
        assert not a.isnan().any()
        torch.testing.assert_close(a, b, **tolerance(dtype))


def test_sampling_without_gradients_follows_parameter_updates(dtype, device):
    torch.manual_seed(4)
    t = perturbed(MaskedAutoregressiveTransform(4, hidden_features=[8, 8]), dtype, device)
    y = torch.randn(6, 4, dtype=dtype, device=device)
    with torch.no_grad():
        first = t().inv(y)
        again = t().inv(y)  # the cached plan
        torch.testing.assert_close(first, again, rtol=0, atol=0)
        for p in t.parameters():
            p.mul_(1.5)  # an optimizer step, in place
        updated = t().inv(y)
        torch.testing.assert_close(updated, generic_inverse(t(), y), **tolerance(dtype))
    assert not torch.allclose(first, updated)
    # Same values with gradients enabled (no cache, no in-place update).
    torch.testing.assert_close(t().inv(y), updated, **tolerance(dtype))


def test_sampling_follows_dtype_conversion():
    torch.manual_seed(5)
    flow = MAF(3, transforms=2, hidden_features=[8, 8])
    with torch.no_grad():
        assert flow().sample((2,)).dtype == torch.float32
        flow.double()
        x = flow().sample((2,))
    assert x.dtype == torch.float64


def test_a_loaded_random_order_regroups_the_features():
    torch.manual_seed(6)
    saved = perturbed(
        MAF(5, 2, transforms=2, randperm=True, hidden_features=[16, 16]), None, "cpu"
    )
    buffer = io.BytesIO()
    torch.save(saved.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(7)  # other random orders
    loaded = MAF(5, 2, transforms=2, randperm=True, hidden_features=[16, 16])
    loaded.load_state_dict(torch.load(buffer))
    c = torch.randn(8, 2)
    z = torch.randn(8, 5)
    with torch.no_grad():
        expected = saved(c).transform.inv(z)
        x = loaded(c).transform.inv(z)
        torch.testing.assert_close(x, expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(loaded(c).transform(x), z, atol=1e-5, rtol=1e-5)


def test_rsample_and_log_prob_agree_with_log_prob(dtype, device):
    torch.manual_seed(8)
    flow = perturbed(MAF(4, 3, transforms=3, hidden_features=[16, 16]), dtype, device, 0.1)
    c = torch.randn(10, 3, dtype=dtype, device=device)
    x, log_p = flow(c).rsample_and_log_prob()
    torch.testing.assert_close(log_p, flow(c).log_prob(x), **tolerance(dtype))


@settings(max_examples=15, deadline=None)
@given(
    features=st.integers(2, 6),
    context=st.integers(0, 2),
    passes=st.one_of(st.none(), st.integers(1, 6)),
    hidden=st.lists(st.integers(4, 12), min_size=1, max_size=3),
    gradients=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_stepwise_inverse_is_the_fixed_point(
    features, context, passes, hidden, gradients, seed
):
    torch.manual_seed(seed)
    order = torch.randperm(features)
    t = MaskedAutoregressiveTransform(
        features, context, passes=passes, order=order, hidden_features=hidden
    )
    t = perturbed(t, torch.float64, "cpu")
    c = torch.randn(3, context, dtype=torch.float64) if context else None
    f = t(c)
    y = torch.randn(3, features, dtype=torch.float64)
    with torch.set_grad_enabled(gradients):
        x, ladj = f.inv.call_and_ladj(y)
    torch.testing.assert_close(x, generic_inverse(f, y), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(ladj, -f.call_and_ladj(x)[1], atol=1e-9, rtol=1e-9)


def test_adjacency_groups_by_depth(dtype, device):
    torch.manual_seed(9)
    adjacency = torch.tensor(
        [
            [False, True, False, False],
            [False, False, False, False],
            [True, True, False, False],
            [False, True, False, False],
        ]
    )
    t = MaskedAutoregressiveTransform(4, adjacency=adjacency, hidden_features=[16, 16])
    t = perturbed(t, dtype, device)
    assert t.stepwise.sizes == [1, 2, 1]
    f = t()
    y = torch.randn(5, 4, dtype=dtype, device=device)
    torch.testing.assert_close(f.inv(y), generic_inverse(f, y), **tolerance(dtype))


def test_repr_is_unchanged():
    assert repr(MaskedAutoregressiveTransform(3)()) == "AutoregressiveTransform(passes=3)"


@pytest.mark.parametrize("gradients", [True, False], ids=["grad", "no_grad"])
@pytest.mark.parametrize(
    ("adjacency", "hidden"),
    [
        # Narrow layers: units are not in the order of the groups they read, and were once
        # matched to the wrong units of the next layer.
        (
            [
                [0, 1, 0, 1, 0, 0],
                [0] * 6,
                [1, 1, 0, 0, 0, 0],
                [0] * 6,
                [0] * 6,
                [0, 0, 0, 1, 0, 0],
            ],
            [4, 3],
        ),
        (
            [
                [0] * 6,
                [1, 0, 0, 0, 1, 0],
                [1, 0, 0, 1, 0, 1],
                [0, 1, 0, 0, 0, 1],
                [0] * 6,
                [0, 1, 0, 0, 0, 0],
            ],
            [3, 11],
        ),
    ],
)
def test_custom_adjacency_with_narrow_layers(adjacency, hidden, gradients, dtype, device):
    torch.manual_seed(0)
    adjacency = torch.tensor(adjacency, dtype=torch.bool)
    t = MaskedAutoregressiveTransform(6, 2, adjacency=adjacency, hidden_features=hidden)
    t = perturbed(t, dtype, device)
    assert t.stepwise is not None
    c = torch.randn(7, 2, dtype=dtype, device=device)
    f = t(c)
    y = torch.randn(7, 6, dtype=dtype, device=device)
    with torch.set_grad_enabled(gradients):
        x, ladj = f.inv.call_and_ladj(y)
    torch.testing.assert_close(x, generic_inverse(f, y), **tolerance(dtype))
    torch.testing.assert_close(ladj, -f.call_and_ladj(x)[1], **tolerance(dtype))


@settings(max_examples=25, deadline=None)
@given(
    features=st.integers(2, 6),
    context=st.integers(0, 2),
    hidden=st.lists(st.integers(2, 12), min_size=1, max_size=3),
    gradients=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_property_stepwise_inverse_of_any_adjacency_is_the_fixed_point(
    features, context, hidden, gradients, seed
):
    generator = torch.Generator().manual_seed(seed)
    rank = torch.randperm(features, generator=generator)
    adjacency = (torch.rand(features, features, generator=generator) < 0.5) & (
        rank[:, None] > rank[None, :]
    )
    adjacency[rank.argmax(), rank.argmin()] = True  # at least two passes
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # narrow layers may drop dependencies: still exact
        t = MaskedAutoregressiveTransform(
            features, context, adjacency=adjacency, hidden_features=hidden
        )
    assert t.stepwise is not None
    t = perturbed(t, torch.float64, "cpu")
    c = torch.randn(3, context, dtype=torch.float64) if context else None
    f = t(c)
    y = torch.randn(3, features, dtype=torch.float64)
    with torch.set_grad_enabled(gradients):
        x, ladj = f.inv.call_and_ladj(y)
    torch.testing.assert_close(x, generic_inverse(f, y), atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(ladj, -f.call_and_ladj(x)[1], atol=1e-9, rtol=1e-9)


def test_the_stepwise_state_is_not_in_the_state_dict():
    # Checkpoints hold the order, masks and weights only: the inverse's plan follows from them.
    flow = MAF(4, 2, transforms=2, randperm=True, hidden_features=[8, 8])
    assert not [key for key in flow.state_dict() if "stepwise" in key]
    layer = MaskedAutoregressiveTransform(4, 2, hidden_features=[8, 8])
    assert set(layer.state_dict()) == {"order"} | {
        f"hyper.{i}.{name}" for i in (0, 2, 4) for name in ("weight", "bias", "mask")
    }


def test_copies_invert_with_their_own_network(device):
    torch.manual_seed(10)
    flow = MAF(4, 2, transforms=2, randperm=True, hidden_features=[8, 8])
    flow = perturbed(flow, torch.float64, device)
    c = torch.randn(3, 2, dtype=torch.float64, device=device)
    z = torch.randn(3, 4, dtype=torch.float64, device=device)
    with torch.no_grad():
        expected = flow(c).transform.inv(z)
        copied, pickled = copy.deepcopy(flow), pickle.loads(pickle.dumps(flow))
        torch.testing.assert_close(pickled(c).transform.inv(z), expected, rtol=0, atol=0)
        for p in copied.parameters():
            p.mul_(1.5)
        x = copied(c).transform.inv(z)
        torch.testing.assert_close(flow(c).transform.inv(z), expected, rtol=0, atol=0)
        torch.testing.assert_close(copied(c).transform(x), z, atol=1e-9, rtol=1e-9)
    assert not torch.allclose(x, expected)


@pytest.mark.parametrize("context", [0, 2])
def test_sampling_traces_into_one_graph(context, dtype, device):
    torch._dynamo.reset()
    torch.manual_seed(11)
    flow = MAF(3, context, transforms=2, hidden_features=(8, 8)).to(dtype=dtype, device=device)
    c = torch.randn(5, context, dtype=dtype, device=device) if context else None
    z = torch.randn(5, 3, dtype=dtype, device=device)

    def inverse(z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        x, ladj = flow(c).transform.inv.call_and_ladj(z)
        return x.sum() + ladj.sum()

    try:
        with torch.no_grad():
            assert_no_graph_breaks(inverse, z, c)
    finally:
        torch._dynamo.reset()
