"""ActNorm and BatchNorm: exact inverses and log-determinants, statistics, state, presets."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from flows.core import MAF, NICE, ActNorm, BatchNorm, RealNVP, load, save
from flows.core.layers.normalization import ActNormTransform, BatchNormTransform
from flows.core.testing import assert_no_graph_breaks, check_compiled_flow, flow_loss

# (parameter shape, event shape): vectors, and one parameter per channel of (C, H, W) events.
SHAPES = [(3, (3,)), ((2, 1, 1), (2, 2, 3)), ((2, 3, 1), (2, 3, 2))]


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-9, "rtol": 1e-9}


def batch(event: tuple[int, ...], dtype: torch.dtype, device: torch.device, n: int = 16) -> Tensor:
    torch.manual_seed(0)
    scale = torch.arange(1, math.prod(event) + 1, dtype=dtype, device=device).reshape(event)
    return torch.randn(n, *event, dtype=dtype, device=device) * scale - 2.0


def jacobian_ladj(f, x: Tensor) -> Tensor:
    """log|det J| of ``f`` at each event of ``x``, from autograd, the event flattened."""
    n = x[0].numel()
    dets = []
    for event in x:
        jacobian = torch.autograd.functional.jacobian(f, event).reshape(n, n)
        dets.append(torch.linalg.slogdet(jacobian).logabsdet)
    return torch.stack(dets)


def perturb(layer: torch.nn.Module) -> None:
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.3)


def channel_dims(shape: tuple[int, ...] | int, event: tuple[int, ...]) -> tuple[int, ...]:
    """The dims of a batch of events that one parameter pools: the batch and broadcast ones."""
    shape = (shape,) if isinstance(shape, int) else shape
    return (0, *(1 + i for i, p in enumerate(shape) if p == 1))


# ActNorm


@pytest.mark.parametrize(("shape", "event"), SHAPES)
def test_actnorm_first_training_batch_leaves_zero_mean_unit_variance(shape, event, dtype, device):
    layer = ActNorm(shape).to(dtype=dtype, device=device)
    assert not bool(layer.initialized)
    x = batch(event, dtype, device)
    y = layer()(x)
    dims = channel_dims(shape, event)
    zero = torch.zeros_like(layer.loc)
    torch.testing.assert_close(y.mean(dims).reshape(layer.shape), zero, **tolerance(dtype))
    torch.testing.assert_close(
        y.var(dims, correction=0).reshape(layer.shape), zero + 1, **tolerance(dtype)
    )
    assert bool(layer.initialized)
    assert layer.initialized.device == x.device
    assert not layer.loc.grad_fn and layer.loc.requires_grad  # set in place, still trained


def test_actnorm_initialises_once(dtype, device):
    layer = ActNorm(3).to(dtype=dtype, device=device)
    layer()(batch((3,), dtype, device))
    loc, log_scale = layer.loc.detach().clone(), layer.log_scale.detach().clone()
    layer()(batch((3,), dtype, device) * 10.0 + 5.0)
    assert torch.equal(layer.loc, loc) and torch.equal(layer.log_scale, log_scale)


def test_actnorm_does_not_initialise_in_eval_mode_nor_on_one_value_per_channel(dtype, device):
    layer = ActNorm(3).to(dtype=dtype, device=device).eval()
    x = batch((3,), dtype, device)
    assert torch.equal(layer()(x), x)  # uninitialised: the identity
    layer.train()
    assert torch.equal(layer()(x[0]), x[0])
    assert not bool(layer.initialized)
    layer()(x)
    assert bool(layer.initialized)


def test_actnorm_uninitialised_inverse_is_the_identity_and_does_not_initialise(dtype, device):
    layer = ActNorm((2, 1, 1)).to(dtype=dtype, device=device)
    z = batch((2, 2, 3), dtype, device)
    x, ladj = layer().inv.call_and_ladj(z)
    assert torch.equal(x, z)
    assert torch.equal(ladj, torch.zeros(16, dtype=dtype, device=device))
    assert not bool(layer.initialized)


@pytest.mark.parametrize(("shape", "event"), SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_actnorm_inverse_is_exact(shape, event, training, dtype, device):
    layer = ActNorm(shape).to(dtype=dtype, device=device)
    x = batch(event, dtype, device)
    layer()(x)
    perturb(layer)
    layer.train(training)
    t = layer()
    y, ladj = t.call_and_ladj(x)
    x_again, inverse_ladj = t.inv.call_and_ladj(y)
    torch.testing.assert_close(x_again, x, **tolerance(dtype))
    torch.testing.assert_close(inverse_ladj, -ladj, **tolerance(dtype))
    torch.testing.assert_close(t.inv(y), x, **tolerance(dtype))


@pytest.mark.parametrize(("shape", "event"), SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_actnorm_log_det_is_that_of_the_autograd_jacobian(shape, event, training, dtype, device):
    layer = ActNorm(shape).to(dtype=dtype, device=device)
    x = batch(event, dtype, device, n=4)
    layer()(x)
    perturb(layer)
    layer.train(training)
    t = layer()
    _, ladj = t.call_and_ladj(x)
    assert ladj.shape == (4,)
    torch.testing.assert_close(ladj, jacobian_ladj(t, x), **tolerance(dtype))
    torch.testing.assert_close(t.log_abs_det_jacobian(x, t(x)), ladj, **tolerance(dtype))
    positions = math.prod(event) // math.prod(layer.shape)
    expected = -positions * layer.log_scale.sum()
    torch.testing.assert_close(ladj, expected.expand(4), **tolerance(dtype))


def test_actnorm_state_dict_round_trip_does_not_initialise_again(dtype, device):
    layer = ActNorm((2, 1, 1)).to(dtype=dtype, device=device)
    layer()(batch((2, 2, 3), dtype, device))
    state = layer.state_dict()
    assert list(state) == ["loc", "log_scale", "initialized"]
    loaded = ActNorm((2, 1, 1)).to(dtype=dtype, device=device)
    loaded.load_state_dict(state)
    assert bool(loaded.initialized)
    other = batch((2, 2, 3), dtype, device) * 7.0 + 1.0
    torch.testing.assert_close(loaded()(other), layer()(other), atol=0.0, rtol=0.0)
    assert torch.equal(loaded.loc, layer.loc)


def test_actnorm_loaded_uninitialised_state_initialises_on_the_first_batch(dtype, device):
    trained = ActNorm(3).to(dtype=dtype, device=device)
    trained()(batch((3,), dtype, device))
    layer = ActNorm(3).to(dtype=dtype, device=device)
    trained.load_state_dict(layer.state_dict())  # back to the uninitialised state
    assert not bool(trained.initialized)
    y = trained()(batch((3,), dtype, device) * 4.0)
    torch.testing.assert_close(y.mean(0), torch.zeros_like(y[0]), **tolerance(dtype))


def test_actnorm_transform_describes_its_event():
    t = ActNorm((4, 1, 1))()
    assert isinstance(t, ActNormTransform)
    assert t.domain.event_dim == 3 and t.codomain.event_dim == 3
    assert t.sign == 1 and t.bijective
    assert repr(t) == "ActNormTransform(shape=(4, 1, 1))"
    assert repr(ActNorm(3)) == "ActNorm(shape=(3,))"


# BatchNorm


@pytest.mark.parametrize(("shape", "event"), SHAPES)
def test_batchnorm_training_normalizes_by_the_batch_statistics(shape, event, dtype, device):
    layer = BatchNorm(shape).to(dtype=dtype, device=device)
    x = batch(event, dtype, device)
    y = layer()(x)
    dims = channel_dims(shape, event)
    mean, var = x.mean(dims, keepdim=True), x.var(dims, correction=0, keepdim=True)
    torch.testing.assert_close(y, (x - mean) / torch.sqrt(var + 1e-5), **tolerance(dtype))


@pytest.mark.parametrize(("shape", "event"), SHAPES)
def test_batchnorm_running_statistics_move_by_momentum(shape, event, dtype, device):
    layer = BatchNorm(shape, momentum=0.25).to(dtype=dtype, device=device)
    dims = channel_dims(shape, event)
    expected_mean = torch.zeros(layer.shape, dtype=dtype, device=device)
    expected_var = torch.ones(layer.shape, dtype=dtype, device=device)
    for scale in (1.0, 3.0):
        x = batch(event, dtype, device) * scale
        layer()(x)
        expected_mean = 0.75 * expected_mean + 0.25 * x.mean(dims).reshape(layer.shape)
        expected_var = 0.75 * expected_var + 0.25 * x.var(dims).reshape(layer.shape)
        torch.testing.assert_close(layer.running_mean, expected_mean, **tolerance(dtype))
        torch.testing.assert_close(layer.running_var, expected_var, **tolerance(dtype))
    assert not layer.running_mean.requires_grad


def test_batchnorm_evaluation_uses_and_keeps_the_running_statistics(dtype, device):
    layer = BatchNorm(3, eps=1e-3).to(dtype=dtype, device=device)
    layer()(batch((3,), dtype, device))
    perturb(layer)
    layer.eval()
    mean, var = layer.running_mean.clone(), layer.running_var.clone()
    x = batch((3,), dtype, device) + 1.0
    y = layer()(x)
    expected = (x - mean) / torch.sqrt(var + 1e-3) * layer.log_scale.exp() + layer.shift
    torch.testing.assert_close(y, expected, **tolerance(dtype))
    assert torch.equal(layer.running_mean, mean) and torch.equal(layer.running_var, var)


def test_batchnorm_one_value_per_channel_in_training_uses_the_running_statistics(dtype, device):
    layer = BatchNorm(3).to(dtype=dtype, device=device)
    x = batch((3,), dtype, device)[0]
    torch.testing.assert_close(layer()(x), x / math.sqrt(1 + 1e-5), **tolerance(dtype))
    assert torch.equal(layer.running_mean, torch.zeros_like(x))


@pytest.mark.parametrize(("shape", "event"), SHAPES)
def test_batchnorm_inverse_is_exact_in_evaluation_and_uses_running_statistics(
    shape, event, dtype, device
):
    layer = BatchNorm(shape).to(dtype=dtype, device=device)
    x = batch(event, dtype, device)
    layer()(x)
    perturb(layer)
    z = layer.eval()().call_and_ladj(x)
    x_again, ladj = layer().inv.call_and_ladj(z[0])
    torch.testing.assert_close(x_again, x, **tolerance(dtype))
    torch.testing.assert_close(ladj, -z[1], **tolerance(dtype))
    # In training mode too, the inverse (sampling) takes the running statistics.
    running = layer.running_mean.clone()
    torch.testing.assert_close(layer.train()().inv(z[0]), x, **tolerance(dtype))
    assert torch.equal(layer.running_mean, running)


@pytest.mark.parametrize(("shape", "event"), SHAPES)
def test_batchnorm_evaluation_log_det_is_that_of_the_autograd_jacobian(
    shape, event, dtype, device
):
    layer = BatchNorm(shape).to(dtype=dtype, device=device)
    layer()(batch(event, dtype, device))
    perturb(layer)
    t = layer.eval()()
    x = batch(event, dtype, device, n=4)
    _, ladj = t.call_and_ladj(x)
    torch.testing.assert_close(ladj, jacobian_ladj(t, x), **tolerance(dtype))
    _, inverse_ladj = t.inv.call_and_ladj(x)
    torch.testing.assert_close(inverse_ladj, jacobian_ladj(t.inv, x), **tolerance(dtype))


@pytest.mark.parametrize(("shape", "event"), SHAPES)
def test_batchnorm_training_log_det_is_that_of_the_map_with_the_batch_statistics_fixed(
    shape, event, dtype, device
):
    layer = BatchNorm(shape, eps=1e-2).to(dtype=dtype, device=device)
    perturb(layer)
    x = batch(event, dtype, device, n=6)
    y, ladj = layer()(x), layer().call_and_ladj(x)[1]
    assert ladj.shape == (6,)
    assert torch.equal(layer().log_abs_det_jacobian(x, y), ladj)
    # The same map with the batch's statistics as constants: the layer in evaluation mode,
    # its running statistics set to them.
    dims = channel_dims(shape, event)
    with torch.no_grad():
        layer.running_mean.copy_(x.mean(dims).reshape(layer.shape))
        layer.running_var.copy_(x.var(dims, correction=0).reshape(layer.shape))
    fixed = layer.eval()()
    torch.testing.assert_close(fixed(x), y, **tolerance(dtype))
    torch.testing.assert_close(ladj, jacobian_ladj(fixed, x), **tolerance(dtype))


def test_batchnorm_log_det_call_does_not_update_the_running_statistics(dtype, device):
    layer = BatchNorm(3).to(dtype=dtype, device=device)
    x = batch((3,), dtype, device)
    layer().log_abs_det_jacobian(x, x)
    assert torch.equal(layer.running_mean, torch.zeros_like(layer.running_mean))


def test_batchnorm_gradients_reach_its_parameters_in_training(dtype, device):
    layer = BatchNorm((2, 1, 1)).to(dtype=dtype, device=device)
    x = batch((2, 2, 3), dtype, device).requires_grad_()
    y, ladj = layer().call_and_ladj(x)
    (y.square().sum() - ladj.sum()).backward()
    assert layer.log_scale.grad is not None and layer.shift.grad is not None
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_batchnorm_state_dict_round_trip(dtype, device):
    layer = BatchNorm((2, 1, 1), momentum=0.5).to(dtype=dtype, device=device)
    layer()(batch((2, 2, 3), dtype, device))
    perturb(layer)
    state = layer.state_dict()
    assert list(state) == ["log_scale", "shift", "running_mean", "running_var"]
    loaded = BatchNorm((2, 1, 1), momentum=0.5).to(dtype=dtype, device=device)
    loaded.load_state_dict(state)
    x = batch((2, 2, 3), dtype, device)
    torch.testing.assert_close(
        loaded.eval()().call_and_ladj(x), layer.eval()().call_and_ladj(x), atol=0.0, rtol=0.0
    )


def test_batchnorm_transform_describes_its_event():
    layer = BatchNorm((4, 1, 1))
    t = layer()
    assert isinstance(t, BatchNormTransform)
    assert t.domain.event_dim == 3 and t.codomain.event_dim == 3
    assert repr(t) == "BatchNormTransform(shape=(4, 1, 1), training=True)"
    assert repr(layer) == "BatchNorm(shape=(4, 1, 1), momentum=0.1, eps=1e-05)"


# Arguments


@pytest.mark.parametrize("make", [ActNorm, BatchNorm])
def test_bad_shapes_are_refused_naming_the_argument(make):
    name = make.__name__
    with pytest.raises(ValueError, match=rf"^{name}: shape must be an int >= 1, got 0$"):
        make(0)
    with pytest.raises(TypeError, match=rf"^{name}: shape must be an int >= 1 or a non-empty"):
        make("3")
    with pytest.raises(ValueError, match=rf"^{name}: shape must be .* got \(3, 0\)$"):
        make((3, 0))
    with pytest.raises(ValueError, match=rf"^{name}: shape must be .* got \(\)$"):
        make(())


@pytest.mark.parametrize("make", [ActNorm, BatchNorm])
def test_events_the_parameters_do_not_broadcast_against_are_refused(make, dtype, device):
    t = make((3, 1, 1)).to(dtype=dtype, device=device)()
    message = (
        rf"^{make.__name__}: x must end with an event shape that a parameter of shape "
        r"\(3, 1, 1\) broadcasts against .* got x of shape \(5, 2, 4, 4\)$"
    )
    with pytest.raises(ValueError, match=message):
        t(torch.randn(5, 2, 4, 4, dtype=dtype, device=device))
    with pytest.raises(ValueError, match=r"got x of shape \(3, 4\)$"):
        t.inv(torch.randn(3, 4, dtype=dtype, device=device))


def test_bad_batchnorm_momentum_and_eps_are_refused():
    with pytest.raises(ValueError, match=r"^BatchNorm: momentum must be a fraction in \[0, 1\]"):
        BatchNorm(3, momentum=1.5)
    with pytest.raises(ValueError, match=r"^BatchNorm: eps must be a finite positive number"):
        BatchNorm(3, eps=0.0)


# Presets

PRESETS = {"maf": MAF, "realnvp": RealNVP, "nice": NICE}


def preset(name: str, norm: str | None, dtype, device, context: int = 0) -> torch.nn.Module:
    torch.manual_seed(0)
    flow = PRESETS[name](3, context, transforms=3, hidden_features=[8], norm=norm)
    return flow.to(dtype=dtype, device=device)


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize(("norm", "kind"), [("act", ActNorm), ("batch", BatchNorm)])
def test_preset_norm_sits_between_consecutive_layers(name, norm, kind):
    layers = list(preset(name, norm, torch.float64, torch.device("cpu")).transform.transforms)
    assert len(layers) == 5
    assert [isinstance(layer, kind) for layer in layers] == [False, True, False, True, False]
    assert all(layer.shape == (3,) for layer in layers[1::2])
    assert isinstance(layers[0], type(layers[2]))


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_without_norm_keeps_its_layers_arguments_and_weights(name, dtype, device):
    plain = PRESETS[name](3, transforms=2, hidden_features=[8])
    torch.manual_seed(0)
    given = preset(name, None, dtype, device)
    torch.manual_seed(0)
    default = PRESETS[name](3, transforms=3, hidden_features=[8]).to(dtype=dtype, device=device)
    assert "norm" not in plain.arguments and given.arguments["norm"] is None
    assert list(given.state_dict()) == list(default.state_dict())
    for key, tensor in default.state_dict().items():
        assert torch.equal(given.state_dict()[key], tensor), key


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("norm", ["act", "batch"])
def test_preset_with_norm_gives_finite_log_prob_and_samples(name, norm, dtype, device):
    flow = preset(name, norm, dtype, device, context=2)
    x = torch.randn(32, 3, dtype=dtype, device=device) * 4.0 + 1.0
    c = torch.randn(32, 2, dtype=dtype, device=device)
    log_prob = flow(c).log_prob(x)  # training mode: initialises, or takes batch statistics
    assert log_prob.shape == (32,) and torch.isfinite(log_prob).all()
    assert flow(c).sample().shape == (32, 3)
    assert flow(c[0]).sample((4,)).shape == (4, 3)
    flow.eval()
    z = flow(c).sample()
    assert z.shape == (32, 3) and torch.isfinite(flow(c).log_prob(z)).all()


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("norm", ["act", "batch"])
def test_preset_with_norm_round_trips_through_a_checkpoint(name, norm, tmp_path, dtype, device):
    flow = preset(name, norm, dtype, device)
    x = torch.randn(32, 3, dtype=dtype, device=device) * 3.0 - 1.0
    flow().log_prob(x)  # initialises ActNorm / moves the running statistics
    # load builds in float32: weights that float32 holds exactly come back exactly.
    flow = flow.float().to(dtype)
    assert flow.arguments["norm"] == norm
    save(flow, tmp_path / "flow.ckpt")
    checkpoint = load(tmp_path / "flow.ckpt")
    assert checkpoint.arguments == flow.arguments
    loaded = checkpoint.flow.to(dtype=dtype, device=device)
    for key, tensor in flow.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key
    flow.eval(), loaded.eval()
    torch.testing.assert_close(loaded().log_prob(x), flow().log_prob(x), atol=0.0, rtol=0.0)
    if norm == "act":  # loaded initialised: a training batch does not initialise it again
        loaded.train()
        before = {k: v.clone() for k, v in loaded.state_dict().items()}
        loaded().log_prob(x * 5.0)
        for key, tensor in loaded.state_dict().items():
            assert torch.equal(before[key], tensor), key


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_refuses_an_unknown_norm_listing_the_choices(name):
    owner = PRESETS[name].__name__
    message = rf"^{owner}: norm must be one of None, 'act', 'batch', got 'layer'$"
    with pytest.raises(ValueError, match=message):
        PRESETS[name](3, norm="layer")


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


# Each compiled graph costs seconds: three flows, log_prob or the training loss.
@pytest.mark.parametrize(
    ("name", "norm", "training"),
    [("maf", "act", False), ("maf", "batch", True), ("realnvp", "act", True)],
)
def test_preset_with_norm_has_no_graph_breaks(name, norm, training, fresh_dynamo, dtype, device):
    # Fresh flows: the compiled trace includes ActNorm's initialisation.
    flow = preset(name, norm, dtype, device)
    x = torch.randn(5, 3, dtype=dtype, device=device)
    assert_no_graph_breaks(flow_loss(flow, training), x, None)


def test_compiled_training_step_with_batchnorm_equals_eager(fresh_dynamo, dtype, device):
    # The compiled step updates the running statistics in place, as the eager one does.
    flow = preset("realnvp", "batch", dtype, device)
    x = torch.randn(5, 3, dtype=dtype, device=device)
    check_compiled_flow(flow, x, None, training=True, backend="aot_eager")
