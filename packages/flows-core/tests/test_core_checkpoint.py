"""Tests of flows.core.checkpoint: round trips, atomic writes, and files that must be refused."""

from __future__ import annotations

import importlib
import io
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from flows.core import MAF
from flows.core.checkpoint import FORMAT, FORMAT_VERSION, Checkpoint, CheckpointError, load, save
from flows.core.plugins import PresetSpec, hookimpl, register, unregister


def same_density(a: torch.nn.Module, b: torch.nn.Module, features: int, context: int = 0) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(16, features, generator=generator)
    if context:
        c = torch.randn(16, context, generator=generator)
        torch.testing.assert_close(a(c).log_prob(x), b(c).log_prob(x))
    else:
        torch.testing.assert_close(a().log_prob(x), b().log_prob(x))


def test_save_and_load_rebuild_the_same_flow(tmp_path: Path):
    flow = MAF(features=3, context=2, transforms=2, hidden_features=[8, 8])
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    extra = {"mean": [0.5, 1.0, -2.0], "columns": ["a", "b", "c"], "stats": torch.ones(3)}
    path = tmp_path / "flow.pt"
    save(flow, path, extra=extra)

    checkpoint = load(path)
    assert isinstance(checkpoint, Checkpoint)
    assert checkpoint.preset == "maf"
    assert checkpoint.arguments == flow.arguments
    assert checkpoint.format_version == FORMAT_VERSION
    assert "flows-core" in checkpoint.versions and "torch" in checkpoint.versions
    again, loaded_extra = checkpoint  # unpacks as (flow, extra)
    assert type(again) is MAF
    assert loaded_extra["columns"] == ["a", "b", "c"]
    torch.testing.assert_close(loaded_extra["stats"], torch.ones(3))
    same_density(flow, again, features=3, context=2)


def test_random_orders_survive_the_round_trip(tmp_path: Path, dtype):
    torch.manual_seed(3)
    flow = MAF(features=4, transforms=3, randperm=True).to(dtype)
    save(flow, tmp_path / "flow.pt")
    torch.manual_seed(4)  # a different permutation would be drawn when rebuilding
    again, _ = load(tmp_path / "flow.pt")
    x = torch.randn(8, 4, dtype=dtype)
    torch.testing.assert_close(again.to(dtype)().log_prob(x), flow().log_prob(x))


@pytest.mark.parametrize("support", [None, (0.0, 1.0)])
def test_a_flow_comes_back_in_its_own_dtype(tmp_path: Path, dtype, support):
    # Rebuilt in the default dtype, a float64 flow's weights were rounded on loading.
    torch.manual_seed(3)
    flow = MAF(features=2, transforms=1, support=support).to(dtype)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    save(flow, tmp_path / "flow.pt")
    again, _ = load(tmp_path / "flow.pt")
    assert {p.dtype for p in again.parameters()} == {dtype}
    for key, value in flow.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    x = 0.05 + 0.9 * torch.rand(8, 2, dtype=dtype)
    assert torch.equal(again().log_prob(x), flow().log_prob(x))


def test_save_replaces_the_file_whole_and_leaves_no_temporary(tmp_path: Path):
    path = tmp_path / "flow.pt"
    save(MAF(features=2, transforms=1), path, extra={"run": 1})
    save(MAF(features=2, transforms=2), path, extra={"run": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.pt"]
    checkpoint = load(path)
    assert checkpoint.extra == {"run": 2} and checkpoint.arguments["transforms"] == 2


def test_a_failed_save_leaves_the_old_file(tmp_path: Path):
    path = tmp_path / "flow.pt"
    save(MAF(features=2, transforms=1), path, extra={"run": 1})
    with pytest.raises(CheckpointError):
        save(MAF(features=2, transforms=1), path, extra={"bad": object()})
    assert load(path).extra == {"run": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.pt"]


def test_save_refuses_arguments_that_are_not_plain_data(tmp_path: Path):
    flow = MAF(features=2, transforms=1, activation=torch.nn.ELU)
    with pytest.raises(ValueError, match=r"argument 'activation'.*ELU"):
        save(flow, tmp_path / "flow.pt")
    assert not (tmp_path / "flow.pt").exists()


def test_save_refuses_a_flow_that_is_not_a_preset(tmp_path: Path):
    with pytest.raises(CheckpointError, match="no 'arguments'"):
        save(torch.nn.Linear(2, 2), tmp_path / "flow.pt")

    class Local(MAF):
        pass

    with pytest.raises(CheckpointError, match="not a registered preset"):
        save(Local(features=2, transforms=1), tmp_path / "flow.pt")


def test_save_into_a_missing_folder_fails_clearly(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        save(MAF(features=2, transforms=1), tmp_path / "nowhere" / "flow.pt")


def test_load_never_runs_code_from_the_file(tmp_path: Path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": 1, "payload": Exploit()}, path)
    with pytest.raises(CheckpointError, match="not a readable flows checkpoint"):
        load(path)
    assert not marker.exists()


def test_load_refuses_a_hostile_payload_inside_a_valid_envelope(tmp_path: Path):
    import hashlib

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    buffer = io.BytesIO()
    torch.save({"preset": "maf", "arguments": Exploit()}, buffer)
    inner = buffer.getvalue()
    envelope = {
        "format": FORMAT,
        "version": 1,
        "sha256": hashlib.sha256(inner).hexdigest(),
        "payload": inner,
    }
    torch.save(envelope, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError):
        load(tmp_path / "evil.pt")
    assert not marker.exists()


def test_load_refuses_a_newer_format(tmp_path: Path):
    path = tmp_path / "flow.pt"
    save(MAF(features=2, transforms=1), path)
    envelope = torch.load(path, weights_only=True)
    envelope["version"] = FORMAT_VERSION + 1
    torch.save(envelope, path)
    with pytest.raises(CheckpointError, match=r"newer.*upgrade flows-core"):
        load(path)


def test_load_refuses_a_truncated_file(tmp_path: Path):
    path = tmp_path / "flow.pt"
    save(MAF(features=2, transforms=1), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as info:
        load(path)
    assert "\n" not in str(info.value)


def test_load_refuses_altered_weights(tmp_path: Path):
    path = tmp_path / "flow.pt"
    save(MAF(features=2, transforms=1), path)
    envelope = torch.load(path, weights_only=True)
    payload = bytearray(envelope["payload"])
    payload[len(payload) // 2] ^= 0xFF
    envelope["payload"] = bytes(payload)
    torch.save(envelope, path)
    with pytest.raises(CheckpointError, match="damaged"):
        load(path)


def test_load_refuses_other_torch_files(tmp_path: Path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a flows checkpoint"):
        load(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(CheckpointError):
        load(tmp_path / "text.pt")


def test_load_of_a_missing_file_names_it(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load(tmp_path / "missing.pt")


def test_load_names_the_preset_a_missing_plugin_provided(tmp_path: Path, monkeypatch):
    module = tmp_path / "flows_test_extra_presets.py"
    module.write_text(
        textwrap.dedent(
            """
            from flows.core.presets import MAF

            class TinyFlow(MAF):
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "flows_test_extra_presets", raising=False)

    class Plugin:
        @hookimpl
        def flows_register_presets(self):
            return [PresetSpec("tinyflow", "flows_test_extra_presets:TinyFlow", "A test flow")]

    plugin = Plugin()
    register(plugin)
    try:
        tiny = importlib.import_module("flows_test_extra_presets").TinyFlow(
            features=2, transforms=1
        )
        save(tiny, tmp_path / "tiny.pt")
        assert type(load(tmp_path / "tiny.pt").flow).__name__ == "TinyFlow"
    finally:
        unregister(plugin)
    with pytest.raises(CheckpointError, match=r"needs flow 'tinyflow'.*unknown preset") as info:
        load(tmp_path / "tiny.pt")
    assert "\n" not in str(info.value)


def test_checkpoint_errors_are_value_errors():
    assert issubclass(CheckpointError, ValueError)
