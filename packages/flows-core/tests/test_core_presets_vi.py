"""Flows for variational inference: IAF, and planar, radial and Sylvester flows.

Each samples in one pass and returns the log-density of its samples in that same pass
(``rsample_and_log_prob``), which must equal ``log_prob`` of the samples; each is registered by
name and survives a checkpoint round trip.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from flows.core import load, save
from flows.core.layers import MaskedAutoregressiveTransform
from flows.core.layers.stepwise import StepwiseInverse
from flows.core.plugins import get_preset, preset_spec
from flows.core.presets import IAF, MAF, Planar, Radial, Sylvester
from flows.core.transforms import residual

H = {"hidden_features": [16, 16]}

PRESETS: dict[str, tuple[Callable[[], nn.Module], int, int]] = {
    "iaf": (lambda: IAF(3, transforms=2, **H), 3, 0),
    "iaf-context": (lambda: IAF(3, 2, transforms=2, **H), 3, 2),
    "iaf-passes-2": (lambda: IAF(4, 1, transforms=2, passes=2, **H), 4, 1),
    "planar": (lambda: Planar(3, transforms=4), 3, 0),
    "planar-context": (lambda: Planar(3, 2, transforms=3, **H), 3, 2),
    "radial": (lambda: Radial(3, transforms=4), 3, 0),
    "radial-context": (lambda: Radial(2, 3, transforms=3, **H), 2, 3),
    "sylvester": (lambda: Sylvester(3, transforms=3), 3, 0),
    "sylvester-rank-2-context": (lambda: Sylvester(4, 2, transforms=2, rank=2, **H), 4, 2),
}
RESIDUAL = sorted(name for name in PRESETS if not name.startswith("iaf"))


def tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 1e-9, "rtol": 1e-7}


def build(name: str, dtype: torch.dtype, device: torch.device):
    factory, features, context = PRESETS[name]
    torch.manual_seed(0)
    flow = factory()
    with torch.no_grad():  # away from the near-identity start
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    flow = flow.to(dtype=dtype, device=device)
    c = torch.randn(context, dtype=dtype, device=device) if context else None
    return flow, features, context, c


@pytest.mark.parametrize("name", sorted(PRESETS))
@pytest.mark.parametrize("shape", [(), (7,), (2, 3)], ids=["single", "batch", "batch-2d"])
def test_log_q_of_samples_equals_log_prob_of_those_samples(name, shape, dtype, device):
    flow, features, _, c = build(name, dtype, device)
    x, log_q = flow(c).rsample_and_log_prob(shape)
    assert x.shape == (*shape, features) and log_q.shape == shape
    assert x.dtype == log_q.dtype == dtype and x.device.type == device.type
    torch.testing.assert_close(flow(c).log_prob(x), log_q, **tolerance(dtype))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_log_q_gradients_reach_every_parameter(name, dtype, device):
    # The reparameterized ELBO's gradient flows through the samples and their log q.
    flow, _, _, c = build(name, dtype, device)
    x, log_q = flow(c).rsample_and_log_prob((16,))
    (log_q + x.square().sum(-1)).mean().backward()
    for key, p in flow.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, key
        assert torch.isfinite(p.grad).all(), key


def count_network_calls(flow: IAF) -> list[int]:
    calls = []
    for layer in flow.modules():
        if isinstance(layer, MaskedAutoregressiveTransform):
            calls.append(0)
            index = len(calls) - 1

            def hook(*_, index=index):
                calls[index] += 1

            layer.hyper.register_forward_hook(hook)
    return calls


def test_iaf_samples_in_one_network_call_per_layer(monkeypatch, dtype, device):
    flow, _, _, c = build("iaf-context", dtype, device)
    calls = count_network_calls(flow)

    def refuse(*args, **kwargs):
        raise AssertionError("sampling an IAF must not invert a layer")

    monkeypatch.setattr(StepwiseInverse, "invert", refuse)
    flow(c).rsample_and_log_prob((10,))
    assert calls == [1, 1]
    flow(c).sample((10,))
    assert calls == [2, 2]


def test_iaf_log_prob_inverts_each_layer_stepwise(monkeypatch, dtype, device):
    flow, _, _, c = build("iaf", dtype, device)
    inverted = []
    original = StepwiseInverse.invert

    def spy(self, *args, **kwargs):
        inverted.append(self.sizes)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(StepwiseInverse, "invert", spy)
    flow(c).log_prob(torch.randn(5, 3, dtype=dtype, device=device))
    assert inverted == [[1, 1, 1], [1, 1, 1]]  # one group per feature, in each of 2 layers


def test_iaf_is_maf_turned_around(dtype, device):
    # With the same layers, IAF's samples are MAF's inverse pass and vice versa.
    torch.manual_seed(0)
    maf = MAF(3, transforms=2, **H).to(dtype=dtype, device=device)
    iaf = IAF(3, transforms=2, **H).to(dtype=dtype, device=device)
    mine = [m for m in iaf.modules() if isinstance(m, MaskedAutoregressiveTransform)]
    theirs = [m for m in maf.modules() if isinstance(m, MaskedAutoregressiveTransform)]
    for a, b in zip(reversed(mine), theirs, strict=True):
        a.load_state_dict(b.state_dict())
    z = torch.randn(4, 3, dtype=dtype, device=device)
    torch.testing.assert_close(iaf().transform.inv(z), maf().transform(z), **tolerance(dtype))


def test_iaf_starts_at_the_base(dtype, device):
    flow = IAF(3, transforms=3).to(dtype=dtype, device=device)
    x = torch.randn(10, 3, dtype=dtype, device=device)
    gap = flow().log_prob(x) - flow.base().log_prob(x)
    assert gap.abs().max() < 0.1


def test_iaf_networks_take_relu_by_default_and_any_activation_given():
    # The docstring says ReLU by default and activation= for another (ELU, the paper's).
    def activations(flow: IAF) -> set[type[nn.Module]]:
        kinds = {nn.ReLU, nn.ELU}
        return {type(m) for m in flow.modules() if type(m) in kinds}

    assert activations(IAF(3, transforms=2, **H)) == {nn.ReLU}
    assert activations(IAF(3, transforms=2, activation=nn.ELU, **H)) == {nn.ELU}


def test_iaf_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"IAF: transforms must be an int >= 1, got 0"):
        IAF(3, transforms=0)
    with pytest.raises(ValueError, match=r"IAF: features must be an int >= 1, got -1"):
        IAF(-1)
    with pytest.raises(ValueError, match=r"order must be a permutation"):
        IAF(3, order=[0, 0, 1])


@pytest.mark.parametrize(
    ("name", "cls", "kwargs"),
    [
        ("iaf", IAF, {"features": 3, "context": 2, "transforms": 2, "randperm": True, **H}),
        ("planar", Planar, {"features": 3, "transforms": 3}),
        ("planar", Planar, {"features": 2, "context": 1, "transforms": 2, **H}),
        ("radial", Radial, {"features": 3, "transforms": 3}),
        ("sylvester", Sylvester, {"features": 3, "transforms": 2, "rank": 2}),
        ("sylvester", Sylvester, {"features": 3, "context": 2, "transforms": 2, **H}),
    ],
)
def test_registered_by_name_and_checkpoint_round_trip(name, cls, kwargs, tmp_path: Path):
    assert get_preset(name) is cls
    assert preset_spec(name).distribution == "flows-core"
    torch.manual_seed(0)
    flow = cls(**kwargs)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    save(flow, tmp_path / "flow.ckpt")
    torch.manual_seed(1)  # other random orders if the file did not hold them
    checkpoint = load(tmp_path / "flow.ckpt")
    assert checkpoint.preset == name and checkpoint.arguments == flow.arguments
    c = torch.randn(5, kwargs.get("context", 0)) if kwargs.get("context") else None
    x = torch.randn(5, kwargs["features"])
    torch.testing.assert_close(checkpoint.flow(c).log_prob(x), flow(c).log_prob(x))


@pytest.mark.parametrize("name", RESIDUAL)
def test_residual_flows_sample_without_solving(name, monkeypatch, dtype, device):
    flow, features, _, c = build(name, dtype, device)

    def refuse(*args, **kwargs):
        raise AssertionError("sampling must not invert a map")

    monkeypatch.setattr(residual, "solve_tanh_equation", refuse)
    x, log_q = flow(c).rsample_and_log_prob((4,))
    assert x.shape == (4, features) and torch.isfinite(log_q).all()
    assert flow(c).sample((3,)).shape == (3, features)


@pytest.mark.parametrize(
    ("name", "inverse"),
    [("iaf", "exact"), ("planar", "numerical"), ("radial", "exact"), ("sylvester", "numerical")],
)
def test_specs_flag_numerical_inverses(name, inverse):
    assert preset_spec(name).spec.inverse == inverse


@pytest.mark.parametrize("name", RESIDUAL)
def test_residual_flows_start_near_the_base(name, dtype, device):
    (
        factory,
        features,
        context,
    ) = PRESETS[name][:3]
    torch.manual_seed(0)
    flow = factory().to(dtype=dtype, device=device)
    c = torch.randn(context, dtype=dtype, device=device) if context else None
    x = torch.randn(10, features, dtype=dtype, device=device)
    gap = flow(c).log_prob(x) - flow.base().log_prob(x)
    assert gap.abs().max() < 0.1


def test_residual_flow_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"Planar: transforms must be an int >= 1, got 0"):
        Planar(2, transforms=0)
    with pytest.raises(ValueError, match=r"Radial: features must be an int >= 1, got 0"):
        Radial(0)
    with pytest.raises(
        ValueError, match=r"Sylvester: rank must be an int <= features \(3\), got 4"
    ):
        Sylvester(3, rank=4)
    with pytest.raises(ValueError, match=r"Sylvester: rank must be an int >= 1, got 0"):
        Sylvester(3, rank=0)
    with pytest.raises(
        TypeError,
        match=r"Planar: hidden_features configure\(s\) the network of the context, which a "
        r"flow without context \(context=0\) does not have",
    ):
        Planar(2, hidden_features=[8])
    with pytest.raises(ValueError, match=r"Radial has context=2: a context c of shape"):
        Radial(2, 2, transforms=1)()


def test_a_spec_refuses_an_unknown_kind_of_inverse():
    from flows.core.plugins import PresetSpec

    with pytest.raises(
        ValueError,
        match=r"preset 'p': inverse must be one of 'exact', 'numerical', got 'approximate'",
    ):
        PresetSpec("p", "m:o", "a preset", inverse="approximate")


@pytest.mark.parametrize(
    "make",
    [
        lambda: IAF(3, transforms=2, hidden_features=[8]),
        lambda: Planar(3, transforms=2),
        lambda: Radial(3, transforms=2),
        lambda: Sylvester(3, transforms=2),
    ],
    ids=["iaf", "planar", "radial", "sylvester"],
)
def test_the_variational_loss_traces_into_one_compiled_graph(make, dtype, device):
    # A VI step draws and scores in rsample_and_log_prob: it must compile without a break.
    from flows.core.testing import assert_no_graph_breaks

    flow = make().to(dtype=dtype, device=device)
    target = torch.ones(3, dtype=dtype, device=device)

    def loss(shift: torch.Tensor) -> torch.Tensor:
        x, log_q = flow().rsample_and_log_prob((8,))
        return (log_q + (x - shift).square().sum(-1) / 2).mean()

    torch._dynamo.reset()
    try:
        assert_no_graph_breaks(loss, target)
    finally:
        torch._dynamo.reset()
