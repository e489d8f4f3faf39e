"""Layer sequences: in-place activations after linear layers change no value, gradient or hook."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from flows.nn import MLP, MaskedMLP
from flows.nn._sequential import in_place_activation

ACTIVATIONS = [nn.ReLU, lambda: nn.LeakyReLU(0.2), lambda: nn.ELU(0.7), nn.Tanh]
# Negative slopes and zero: autograd refuses the in-place forms' backward for a negative one.
SLOPES = [
    lambda: nn.LeakyReLU(-0.2),
    lambda: nn.LeakyReLU(0.0),
    lambda: nn.ELU(-0.5),
    lambda: nn.ELU(0.0),
]


def _reference(net: nn.Module, x: torch.Tensor, stop: int | None = None) -> torch.Tensor:
    """The layers called one after the other, as modules (never in place)."""
    for layer in list(net)[:stop]:
        x = layer(x)
    return x


def _networks(activation, dtype: torch.dtype) -> list[nn.Module]:
    adjacency = torch.rand(6, 5) < 0.6
    adjacency[0, 0] = True
    return [
        MLP(5, 6, [8, 8], activation=activation).to(dtype),
        MLP(5, 6, [8, 8], activation=activation, normalize=True).to(dtype),
        MaskedMLP(adjacency, [12, 12], activation=activation).to(dtype),
        MaskedMLP(adjacency, [12, 12], activation=activation, residual=True).to(dtype),
    ]


@pytest.mark.parametrize("activation", ACTIVATIONS + SLOPES)
def test_outputs_and_gradients_match_the_layers_called_as_modules(
    activation, dtype: torch.dtype
) -> None:
    for net in _networks(activation, dtype):
        x = torch.randn(4, 3, 5, dtype=dtype, requires_grad=True)
        y = net(x)
        expected = _reference(net, x)
        torch.testing.assert_close(y, expected)

        cotangent = torch.randn_like(y)
        grads = torch.autograd.grad(y, [x, *net.parameters()], cotangent)
        expected_grads = torch.autograd.grad(expected, [x, *net.parameters()], cotangent)
        for g, e in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(g, e)


@pytest.mark.parametrize("activation", ACTIVATIONS[:3])
def test_in_place_activations_pass_gradcheck(activation) -> None:
    net = MLP(3, 2, [5, 5], activation=activation).double()
    # Away from the kinks of ReLU and LeakyReLU, where finite differences are wrong.
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(net, (x,))


def test_forward_hidden_is_every_layer_but_the_last() -> None:
    for net in _networks(nn.ReLU, torch.float32):
        x = torch.randn(7, 5)
        hidden = net.forward_hidden(x)
        torch.testing.assert_close(hidden, _reference(net, x, stop=-1))
        torch.testing.assert_close(net[-1](hidden), net(x))


def test_the_hooks_of_activations_and_linear_layers_see_what_they_would_see() -> None:
    torch.manual_seed(0)
    net = MLP(3, 2, [4], activation=nn.ReLU)
    seen: dict[str, torch.Tensor] = {}
    net[0].register_forward_hook(lambda m, args, out: seen.setdefault("linear", out))
    x = torch.randn(5, 3)
    net(x)
    # The linear layer's output, as it returned it: not rectified in place afterwards.
    torch.testing.assert_close(seen["linear"], net[0](x))
    assert (seen["linear"] < 0).any()

    calls: list[int] = []
    net = MLP(3, 2, [4], activation=nn.ReLU)
    net[1].register_forward_hook(lambda m, args, out: calls.append(1))
    net(x)
    assert calls == [1]


def test_hooks_on_every_module_see_the_linear_output_before_its_activation() -> None:
    torch.manual_seed(0)
    seen: list[torch.Tensor] = []
    net = MLP(3, 2, [4], activation=nn.ReLU)

    def record(module, args, out):
        if module is net[0]:
            seen.append(out)

    handle = nn.modules.module.register_module_forward_hook(record)
    try:
        x = torch.randn(5, 3)
        net(x)
    finally:
        handle.remove()
    torch.testing.assert_close(seen[0], net[0](x))
    assert (seen[0] < 0).any()


def test_a_compiled_layer_is_called_through_its_compiled_form() -> None:
    torch._dynamo.reset()
    calls: list[int] = []

    def backend(graph, example_inputs):
        def run(*args):
            calls.append(1)
            return graph.forward(*args)

        return run

    net = MLP(3, 2, [4], activation=nn.ReLU)
    x = torch.randn(5, 3)
    expected = net(x)
    net[0].compile(backend=backend)
    torch.testing.assert_close(net(x), expected)
    assert calls == [1]
    torch._dynamo.reset()


class _ShiftedReLU(nn.ReLU):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x - 1.0)


@pytest.mark.parametrize(
    ("activation", "in_place"),
    [
        (nn.ReLU(), True),
        (nn.LeakyReLU(0.2), True),
        (nn.LeakyReLU(0.0), True),
        (nn.ELU(0.7), True),
        (nn.LeakyReLU(-0.2), False),
        (nn.ELU(-0.5), False),
        (nn.Tanh(), False),
        (_ShiftedReLU(), False),  # a subclass may compute something else
    ],
    ids=repr,
)
def test_the_in_place_rule_gives_the_activation_s_values_or_nothing(
    activation, in_place, dtype, device
):
    # The one rule of LayerSequence and of MaskedMLP.forward_pieces.
    form = in_place_activation(activation)
    assert (form is not None) == in_place
    if form is not None:
        x = torch.randn(20, dtype=dtype, device=device)
        expected = activation(x)
        result = form(x)
        assert result is x  # in place
        torch.testing.assert_close(x, expected)


# Deprecated in torch, still what Pyro's JitTrace_ELBO runs; its notes are torch's own.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:torch.*")
@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")
@pytest.mark.parametrize("shape", [(5,), (4, 5), (4, 3, 5)])
@pytest.mark.parametrize("activation", ACTIVATIONS[:3])
def test_traced_networks_train_and_match_the_eager_ones(activation, shape, dtype, device) -> None:
    # torch.jit.trace (Pyro's JitTrace_ELBO) replays a linear layer's output on an input that
    # is not a matrix as a view; an in-place activation on it made backward fail.
    for net in _networks(activation, dtype):
        net = net.to(device)
        x = torch.randn(shape, dtype=dtype, device=device)
        traced = torch.jit.trace(net, (x,), check_trace=False)
        for _ in range(2):  # the first replays record, the later ones run the recorded graph
            y = traced(x)
            grads = torch.autograd.grad(y.square().sum(), list(net.parameters()))
        expected = _reference(net, x)
        expected_grads = torch.autograd.grad(expected.square().sum(), list(net.parameters()))
        torch.testing.assert_close(y, expected)
        for g, e in zip(grads, expected_grads, strict=True):
            torch.testing.assert_close(g, e)
