"""Resolving ``univariate`` (registered name or constructor with shapes) in lazy transforms."""

from __future__ import annotations

import pytest
import torch

from flows.core.layers import (
    ElementWiseTransform,
    GeneralCouplingTransform,
    MaskedAutoregressiveTransform,
)
from flows.core.layers.univariate import UnivariateLayout, resolve_univariate
from flows.core.plugins import RegistryError
from flows.core.transforms import AdditiveTransform, MonotonicAffineTransform

LAYERS = [ElementWiseTransform, GeneralCouplingTransform, MaskedAutoregressiveTransform]


def test_registered_name_takes_its_hyper_parameters_from_kwargs():
    layout, network = resolve_univariate(
        "T", "affine", None, {"slope": 0.05, "hidden_features": [8]}, ["hidden_features"]
    )
    assert layout.total == 2
    assert network == {"hidden_features": [8]}
    f = layout.build(torch.zeros(3, 2))
    assert isinstance(f, MonotonicAffineTransform)
    assert f.slope == 0.05


def test_hyper_parameters_reach_the_univariate_in_a_layer():
    t = MaskedAutoregressiveTransform(3, slope=0.25, hidden_features=[8])
    assert t().meta(torch.zeros(3)).slope == 0.25


def test_constructor_with_shapes():
    layout, network = resolve_univariate(
        "T", AdditiveTransform, [()], {"activation": torch.nn.ELU}, ["activation"]
    )
    assert layout.total == 1 and network == {"activation": torch.nn.ELU}


def test_layout_splits_with_views_only():
    layout = UnivariateLayout(lambda *p: p, [(), (2, 3), (4,)], "test")
    assert layout.total == 11
    p = torch.randn(5, 7, 11)
    a, b, c = layout.split(p)
    assert a.shape == (5, 7) and b.shape == (5, 7, 2, 3) and c.shape == (5, 7, 4)
    for part in (a, b, c):
        assert part.untyped_storage().data_ptr() == p.untyped_storage().data_ptr()
    torch.testing.assert_close(b[..., 1, 2], p[..., 6])
    torch.testing.assert_close(c[..., 0], p[..., 7])


@pytest.mark.parametrize("layer", LAYERS)
def test_unknown_kwarg_names_it_and_lists_accepted(layer):
    with pytest.raises(TypeError) as error:
        layer(4, hiden_features=[8])
    message = str(error.value)
    assert "'hiden_features'" in message
    assert "hidden_features" in message.replace("'hiden_features'", "")
    assert "slope" in message  # the hyper-parameters of the default univariate


@pytest.mark.parametrize("layer", LAYERS)
def test_constructor_without_shapes_is_refused(layer):
    with pytest.raises(
        TypeError, match="MonotonicAffineTransform is a constructor, so the shapes"
    ):
        layer(4, univariate=MonotonicAffineTransform)


@pytest.mark.parametrize("layer", LAYERS)
def test_shapes_with_a_name_are_refused(layer):
    with pytest.raises(TypeError, match=r"shapes=.* is only for a univariate constructor"):
        layer(4, univariate="affine", shapes=[(), ()])


@pytest.mark.parametrize("shapes", ["ab", [3], [("a",)], [], [(-1,)]])
def test_malformed_shapes_are_refused(shapes):
    with pytest.raises(TypeError, match="shapes must be a sequence of shapes"):
        MaskedAutoregressiveTransform(3, univariate=MonotonicAffineTransform, shapes=shapes)


def test_hyper_parameter_with_a_constructor_is_refused():
    with pytest.raises(TypeError, match="'slope'"):
        MaskedAutoregressiveTransform(
            3, univariate=MonotonicAffineTransform, shapes=[(), ()], slope=0.1
        )


def test_unknown_name_is_a_registry_error():
    with pytest.raises(RegistryError, match="no-such-transform"):
        MaskedAutoregressiveTransform(3, univariate="no-such-transform")


def test_non_callable_univariate_is_refused():
    with pytest.raises(TypeError, match="univariate must be a registered transform name"):
        ElementWiseTransform(3, univariate=3.0, shapes=[()])
