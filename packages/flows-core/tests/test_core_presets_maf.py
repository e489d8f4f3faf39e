"""MAF: orders, passes, univariate choice, errors."""

from __future__ import annotations

import pytest
import torch

from flows.core.distributions import DiagNormal
from flows.core.layers import MaskedAutoregressiveTransform
from flows.core.lazy import Flow, UnconditionalDistribution
from flows.core.presets import MAF
from flows.core.transforms import AdditiveTransform


def layers(flow: MAF) -> list[MaskedAutoregressiveTransform]:
    return list(flow.transform.transforms)


def test_orders_alternate_ascending_and_descending():
    flow = MAF(4, transforms=3)
    orders = [t.order.tolist() for t in layers(flow)]
    assert orders == [[0, 1, 2, 3], [3, 2, 1, 0], [0, 1, 2, 3]]


def test_explicit_order_in_even_layers_and_reversed_in_odd():
    order = torch.tensor([2, 0, 1, 3, 4])
    flow = MAF(5, transforms=2, order=order)
    assert layers(flow)[0].order.tolist() == [2, 0, 1, 3, 4]
    assert layers(flow)[1].order.tolist() == [2, 4, 3, 1, 0]


def test_randperm_gives_permutations():
    torch.manual_seed(0)
    flow = MAF(6, transforms=4, randperm=True)
    orders = [t.order for t in layers(flow)]
    for order in orders:
        assert sorted(order.tolist()) == list(range(6))
    assert any(not torch.equal(order, torch.arange(6)) for order in orders)


def test_passes_are_forwarded_to_every_layer():
    assert [t.passes for t in layers(MAF(6, transforms=3, passes=2))] == [2, 2, 2]


def test_univariate_by_name_and_hyper_parameters():
    flow = MAF(3, transforms=2, univariate="additive")
    x = torch.randn(10, 3)
    # Additive layers preserve volume: the density is the base's at the image.
    z = flow().transform(x)
    torch.testing.assert_close(flow().log_prob(x), flow.base().log_prob(z))
    slope = MAF(3, transforms=1, slope=0.2)
    assert layers(slope)[0]().meta(torch.zeros(3)).slope == 0.2


def test_adjacency_is_shared_by_every_layer():
    adjacency = torch.tensor([[0, 0, 0], [1, 0, 0], [1, 0, 0]], dtype=torch.bool)
    flow = MAF(3, transforms=2, adjacency=adjacency)
    assert [t.passes for t in layers(flow)] == [2, 2]


def test_base_is_a_fixed_standard_normal():
    flow = MAF(3)
    base = flow.base()
    assert isinstance(flow.base, UnconditionalDistribution)
    assert isinstance(base, DiagNormal)
    assert torch.equal(base.loc, torch.zeros(3)) and torch.equal(base.scale, torch.ones(3))
    assert not any(p is base.loc for p in flow.parameters())
    assert isinstance(flow, Flow)


def test_affine_layers_start_random_while_other_univariates_start_at_the_identity():
    torch.manual_seed(0)
    x = torch.randn(100, 4)
    flow = MAF(4, transforms=3)
    # Random affine maps (measured better fits), whose shifts start at zero.
    gap = flow().log_prob(x) - flow.base().log_prob(x)
    assert gap.abs().max() > 0.1
    assert all(bool((layer.hyper[-1].bias == 0).all()) for layer in layers(flow))
    assert torch.isfinite(gap).all()

    shifts = MAF(4, transforms=3, univariate="additive")
    torch.testing.assert_close(shifts.transform()(x), x, atol=0.1, rtol=0.0)
    layer = MaskedAutoregressiveTransform(4)  # the layer alone starts at the identity
    torch.testing.assert_close(layer()(x), x, atol=0.1, rtol=0.0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"features": 3, "transforms": 0}, ValueError, "transforms must be an int >= 1, got 0"),
        ({"features": 0}, ValueError, "features must be an int >= 1, got 0"),
        ({"features": 3, "hiddenfeatures": [8]}, TypeError, "'hiddenfeatures'"),
        ({"features": 3, "univariate": AdditiveTransform}, TypeError, "shapes"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        MAF(**kwargs)
