"""Presets record the arguments that rebuild them once (Preset), and old checkpoints still load.

The files under ``data/checkpoints-v1`` were written by the code before :class:`Preset`
(``generate.py`` beside them says how): each must load, give the log-densities it gave then,
and hold the very arguments the same call records now.
"""

from __future__ import annotations

import inspect
import io
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from flows.core import load, save
from flows.core.presets import GF, GMM, MAF, NICE, Preset, RealNVP

CHECKPOINTS = Path(__file__).parent / "data" / "checkpoints-v1"


def test_positional_default_and_extra_arguments_are_recorded_by_name_in_order():
    flow = MAF(3, 2, hidden_features=[8], passes=2)
    assert list(flow.arguments.items()) == [
        ("features", 3),
        ("context", 2),
        ("transforms", 3),
        ("randperm", False),
        ("hidden_features", [8]),
        ("passes", 2),
    ]


def test_values_are_recorded_as_given_not_copied_nor_converted():
    hidden = (8, 8)
    flow = RealNVP(features=4, hidden_features=hidden)
    assert flow.arguments["hidden_features"] is hidden
    widths = [8]
    assert GMM(2, 1, hidden_features=widths).arguments["hidden_features"] is widths


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: NICE(4), {"features": 4, "context": 0, "transforms": 3, "randmask": False}),
        (
            lambda: RealNVP(2, 1, 2),
            {"features": 2, "context": 1, "transforms": 2, "randmask": False},
        ),
        (
            lambda: GF(2, transforms=1),
            {"features": 2, "context": 0, "transforms": 1, "components": 8},
        ),
        (
            lambda: GMM(2, covariance_type="tied"),
            {"features": 2, "context": 0, "components": 2, "covariance_type": "tied"},
        ),
    ],
)
def test_each_preset_records_its_own_signature(make, expected: dict[str, Any]):
    arguments = make().arguments
    assert arguments == expected
    assert list(arguments) == list(expected)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MAF(2, transforms=1, order=[1, 0], hidden_features=[4]),
        lambda: NICE(4, 1, transforms=2, randmask=True, univariate="affine"),
        lambda: RealNVP(3, transforms=1, hidden_features=(4,)),
        lambda: GF(2, 1, transforms=2, components=3, hidden_features=[4]),
        lambda: GMM(3, components=4, covariance_type="spherical"),
    ],
)
def test_arguments_rebuild_a_preset_that_records_the_same_arguments(make):
    flow = make()
    rebuilt = type(flow)(**flow.arguments)
    assert repr(rebuilt.arguments) == repr(flow.arguments)  # tuples and lists alike
    rebuilt.load_state_dict(flow.state_dict())  # strict: the same architecture


def test_the_outermost_constructor_records_not_those_it_calls():
    class Wide(MAF):
        def __init__(self, features: int, width: int = 4, **kwargs: Any) -> None:
            super().__init__(features, transforms=1, hidden_features=[width] * 2, **kwargs)

    class Wider(Wide):  # no constructor of its own: Wide's records
        pass

    assert Wide(2, context=1).arguments == {"features": 2, "width": 4, "context": 1}
    assert Wider(3, width=2).arguments == {"features": 3, "width": 2}
    assert type(Wider(3)).__init__ is Wide.__init__


def test_a_preset_that_fails_to_build_raises_the_constructor_error():
    with pytest.raises(TypeError, match=r"missing 1 required positional argument: 'features'"):
        MAF()
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        GMM(2, unknown=1)


def test_signatures_stay_visible_to_introspection():
    # flows fit --flow NAME checks the options a preset takes from its signature.
    assert list(inspect.signature(NICE).parameters) == [
        "features",
        "context",
        "transforms",
        "randmask",
        "kwargs",
    ]


def test_constructors_that_arguments_cannot_rebuild_are_refused():
    with pytest.raises(TypeError, match=r"Bad.__init__ cannot build a preset: .*\*sizes"):

        class Bad(Preset, nn.Module):
            def __init__(self, *sizes: int) -> None:
                super().__init__()

    with pytest.raises(TypeError, match=r"Worse.__init__ cannot build a preset: .*features, /"):

        class Worse(Preset, nn.Module):
            def __init__(self, features: int, /) -> None:
                super().__init__()


def _payload(path: Path) -> dict[str, Any]:
    outer = torch.load(path, weights_only=True)
    return torch.load(io.BytesIO(outer["payload"]), weights_only=True)


def test_the_version_1_checkpoints_are_all_here():
    names = sorted(path.stem for path in CHECKPOINTS.glob("*.ckpt"))
    assert names == ["gf", "gmm", "maf", "nice", "realnvp"]


@pytest.mark.parametrize("name", ["gf", "gmm", "maf", "nice", "realnvp"])
def test_version_1_checkpoints_load_with_the_same_densities(name, dtype, device):
    checkpoint = load(CHECKPOINTS / f"{name}.ckpt")
    assert checkpoint.preset == name and checkpoint.format_version == 1
    extra = checkpoint.extra
    flow = checkpoint.flow.to(dtype=dtype, device=device)
    x = extra["x"].to(dtype=dtype, device=device)
    c = None if extra["c"] is None else extra["c"].to(dtype=dtype, device=device)
    log_prob = (flow() if c is None else flow(c)).log_prob(x)
    tolerance = (
        {"atol": 1e-7, "rtol": 1e-7} if dtype == torch.float64 else {"atol": 1e-4, "rtol": 1e-4}
    )
    torch.testing.assert_close(log_prob.cpu().double(), extra["log_prob"], **tolerance)


@pytest.mark.parametrize("name", ["gf", "gmm", "maf", "nice", "realnvp"])
def test_version_1_arguments_are_those_the_same_call_records_now(name, tmp_path: Path):
    checkpoint = load(CHECKPOINTS / f"{name}.ckpt")
    call = checkpoint.extra["call"]
    now = type(checkpoint.flow)(*call["args"], **call["kwargs"])
    assert repr(now.arguments) == repr(checkpoint.arguments)

    # Saved again, the flow makes a file of the same content (but for the versions).
    save(checkpoint.flow, tmp_path / "again.ckpt", extra=checkpoint.extra)
    old, new = _payload(CHECKPOINTS / f"{name}.ckpt"), _payload(tmp_path / "again.ckpt")
    assert new["preset"] == old["preset"]
    assert repr(new["arguments"]) == repr(old["arguments"])
    assert list(new["state_dict"]) == list(old["state_dict"])
    for key, tensor in old["state_dict"].items():
        assert torch.equal(new["state_dict"][key], tensor), key
