"""MaskedMLP: the Jacobian is null exactly where the adjacency is False, for any adjacency."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from flows.nn import (
    MaskedLinear,
    MaskedMLP,
    MaskedResidualBlock,
    adjacency_masks,
    mask_connectivity,
)

# The dtype and device fixtures are plain values: sharing them across examples is safe.
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
# Torch's generator is seeded from the example, so a failure replays exactly.
SEEDS = st.integers(0, 2**31 - 1)


@st.composite
def adjacencies(draw: st.DrawFn, max_size: int = 7) -> Tensor:
    """Boolean matrices of any density, with at least one True entry."""
    rows = draw(st.integers(1, max_size))
    columns = draw(st.integers(1, max_size))
    density = draw(st.sampled_from([0.1, 0.3, 0.5, 0.8, 1.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    generator = torch.Generator().manual_seed(seed)
    adjacency = torch.rand(rows, columns, generator=generator) < density
    i, j = draw(st.integers(0, rows - 1)), draw(st.integers(0, columns - 1))
    adjacency[i, j] = True
    return adjacency


def distinct_rows(adjacency: Tensor) -> set[frozenset[int]]:
    return {frozenset(j for j, a in enumerate(row) if a) for row in adjacency.tolist()} - {
        frozenset()
    }


def minimal_rows(adjacency: Tensor) -> int:
    rows = distinct_rows(adjacency)
    return sum(not any(other < row for other in rows) for row in rows)


def jacobian(net: nn.Module, x: Tensor) -> Tensor:
    """The Jacobians at each of the vectors x, with shape (batch, M, N)."""
    return torch.func.vmap(torch.func.jacrev(net))(x)


def block_order_masks(net: MaskedMLP) -> list[Tensor]:
    """The masks of the layers in the order the data goes through them."""
    return [module.mask.bool() for module in net.modules() if isinstance(module, MaskedLinear)]


@SETTINGS
@given(adjacency=adjacencies(), residual=st.booleans(), extra=st.integers(0, 6), seed=SEEDS)
def test_masked_mlp_jacobian_is_null_exactly_where_adjacency_is_false(
    adjacency: Tensor,
    residual: bool,
    extra: int,
    seed: int,
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    torch.manual_seed(seed)
    # Layers at least as wide as the number of distinct rows realize every allowed dependency;
    # ELU has a positive derivative, so no allowed entry vanishes by accident.
    width = len(distinct_rows(adjacency)) + extra
    net = MaskedMLP(adjacency, [width, width, width + 1], activation=nn.ELU, residual=residual)
    net = net.to(dtype=dtype, device=device)

    x = torch.randn(3, adjacency.shape[1], dtype=dtype, device=device)
    nonzero = jacobian(net, x) != 0

    assert torch.equal(nonzero.cpu(), adjacency.expand_as(nonzero))


@SETTINGS
@given(
    adjacency=adjacencies(max_size=9),
    hidden=st.lists(st.integers(1, 6), min_size=0, max_size=3),
    residual=st.booleans(),
    seed=SEEDS,
)
def test_masked_mlp_narrow_layers_never_break_the_zero_pattern(
    adjacency: Tensor,
    hidden: list[int],
    residual: bool,
    seed: int,
    dtype: torch.dtype,
    device: torch.device,
) -> None:
    torch.manual_seed(seed)
    minimal = minimal_rows(adjacency)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net = MaskedMLP(adjacency, hidden, activation=nn.Tanh, residual=residual)
    net = net.to(dtype=dtype, device=device)

    # Outputs lose every dependency exactly when a layer cannot hold every minimal row.
    narrow = bool(hidden) and min(hidden) < minimal
    assert len(caught) == narrow
    if narrow:
        assert f"narrower than the {minimal} minimal rows" in str(caught[0].message)

    x = torch.randn(3, adjacency.shape[1], dtype=dtype, device=device)
    nonzero = (jacobian(net, x) != 0).any(dim=0).cpu()

    assert not nonzero[~adjacency].any()
    if not narrow:
        # Not trivially null: every output allowed some dependency has one.
        assert torch.equal(nonzero.any(dim=1), adjacency.any(dim=1))


@SETTINGS
@given(adjacency=adjacencies(), residual=st.booleans(), seed=SEEDS)
def test_masked_mlp_default_relu_keeps_zero_pattern_for_any_weights(
    adjacency: Tensor, residual: bool, seed: int, dtype: torch.dtype
) -> None:
    torch.manual_seed(seed)
    net = MaskedMLP(adjacency, [16, 16], residual=residual).to(dtype)
    # The masks hold whatever the weights become (training, loading, tampering).
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0.0, 3.0)

    x = torch.randn(8, adjacency.shape[1], dtype=dtype)
    nonzero = (jacobian(net, x) != 0).any(dim=0)
    assert not nonzero[~adjacency].any()
    assert nonzero.any()


@SETTINGS
@given(adjacency=adjacencies(max_size=9), hidden=st.lists(st.integers(1, 12), max_size=4))
def test_adjacency_masks_connect_only_allowed_pairs(adjacency: Tensor, hidden: list[int]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masks = adjacency_masks(adjacency, hidden)

    shapes = [mask.shape for mask in masks]
    widths = [adjacency.shape[1], *hidden, adjacency.shape[0]]
    assert shapes == [(after, before) for before, after in itertools.pairwise(widths)]

    connected = mask_connectivity(masks)
    assert not connected[~adjacency].any()
    if all(width >= len(distinct_rows(adjacency)) for width in hidden):
        assert torch.equal(connected, adjacency)


def test_masked_mlp_maps_any_batch_shape(dtype: torch.dtype, device: torch.device) -> None:
    adjacency = torch.tensor([[True, False, True], [False, True, False]])
    net = MaskedMLP(adjacency, [8]).to(dtype=dtype, device=device)
    assert (net.in_features, net.out_features) == (3, 2)
    for batch in [(), (5,), (2, 4)]:
        y = net(torch.randn(*batch, 3, dtype=dtype, device=device))
        assert y.shape == (*batch, 2)
        assert y.dtype == dtype


def test_masked_mlp_output_without_dependencies_is_a_constant(dtype: torch.dtype) -> None:
    adjacency = torch.tensor([[False, False], [True, True]])
    net = MaskedMLP(adjacency, [8, 8]).to(dtype)
    y = net(torch.randn(10, 2, dtype=dtype))
    torch.testing.assert_close(y[:, 0], y[0, 0].expand(10))
    torch.testing.assert_close(y[:, 0], net[-1].bias[0].expand(10).detach())


def test_masked_mlp_structure_without_and_with_residual_blocks() -> None:
    adjacency = torch.ones(3, 3, dtype=torch.bool).tril(-1)

    plain = MaskedMLP(adjacency, [8, 8, 4], activation=nn.ELU)
    assert [type(layer) for layer in plain] == [
        MaskedLinear,
        nn.ELU,
        MaskedLinear,
        nn.ELU,
        MaskedLinear,
        nn.ELU,
        MaskedLinear,
    ]

    residual = MaskedMLP(adjacency, [8, 8, 4], activation=nn.ELU, residual=True)
    assert [type(layer) for layer in residual] == [
        MaskedLinear,
        MaskedResidualBlock,
        nn.ELU,
        MaskedLinear,
        nn.ELU,
        MaskedLinear,
    ]
    assert isinstance(residual[1].activation, nn.ELU)
    assert (residual[3].in_features, residual[3].out_features) == (8, 4)


def test_masked_residual_block_adds_its_input() -> None:
    mask = torch.eye(4, dtype=torch.bool) | (torch.rand(4, 4) < 0.5)
    block = MaskedResidualBlock(nn.Tanh(), MaskedLinear(mask))
    x = torch.randn(6, 4)
    torch.testing.assert_close(block(x), x + block.linear(torch.tanh(x)))

    with pytest.raises(ValueError, match="linear must be square"):
        MaskedResidualBlock(nn.Tanh(), MaskedLinear(torch.ones(3, 4, dtype=torch.bool)))


def test_masked_linear_multiplies_weight_by_its_mask(dtype: torch.dtype) -> None:
    mask = torch.tensor([[True, False, True], [False, False, True]])
    layer = MaskedLinear(mask).to(dtype)
    assert layer.mask.dtype == dtype
    assert torch.equal(layer.mask, mask.to(dtype))
    assert "mask" in layer.state_dict()

    x = torch.randn(5, 3, dtype=dtype)
    expected = x @ (layer.weight * mask).T + layer.bias
    torch.testing.assert_close(layer(x), expected)


def test_masked_linear_initializes_rows_with_their_actual_fan_in() -> None:
    torch.manual_seed(0)
    mask = torch.zeros(2, 400, dtype=torch.bool)
    mask[0, :4] = True
    mask[1, :] = True
    layer = MaskedLinear(mask)
    # Row 0 sees 4 inputs: bound 1/2. Row 1 sees 400: bound 1/20.
    assert layer.weight[0, :4].abs().max() > 0.2
    assert layer.weight[0].abs().max() <= 0.5
    assert layer.weight[1].abs().max() <= 0.05


def test_masked_linear_effective_weight_is_the_masked_weight(
    dtype: torch.dtype, device: torch.device
) -> None:
    mask = torch.tensor([[True, False, True], [False, False, True]])
    layer = MaskedLinear(mask).to(dtype=dtype, device=device)
    expected = layer.weight * mask.to(dtype=dtype, device=device)
    torch.testing.assert_close(layer.effective_weight(), expected)
    x = torch.randn(4, 3, dtype=dtype, device=device)
    torch.testing.assert_close(layer(x), x @ layer.effective_weight().T + layer.bias)


def test_masked_linear_redraws_only_the_rows_asked_for_as_a_full_reset_would(
    device: torch.device,
) -> None:
    mask = torch.rand(6, 5) < 0.7
    mask[:, 0] = True
    torch.manual_seed(0)
    full = MaskedLinear(mask).to(device)
    partial = MaskedLinear(mask).to(device)
    kept = (partial.weight.detach().clone(), partial.bias.detach().clone())
    torch.manual_seed(1)
    full.reset_parameters()
    torch.manual_seed(1)
    partial.reset_parameters(rows=[1, 4])

    redrawn = torch.tensor([False, True, False, False, True, False], device=device)
    # The rows redrawn get the values of a full reset from the same random state.
    assert torch.equal(partial.weight[redrawn], full.weight[redrawn])
    assert torch.equal(partial.bias[redrawn], full.bias[redrawn])
    assert torch.equal(partial.weight[~redrawn], kept[0][~redrawn])
    assert torch.equal(partial.bias[~redrawn], kept[1][~redrawn])
    assert not torch.equal(partial.weight[redrawn], kept[0][redrawn])


def test_masked_mlp_compiles_into_one_graph(dtype: torch.dtype) -> None:
    torch._dynamo.reset()
    adjacency = torch.ones(4, 4, dtype=torch.bool).tril(-1)
    net = MaskedMLP(adjacency, [8, 8], residual=True).to(dtype)
    compiled = torch.compile(net, fullgraph=True, backend="eager")
    x = torch.randn(5, 4, dtype=dtype)
    torch.testing.assert_close(compiled(x), net(x))
    torch._dynamo.reset()


def test_masked_mlp_over_1000_autoregressive_features_realizes_most_allowed_links() -> None:
    # A MAF-like hyper-network: 1000 features, two parameters per feature, 8 context features.
    features, context = 1000, 8
    adjacency = torch.ones(features, features, dtype=torch.bool).tril(-1)
    adjacency = torch.cat((adjacency, torch.ones(features, context, dtype=torch.bool)), dim=1)
    adjacency = adjacency.repeat_interleave(2, dim=0)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = MaskedMLP(adjacency, [64, 64], activation=nn.ELU)

    connected = mask_connectivity(block_order_masks(net))
    assert not connected[~adjacency].any()
    # Every output depends on something, and the 64 receptive sets spread over the chain of
    # rows: most allowed dependencies are realized, not only those of the first 64 features.
    assert connected.any(dim=1).all()
    assert connected.sum() >= 0.9 * adjacency.sum()

    # The network computes what the masks say: check the Jacobian of a few outputs.
    x = torch.randn(features + context)
    outputs = torch.tensor([0, 1, 2, 801, 1998, 1999])
    rows = torch.func.jacrev(lambda x: net(x)[outputs])(x)
    assert torch.equal(rows != 0, connected[outputs])


def test_masked_mlp_over_1000_features_of_random_adjacency_links_no_forbidden_pair() -> None:
    generator = torch.Generator().manual_seed(0)
    adjacency = torch.rand(1000, 1000, generator=generator) < 0.01
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 64 units cannot serve ~1000 minimal rows
        masks = adjacency_masks(adjacency, [64, 64])

    connected = mask_connectivity(masks)
    assert not connected[~adjacency].any()
    assert connected.any()


def test_masked_mlp_rejects_adjacency_without_true_entry() -> None:
    adjacency = torch.zeros(4, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"shape \(4, 3\) has no True entry.*Jacobian would be"):
        MaskedMLP(adjacency)
    with pytest.raises(ValueError, match="no True entry"):
        MaskedMLP(adjacency, hidden_features=())


@pytest.mark.parametrize(
    ("adjacency", "error", "message"),
    [
        (
            [[True, False]],
            TypeError,
            r"adjacency must be a boolean tensor of shape \(M, N\), got list",
        ),
        (
            torch.ones(2, 3),
            TypeError,
            r"got dtype torch.float32 \(convert it with adjacency\.bool\(\)\)",
        ),
        (torch.ones(2, 3, dtype=torch.int64), TypeError, "got dtype torch.int64"),
        (torch.ones(3, dtype=torch.bool), ValueError, r"got shape \(3,\)"),
        (torch.ones(2, 3, 4, dtype=torch.bool), ValueError, r"got shape \(2, 3, 4\)"),
        (torch.ones(0, 3, dtype=torch.bool), ValueError, r"M, N >= 1, got shape \(0, 3\)"),
    ],
)
def test_masked_mlp_rejects_bad_adjacency(adjacency: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        MaskedMLP(adjacency)


def test_masked_mlp_rejects_bad_hidden_features_and_activation() -> None:
    adjacency = torch.ones(2, 2, dtype=torch.bool)
    with pytest.raises(TypeError, match="hidden_features must be a sequence"):
        MaskedMLP(adjacency, 64)
    with pytest.raises(ValueError, match=r"hidden_features .* \(bad entry 0\)"):
        MaskedMLP(adjacency, [64, 0])
    with pytest.raises(TypeError, match="activation must be a module constructor"):
        MaskedMLP(adjacency, activation=1.0)
