"""MaskedAutoregressiveTransform: dependency structure, passes, orders, adjacency, errors."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.core.layers import MaskedAutoregressiveTransform
from flows.core.layers.autoregressive import autoregressive_depth
from flows.core.transforms import AutoregressiveTransform

H = {"hidden_features": [32, 32]}


def perturbed(t: torch.nn.Module, dtype, device) -> torch.nn.Module:
    with torch.no_grad():
        for p in t.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return t.to(dtype=dtype, device=device)


def dependency_pattern(f, features: int, dtype, device) -> torch.Tensor:
    """Which outputs depend on which inputs, from the autograd Jacobian at random points."""
    pattern = torch.zeros(features, features, dtype=torch.bool, device=device)
    for _ in range(3):
        x = torch.randn(features, dtype=dtype, device=device)
        pattern |= torch.autograd.functional.jacobian(f, x).abs() > 0
    return pattern.cpu()


def test_jacobian_is_lower_triangular_in_ascending_order(dtype, device):
    t = perturbed(MaskedAutoregressiveTransform(5, **H), dtype, device)
    pattern = dependency_pattern(t(), 5, dtype, device)
    assert torch.equal(pattern, torch.ones(5, 5, dtype=torch.bool).tril())


def test_jacobian_is_triangular_in_the_given_order(dtype, device):
    order = torch.tensor([2, 0, 4, 1, 3])  # the rank of each feature
    t = perturbed(MaskedAutoregressiveTransform(5, order=order, **H), dtype, device)
    pattern = dependency_pattern(t(), 5, dtype, device)
    # Output i depends on input j exactly when rank(j) <= rank(i).
    assert torch.equal(pattern, order[None, :] <= order[:, None])


@pytest.mark.parametrize(("features", "passes", "groups"), [(6, 2, 2), (6, 3, 3), (5, 2, 2)])
def test_passes_make_groups_transformed_given_earlier_groups(
    features, passes, groups, dtype, device
):
    t = perturbed(MaskedAutoregressiveTransform(features, passes=passes, **H), dtype, device)
    assert t.passes == groups
    group = torch.arange(features) // -(-features // passes)
    pattern = dependency_pattern(t(), features, dtype, device)
    expected = (group[:, None] > group[None, :]) | torch.eye(features, dtype=torch.bool)
    assert torch.equal(pattern, expected)


def test_inverse_uses_one_pass_per_group(dtype, device):
    t = MaskedAutoregressiveTransform(8, passes=2, **H)
    f = t()
    assert isinstance(f, AutoregressiveTransform)
    assert f.passes == 2
    assert MaskedAutoregressiveTransform(8, **H)().passes == 8


def test_inverse_is_exact_after_its_passes(dtype, device):
    t = perturbed(MaskedAutoregressiveTransform(6, 2, passes=3, **H), dtype, device)
    c = torch.randn(2, dtype=dtype, device=device)
    f = t(c)
    x = torch.randn(10, 6, dtype=dtype, device=device)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert (f.inv(f(x)) - x).abs().max() < tol


def test_custom_adjacency_is_the_dependency_structure(dtype, device):
    adjacency = torch.tensor(
        [[0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool
    )
    t = perturbed(MaskedAutoregressiveTransform(4, adjacency=adjacency, **H), dtype, device)
    assert t.passes == 3  # 0 -> 1 -> 2 is the longest chain
    pattern = dependency_pattern(t(), 4, dtype, device)
    assert torch.equal(pattern, adjacency | torch.eye(4, dtype=torch.bool))
    f = t()
    x = torch.randn(4, dtype=dtype, device=device)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    assert (f.inv(f(x)) - x).abs().max() < tol


def test_custom_adjacency_with_context_columns(dtype, device):
    adjacency = torch.tensor([[0, 0, 1, 0], [1, 0, 0, 1]], dtype=torch.bool)  # 2 features, 2 ctx
    t = perturbed(MaskedAutoregressiveTransform(2, 2, adjacency=adjacency, **H), dtype, device)
    x = torch.randn(2, dtype=dtype, device=device)
    c = torch.randn(2, dtype=dtype, device=device)
    # Dependency of the outputs on the context, through the parameters.
    jacobian = torch.autograd.functional.jacobian(lambda c: t(c)(x), c)
    assert torch.equal(jacobian.abs().cpu() > 0, adjacency[:, 2:])


def test_cyclic_adjacency_is_refused():
    adjacency = torch.tensor([[0, 1, 0], [0, 0, 1], [1, 0, 0]], dtype=torch.bool)
    with pytest.raises(ValueError, match="cycle"):
        MaskedAutoregressiveTransform(3, adjacency=adjacency)


def test_adjacency_with_self_dependency_is_refused():
    adjacency = torch.tensor([[1, 0], [1, 0]], dtype=torch.bool)
    with pytest.raises(ValueError, match="diagonal"):
        MaskedAutoregressiveTransform(2, adjacency=adjacency)


@pytest.mark.parametrize(
    "adjacency",
    [torch.zeros(3, 3), torch.zeros(3, 2, dtype=torch.bool), [[False] * 3] * 3],
    ids=["float", "shape", "list"],
)
def test_malformed_adjacency_is_refused(adjacency):
    with pytest.raises(ValueError, match="adjacency must be a boolean tensor of shape"):
        MaskedAutoregressiveTransform(3, adjacency=adjacency)


def test_adjacency_excludes_order_and_passes():
    adjacency = torch.zeros(3, 3, dtype=torch.bool)
    adjacency[1, 0] = True
    with pytest.raises(ValueError, match="adjacency alone"):
        MaskedAutoregressiveTransform(3, passes=2, adjacency=adjacency)


@pytest.mark.parametrize("order", [[0, 1, 1], [0, 1], [1, 2, 3], torch.tensor([0.0, 1.0, 2.0])])
def test_order_must_be_a_permutation(order):
    with pytest.raises(ValueError, match=r"order must be a permutation of 0, \.\.\., 2"):
        MaskedAutoregressiveTransform(3, order=order)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": 0}, "features must be an int >= 1, got 0"),
        ({"features": 3, "context": -1}, "context must be an int >= 0, got -1"),
        ({"features": 3, "passes": 0}, "passes must be an int >= 1, got 0"),
    ],
)
def test_bad_counts_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MaskedAutoregressiveTransform(**kwargs)


def test_one_feature_without_context_has_free_parameters(dtype, device):
    t = MaskedAutoregressiveTransform(1).to(dtype=dtype, device=device)
    assert t.hyper is None
    f = t()
    x = torch.randn(7, 1, dtype=dtype, device=device)
    y, ladj = f.call_and_ladj(x)
    assert y.shape == (7, 1) and ladj.shape == (7,)
    torch.testing.assert_close(f.inv(y), x)


def test_repr_names_the_structure():
    text = repr(MaskedAutoregressiveTransform(4, 2, passes=2, hidden_features=[8]))
    assert "features=4, context=2, passes=2, univariate='affine'" in text


@st.composite
def dags(draw):
    features = draw(st.integers(1, 6))
    rank = torch.tensor(draw(st.permutations(range(features))))
    bits = draw(
        st.lists(st.booleans(), min_size=features * features, max_size=features * features)
    )
    upper = torch.tensor(bits).reshape(features, features)
    # Only edges from lower to higher rank: acyclic whatever the bits.
    return upper & (rank[:, None] > rank[None, :])


@settings(max_examples=40, deadline=None)
@given(dags())
def test_depth_is_the_longest_dependency_chain(dependency):
    depth = autoregressive_depth(dependency)
    for i in range(len(depth)):
        parents = dependency[i].nonzero().flatten()
        expected = int(depth[parents].max()) + 1 if len(parents) else 0
        assert int(depth[i]) == expected
