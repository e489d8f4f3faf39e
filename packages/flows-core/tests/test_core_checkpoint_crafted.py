"""Crafted checkpoints with a valid checksum: refused with one clean line, before they cost much.

Each test writes a real checkpoint, changes its payload and packs it again with a correct
SHA-256, as anyone can: the checksum proves integrity, not trust.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from flows.core import GF, MAF
from flows.core.checkpoint import CheckpointError, load, save


def repack(path: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    """Rewrite the checkpoint ``path`` with ``change`` applied to its payload, checksum valid."""
    envelope = torch.load(path, weights_only=True)
    payload = torch.load(io.BytesIO(envelope["payload"]), weights_only=True)
    change(payload)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    envelope["payload"] = buffer.getvalue()
    envelope["sha256"] = hashlib.sha256(envelope["payload"]).hexdigest()
    torch.save(envelope, path)


def refused(path: Path) -> str:
    """The message of the CheckpointError that loading ``path`` raises, checked to be clean."""
    with pytest.raises(CheckpointError) as info:
        load(path)
    message = str(info.value)
    assert message.isprintable(), repr(message)  # no newline, escape or other control character
    assert "weights_only" not in message and "trust" not in message
    return message


@pytest.fixture
def maf(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "maf.pt"
    save(MAF(features=2, transforms=1), path)
    return path


@pytest.fixture
def gf(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "gf.pt"
    save(GF(features=2, transforms=1), path)
    return path


def stored(path: Path) -> int:
    """The number of weight elements the checkpoint ``path`` stores."""
    return sum(v.numel() for v in load(path).flow.state_dict().values())


def test_a_huge_number_of_transforms_is_refused_before_building(maf: Path):
    weights = stored(maf)
    repack(maf, lambda p: p["arguments"].update(transforms=100_000_000))
    bound = max(weights, 4096)
    assert refused(maf) == (
        f"{str(maf)!r} has argument 'transforms' = 100000000, implausible for the {weights} "
        f"weights it stores (a size or count there is at most {bound}); the file was crafted "
        "or altered"
    )


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ([1e9], "'hidden_features'[0] = 1000000000.0"),
        ([64, -(10**9)], "'hidden_features'[1] = -1000000000"),
        ((64, 10**400), "'hidden_features'[1] = an integer of about 10^400"),
        ({"a": [5, 10**7]}, "'hidden_features'['a'][1] = 10000000"),
        (torch.tensor([64, 10**8]), "'hidden_features' = a tensor holding 100000000"),
    ],
)
def test_huge_sizes_anywhere_in_the_arguments_are_refused(maf: Path, value: Any, shown: str):
    repack(maf, lambda p: p["arguments"].update(hidden_features=value))
    assert f"has argument {shown}, implausible for the" in refused(maf)


def test_views_cannot_inflate_what_the_weights_allow(maf: Path):
    weights = stored(maf)
    # A billion elements to the eye, one in the file: its storage is what counts.
    expanded = torch.zeros(1).expand(10**9)

    def change(payload: dict[str, Any]) -> None:
        payload["state_dict"]["padding"] = expanded
        payload["arguments"]["transforms"] = 10**6

    repack(maf, change)
    assert f"implausible for the {weights + 1} weights it stores" in refused(maf)


def test_sizes_within_the_floor_that_would_build_a_huge_flow_are_stopped(maf: Path):
    # Every integer is at most 4096, but the layers would hold 4000 x 4000 weights each.
    repack(maf, lambda p: p["arguments"].update(features=4000, hidden_features=[4000, 4000]))
    message = refused(maf)
    assert re.fullmatch(
        rf"{re.escape(repr(str(maf)))} \(flow 'maf'\) would build a flow far larger than the "
        r"\d+ bytes of weights it stores; the file was crafted or altered",
        message,
    )


def test_many_transforms_within_the_floor_are_stopped(maf: Path):
    repack(maf, lambda p: p["arguments"].update(transforms=4000))
    assert "would build a flow far larger than the" in refused(maf)


def test_huge_sizes_of_a_gf_are_stopped_before_they_allocate(gf: Path):
    # These sizes would ask for gigabytes.
    repack(gf, lambda p: p["arguments"].update(features=4000, components=4000))
    assert "(flow 'gf') would build a flow far larger than" in refused(gf)


def first_difference(a: torch.nn.Module, b: torch.nn.Module) -> str:
    """The first key of ``a``'s state_dict whose shape differs in ``b`` (or is missing)."""
    theirs = b.state_dict()
    for key, value in a.state_dict().items():
        if key not in theirs or theirs[key].shape != value.shape:
            return key
    raise AssertionError("no difference")


def test_weights_of_other_shapes_are_refused_naming_the_first_key(maf: Path):
    repack(maf, lambda p: p["arguments"].update(features=3))
    key = first_difference(MAF(features=3, transforms=1), MAF(features=2, transforms=1))
    stored_shape = tuple(MAF(features=2, transforms=1).state_dict()[key].shape)
    built_shape = tuple(MAF(features=3, transforms=1).state_dict()[key].shape)
    assert refused(maf) == (
        f"{str(maf)!r} (flow 'maf') has weights {key!r} of shape {stored_shape} where the flow "
        f"has shape {built_shape}"
    )


def test_weights_of_other_shapes_of_a_gf_are_refused_too(gf: Path):
    repack(gf, lambda p: p["arguments"].update(components=9))
    key = first_difference(
        GF(features=2, transforms=1, components=9), GF(features=2, transforms=1)
    )
    assert f"(flow 'gf') has weights {key!r} of shape" in refused(gf)


def test_missing_and_unexpected_weights_are_refused_by_name(maf: Path, tmp_path: Path):
    other = tmp_path / "other.pt"
    other.write_bytes(maf.read_bytes())
    repack(maf, lambda p: p["state_dict"].pop("base._1"))
    assert (
        refused(maf) == f"{str(maf)!r} (flow 'maf') lacks the weights 'base._1' that the flow has"
    )
    repack(other, lambda p: p["state_dict"].update(bogus=torch.zeros(2)))
    assert refused(other) == (
        f"{str(other)!r} (flow 'maf') has weights 'bogus' that the flow does not have"
    )


def test_weights_holding_nan_are_refused_by_name(maf: Path):
    def change(payload: dict[str, Any]) -> None:
        payload["state_dict"]["transform.transforms.0.hyper.2.weight"][3, 5] = float("nan")

    repack(maf, change)
    assert refused(maf) == (
        f"{str(maf)!r} (flow 'maf') has weights 'transform.transforms.0.hyper.2.weight' "
        "holding NaN"
    )


def test_weights_that_are_not_tensors_are_refused(maf: Path):
    repack(maf, lambda p: p["state_dict"].update({"base._0": [0.0, 1.0]}))
    assert refused(maf) == (
        f"{str(maf)!r} has weights entry 'base._0' that is not a tensor named by a str"
    )


def test_escapes_in_file_text_never_reach_the_message(maf: Path, tmp_path: Path):
    other = tmp_path / "other.pt"
    other.write_bytes(maf.read_bytes())
    repack(maf, lambda p: p.update(preset="maf\x1b[2J\x1b]0;pwned\x07"))
    assert refused(maf) == f"{str(maf)!r} has an invalid preset name 'maf0;pwned'"

    key = "\x1b[31mtransforms\x1b[0m\r\n\u202e"
    repack(other, lambda p: p["arguments"].update({key: 10**8}))
    assert f"{str(other)!r} has argument 'transforms' = 100000000, implausible" in refused(other)


@pytest.fixture
def evil_module() -> Iterator[types.ModuleType]:
    """A module whose name holds a terminal escape, importable while the test runs."""
    name = "evil\x1b[31m"
    module = types.ModuleType(name)

    class Payload:
        pass

    Payload.__module__ = name
    Payload.__qualname__ = Payload.__name__ = "Payload"
    module.Payload = Payload  # type: ignore[attr-defined]
    sys.modules[name] = module
    yield module
    del sys.modules[name]


def test_torch_load_errors_lose_their_advice_and_escapes(
    tmp_path: Path, evil_module: types.ModuleType
):
    path = tmp_path / "evil.pt"
    torch.save({"format": "flows-checkpoint", "payload": evil_module.Payload()}, path)
    assert refused(path) == (
        f"{str(path)!r} is not a readable flows checkpoint (corrupt, truncated, or holding more "
        "than plain data): it refers to the Python object 'evil.Payload'"
    )


def test_a_hostile_payload_names_the_object_it_wanted(maf: Path, tmp_path: Path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    repack(maf, lambda p: p.update(extra={"x": Exploit()}))
    assert re.search(r"it refers to the Python object '(posix|nt)\.system'$", refused(maf))
    assert not marker.exists()


def test_a_text_file_is_not_a_torch_file(tmp_path: Path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    assert refused(path).endswith(": it is not a whole torch file")


def test_flows_written_by_this_version_still_load_unchanged(tmp_path: Path):
    # The checks must not refuse real files: the presets of flows-core, tiny and larger.
    torch.manual_seed(1)
    for flow in (
        MAF(features=1, transforms=1, hidden_features=[2]),
        MAF(features=5, context=3, transforms=4, randperm=True),
        GF(features=3, transforms=2, components=4),
    ):
        path = tmp_path / "flow.pt"
        save(flow, path)
        again = load(path).flow
        for (key, value), (other_key, other) in zip(
            flow.state_dict().items(), again.state_dict().items(), strict=True
        ):
            assert key == other_key
            torch.testing.assert_close(value, other, rtol=0, atol=0)
