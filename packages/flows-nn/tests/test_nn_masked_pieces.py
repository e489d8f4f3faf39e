"""MaskedMLP evaluated in pieces: the outputs of each step equal the full network's outputs."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn as nn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import Tensor

from flows.nn import MaskedMLP, mask_connectivity
from flows.nn.masked import MaskedLinear, MaskedPieces

SETTINGS = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def perturbed(net: MaskedMLP, dtype: torch.dtype, device: torch.device) -> MaskedMLP:
    """Away from the near-zero start, so that every unit matters."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return net.to(dtype=dtype, device=device)


def staged(
    net: MaskedMLP, stage: list[int], steps: int, generator: torch.Generator
) -> tuple[list[list[int]], list[list[int]]]:
    """Stages from the stage of each input; each output at a random step it can be computed at.

    An output is computable from the latest stage of the inputs it depends on through the
    masks; outputs that cannot be computed within the steps are left out.
    """
    masks = [m.mask.cpu() != 0 for m in net if isinstance(m, MaskedLinear)]
    connected = mask_connectivity(masks)
    inputs = [[j for j, s in enumerate(stage) if s == k] for k in range(steps + 1)]
    outputs: list[list[int]] = [[] for _ in range(steps)]
    for i, row in enumerate(connected.tolist()):
        needed = max([stage[j] for j, c in enumerate(row) if c], default=0)
        if needed < steps:
            k = int(torch.randint(needed, steps, (1,), generator=generator))
            outputs[k].append(i)
    for block in outputs:
        block.reverse()  # any order: the rows come out in the order asked for
    return inputs, outputs


def evaluate(
    net: MaskedMLP, pieces: MaskedPieces, x: Tensor, inputs: list[list[int]]
) -> tuple[list[Tensor], list[Tensor]]:
    """The blocks of outputs, rows first, and what the steps returned (x's stages)."""
    blocks: list[Tensor] = []

    def step(k: int, y: Tensor) -> Tensor:
        blocks.append(y)
        return x[:, inputs[k + 1]]

    returned = net.forward_pieces(pieces, x[:, inputs[0]], step)
    return blocks, returned


@SETTINGS
@given(
    rows=st.integers(1, 7),
    columns=st.integers(1, 7),
    steps=st.integers(1, 4),
    hidden=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    activation=st.sampled_from([nn.ReLU, nn.ELU, nn.Tanh, lambda: nn.LeakyReLU(-0.3)]),
    gradients=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_each_step_gives_the_outputs_of_the_full_network(
    rows, columns, steps, hidden, activation, gradients, seed, dtype, device
):
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    adjacency = torch.rand(rows, columns, generator=generator) < 0.5
    adjacency[0, 0] = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # narrow layers may lose dependencies: still exact
        net = MaskedMLP(adjacency, hidden, activation=activation)
    net = perturbed(net, dtype, device)
    stage = torch.randint(
        0, steps + 2, (columns,), generator=generator
    ).tolist()  # steps + 1: none
    inputs, outputs = staged(net, stage, steps, generator)
    pieces = net.pieces(inputs, outputs).to(device)
    x = torch.randn(6, columns, dtype=dtype, device=device)

    with torch.set_grad_enabled(gradients):
        blocks, returned = evaluate(net, pieces, x, inputs)
        expected = net(x)
    assert len(blocks) == steps
    for block, rows_k in zip(blocks, outputs, strict=True):
        assert block.shape == (len(rows_k), 6)
        torch.testing.assert_close(block, expected[:, rows_k].T)
    for got, indices in zip(returned, inputs[1:], strict=True):
        torch.testing.assert_close(got, x[:, indices])


def chain(dtype: torch.dtype, device: torch.device, **kwargs) -> MaskedMLP:
    """y_i depends on x_j for j < i: outputs solvable one after the other."""
    torch.manual_seed(0)
    adjacency = torch.ones(4, 4, dtype=torch.bool).tril(diagonal=-1)
    return perturbed(MaskedMLP(adjacency, [16, 16], **kwargs), dtype, device)


def solve_chain(net: MaskedMLP, pieces: MaskedPieces, y: Tensor) -> Tensor:
    """x with x + f(x) = y, one feature per step."""

    def step(k: int, out: Tensor) -> Tensor:
        return y[:, k : k + 1] - out.T

    return torch.cat(net.forward_pieces(pieces, y.new_empty(y.shape[0], 0), step), dim=1)


CHAIN_STAGES = ([[], [0], [1], [2], [3]], [[0], [1], [2], [3]])


@pytest.mark.parametrize("gradients", [True, False], ids=["grad", "no_grad"])
def test_solving_a_chain_step_by_step_inverts_it(gradients, dtype, device):
    net = chain(dtype, device)
    pieces = net.pieces(*CHAIN_STAGES).to(device)
    y = torch.randn(5, 4, dtype=dtype, device=device)
    with torch.set_grad_enabled(gradients):
        x = solve_chain(net, pieces, y)
    assert x.shape == (5, 4)
    torch.testing.assert_close(x + net(x), y)


def test_the_first_step_without_known_inputs_is_broadcast_over_the_batch(dtype, device):
    # Output 0 depends on nothing: its block is the bias, the same for every sample.
    net = chain(dtype, device)
    pieces = net.pieces(*CHAIN_STAGES).to(device)
    seen = []

    def step(k: int, out: Tensor) -> Tensor:
        seen.append(out)
        return torch.zeros(3, 1, dtype=dtype, device=device)

    with torch.no_grad():
        net.forward_pieces(pieces, torch.empty(3, 0, dtype=dtype, device=device), step)
    assert seen[0].shape == (1, 3)
    torch.testing.assert_close(seen[0], seen[0][:, :1].expand(1, 3))


def test_gradients_through_the_pieces_match_the_full_network(dtype, device):
    net = chain(dtype, device)
    pieces = net.pieces(*CHAIN_STAGES).to(device)
    y = torch.randn(5, 4, dtype=dtype, device=device, requires_grad=True)
    parameters = [y, *net.parameters()]
    x = solve_chain(net, pieces, y)
    stepwise = torch.autograd.grad(x.square().sum(), parameters)

    # The same solution, written with full network calls (x_k depends on x_<k only).
    columns: list[Tensor] = []
    for k in range(4):
        known = torch.cat([*columns, y.new_zeros(5, 4 - k)], dim=1)
        columns.append(y[:, k : k + 1] - net(known)[:, k : k + 1])
    full = torch.autograd.grad(torch.cat(columns, dim=1).square().sum(), parameters)
    for a, b in zip(stepwise, full, strict=True):
        torch.testing.assert_close(a, b)


def test_without_gradients_the_weights_are_kept_until_a_parameter_changes(dtype, device):
    net = chain(dtype, device)
    pieces = net.pieces(*CHAIN_STAGES).to(device)
    y = torch.randn(5, 4, dtype=dtype, device=device)
    with torch.no_grad():
        first = pieces.weights(list(net), reuse=True)
        assert pieces.weights(list(net), reuse=True) is first
        before = solve_chain(net, pieces, y)
        net[-1].weight.mul_(2.0)  # an optimizer step, in place
        assert pieces.weights(list(net), reuse=True) is not first
        after = solve_chain(net, pieces, y)
        torch.testing.assert_close(after + net(after), y)
    assert not torch.allclose(before, after)
    # With gradients nothing is kept.
    assert pieces.weights(list(net), reuse=False) is not pieces.weights(list(net), reuse=False)


def test_the_plan_follows_the_network_to_another_dtype(device):
    net = chain(torch.float32, device)
    pieces = net.pieces(*CHAIN_STAGES).to(device)
    y = torch.randn(5, 4, dtype=torch.float64, device=device)
    with torch.no_grad():
        solve_chain(net.float(), pieces, y.float())
        x = solve_chain(net.double(), pieces, y)
    assert x.dtype == torch.float64
    torch.testing.assert_close(x + net(x), y)


def test_module_state_is_only_the_network_s():
    net = chain(torch.float32, torch.device("cpu"))
    pieces = net.pieces(*CHAIN_STAGES)
    assert pieces.state_dict() == {}  # its buffers follow from the masks
    assert list(pieces.parameters()) == []
    assert repr(pieces) == "MaskedPieces(steps=4, widths=[[0, 6, 11, 16], [0, 6, 11, 16]])"
    assert (pieces.input_sizes, pieces.output_sizes) == ([0, 1, 1, 1, 1], [1, 1, 1, 1])


def test_a_network_with_residual_blocks_is_refused():
    adjacency = torch.ones(3, 3, dtype=torch.bool).tril(diagonal=-1)
    net = MaskedMLP(adjacency, [8, 8], residual=True)
    with pytest.raises(ValueError, match=r"no residual blocks \(residual=True\)"):
        net.pieces([[], [0], [1], [2]], [[0], [1], [2]])


def test_a_network_without_hidden_layers_is_refused():
    adjacency = torch.ones(3, 3, dtype=torch.bool).tril(diagonal=-1)
    with pytest.raises(ValueError, match="at least one hidden layer"):
        MaskedMLP(adjacency, []).pieces([[], [0], [1], [2]], [[0], [1], [2]])


@pytest.mark.parametrize(
    ("inputs", "outputs", "error", "message"),
    [
        (
            [[], [0], [1]],
            [[0], [1], [2]],
            ValueError,
            r"inputs must list 4 stages for 3 steps \(those known at the start, then those each "
            r"step returns\), got 3",
        ),
        ([[], [0], [0, 1], [2]], [[0], [1], [2]], ValueError, r"inputs\[2\] = \[0, 1\] repeats"),
        ([[], [0], [1], [1]], [[0], [1], [2]], ValueError, "must be disjoint stages"),
        ([[], [0], [1], [3]], [[0], [1], [2]], ValueError, r"inputs\[3\] must hold indices in 0"),
        ([[], [0], [1], [2]], [[0], [1], [-1]], ValueError, r"outputs\[2\] must hold indices"),
        ([[], [0.5], [1], [2]], [[0], [1], [2]], TypeError, r"inputs\[1\] must be a list of int"),
        ([[], [0], [1], [2]], [[0], [[1]], [2]], TypeError, r"outputs\[1\] must be a list of int"),
        ([[]], [], TypeError, "outputs must be a non-empty list of index lists, got"),
        (
            [[], [0], [1], [2]],
            [[0], [2], [1]],
            ValueError,
            r"^outputs\[1\] holds output 2, which depends on input 1 of stage 2, returned by "
            r"step 1$",
        ),
        (
            [[], [0], [], [2]],
            [[0], [1], [2]],
            ValueError,
            r"^outputs\[2\] holds output 2, which depends on input 1, which is in no stage$",
        ),
    ],
)
def test_bad_stages_are_refused_with_the_argument_named(inputs, outputs, error, message):
    adjacency = torch.ones(3, 3, dtype=torch.bool).tril(diagonal=-1)
    net = MaskedMLP(adjacency, [8, 8])
    with pytest.raises(error, match=message):
        net.pieces(inputs, outputs)


def test_pieces_of_another_network_are_refused(device):
    adjacency = torch.ones(3, 3, dtype=torch.bool).tril(diagonal=-1)
    net = MaskedMLP(adjacency, [8, 8]).to(device)
    pieces = net.pieces([[], [0], [1], [2]], [[0], [1], [2]])
    first = torch.zeros(2, 0, device=device)
    for other in (MaskedMLP(adjacency, [8]), MaskedMLP(adjacency, [8, 8], residual=True)):
        with pytest.raises(ValueError, match="planned for another network"):
            other.to(device).forward_pieces(pieces, first, lambda k, y: y.T)
