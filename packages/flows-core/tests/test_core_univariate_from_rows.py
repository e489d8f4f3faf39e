"""The optional ``from_rows`` of univariate constructors: a parameters-first block taken whole.

A masked autoregressive layer computes its univariate parameters as one block ``(total, F, N)``;
a constructor with a ``from_rows(rows, batch, **options)`` class method receives that block, any
other receives per-parameter views of it. Both give the same transform.
"""

from __future__ import annotations

import functools
import sys
import types
from typing import ClassVar

import pytest
import torch

from flows.core import plugins
from flows.core.layers import MaskedAutoregressiveTransform
from flows.core.layers.univariate import UnivariateLayout, parameters_from_rows
from flows.core.plugins import TransformSpec, hookimpl
from flows.core.testing import check_univariate
from flows.core.transforms import MonotonicAffineTransform


class PackedAffine(MonotonicAffineTransform):
    """The monotonic affine map with its shift and log-scale in one parameter of shape (2,)."""

    def __init__(self, p, slope=1e-3):
        super().__init__(p[..., 0], p[..., 1], slope=slope)


def with_from_rows() -> type[PackedAffine]:
    """A fresh subclass that also takes the block whole, and records each block it gets."""

    class PackedAffineFromRows(PackedAffine):
        blocks: ClassVar[list[tuple[torch.Tensor, tuple[int, ...], float]]] = []

        @classmethod
        def from_rows(cls, rows, batch, slope=1e-3):
            cls.blocks.append((rows, tuple(batch), slope))
            p = rows.permute(2, 1, 0).reshape(*batch, rows.shape[1], 2)
            return cls(p, slope=slope)

    return PackedAffineFromRows


def layer_pair(constructor, dtype, device):
    """Two masked layers with the same weights: with ``constructor``, and without from_rows."""
    layer, plain = (
        MaskedAutoregressiveTransform(3, 2, univariate=c, shapes=[(2,)], hidden_features=[16]).to(
            dtype=dtype, device=device
        )
        for c in (constructor, PackedAffine)
    )
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))  # away from the near-identity start
    plain.load_state_dict(layer.state_dict())
    return layer, plain


def test_layout_hands_the_block_to_from_rows(dtype, device):
    constructor = with_from_rows()
    rows = torch.randn(2, 3, 10, dtype=dtype, device=device)
    t = UnivariateLayout(constructor, [(2,)]).build_parameters_first(rows, (2, 5))
    assert isinstance(t, constructor)
    ((block, batch, slope),) = constructor.blocks
    assert block is rows and batch == (2, 5) and slope == 1e-3
    views = UnivariateLayout(PackedAffine, [(2,)]).build_parameters_first(rows, (2, 5))
    x = torch.randn(2, 5, 3, dtype=dtype, device=device)
    for got, expected in zip(t.call_and_ladj(x), views.call_and_ladj(x), strict=True):
        torch.testing.assert_close(got, expected)


def test_without_from_rows_the_constructor_gets_views_of_the_block(dtype, device):
    rows = torch.randn(2, 3, 10, dtype=dtype, device=device)
    t = UnivariateLayout(PackedAffine, [(2,)]).build_parameters_first(rows, (2, 5))
    assert t.shift.untyped_storage().data_ptr() == rows.untyped_storage().data_ptr()
    torch.testing.assert_close(t.shift, rows[0].T.reshape(2, 5, 3))
    (p,) = parameters_from_rows(rows, (2, 5), [(2,)])
    assert p.shape == (2, 5, 3, 2)
    torch.testing.assert_close(p[..., 1], rows[1].T.reshape(2, 5, 3))


class AffineFromRows(MonotonicAffineTransform):
    """The monotonic affine map, which also takes its shift and scale as one block."""

    @classmethod
    def from_rows(cls, rows, batch):
        raise AssertionError("from_rows called")


def test_bound_positional_parameters_keep_the_constructor(dtype, device):
    # Only the constructor knows where the block's parameters go after a bound positional one.
    shift = torch.tensor(0.5, dtype=dtype, device=device)
    rows = torch.randn(1, 3, 4, dtype=dtype, device=device)
    bound = functools.partial(AffineFromRows, shift)
    t = UnivariateLayout(bound, [()]).build_parameters_first(rows, (4,))
    expected = MonotonicAffineTransform(shift, rows[0].T)
    x = torch.randn(4, 3, dtype=dtype, device=device)
    torch.testing.assert_close(t(x), expected(x))


@pytest.mark.parametrize("gradients", [True, False], ids=["grad", "no_grad"])
def test_masked_layer_uses_from_rows_and_agrees_without_it(gradients, dtype, device):
    torch.manual_seed(0)
    constructor = with_from_rows()
    layer, plain = layer_pair(constructor, dtype, device)
    c = torch.randn(7, 2, dtype=dtype, device=device)
    x = torch.randn(7, 3, dtype=dtype, device=device)
    with torch.set_grad_enabled(gradients):
        y, ladj = layer(c).call_and_ladj(x)
        assert constructor.blocks, "the layer did not hand its block to from_rows"
        rows, batch, _ = constructor.blocks[-1]
        assert rows.shape == (2, 3, 7) and batch == (7,)
        expected_y, expected_ladj = plain(c).call_and_ladj(x)
        torch.testing.assert_close(y, expected_y)
        torch.testing.assert_close(ladj, expected_ladj)
        torch.testing.assert_close(layer(c).inv(y), x)
        torch.testing.assert_close(plain(c).inv(y), x)


def test_registered_constructor_with_from_rows_gets_its_options(monkeypatch, dtype, device):
    constructor = with_from_rows()
    module = types.ModuleType("flows_test_from_rows")
    module.PackedAffineFromRows = constructor  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, module.__name__, module)

    class Plugin:
        @hookimpl
        def flows_register_transforms(self):
            return [
                TransformSpec(
                    "packed-affine",
                    "flows_test_from_rows:PackedAffineFromRows",
                    shapes=lambda: [(2,)],
                    summary="an affine map, parameters in one vector",
                    options={"slope": 1e-3},
                )
            ]

    plugin = Plugin()
    plugins.register(plugin)
    try:
        layer = MaskedAutoregressiveTransform(
            3, univariate="packed-affine", slope=0.01, hidden_features=[8]
        ).to(dtype=dtype, device=device)
        t = layer().meta(torch.randn(5, 3, dtype=dtype, device=device))
        assert isinstance(t, constructor) and t.slope == 0.01
        ((rows, batch, slope),) = constructor.blocks
        assert rows.shape == (2, 3, 5) and batch == (5,) and slope == 0.01
    finally:
        plugins.unregister(plugin)


def test_contract_kit_checks_from_rows_against_the_constructor(dtype, device):
    check_univariate(with_from_rows(), [(2,)], batch=(4,), dtype=dtype, device=device)
