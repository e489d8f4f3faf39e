"""Byte flips and crafted checkpoints: loading refuses or succeeds, never hangs, never lies.

A crafted checkpoint carries a valid checksum (the checksum is integrity, not trust), so every
field of it reaches the validation that ``load`` and the command do.
"""

from __future__ import annotations

import hashlib
import io
import math
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from hypothesis import given
from hypothesis import strategies as st

from flows.core.checkpoint import CheckpointError, load

SECONDS = 20  # far above a real load (milliseconds): only a hang or a huge allocation gets here


class Hang(BaseException):
    pass


@contextmanager
def bounded_time() -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise Hang(f"no answer within {SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def unpack(path: Path) -> dict[str, Any]:
    outer = torch.load(path, weights_only=True)
    return torch.load(io.BytesIO(outer["payload"]), weights_only=True)


def pack(payload: dict[str, Any], path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    inner = buffer.getvalue()
    outer = {
        "format": "flows-checkpoint",
        "version": 1,
        "sha256": hashlib.sha256(inner).hexdigest(),
        "payload": inner,
    }
    torch.save(outer, path)


def check_everything(path: Path, harness: Any) -> None:
    """``load`` and the two commands that read a checkpoint end cleanly on ``path``."""
    with bounded_time():
        try:
            checkpoint = load(path)
        except CheckpointError as error:
            message = str(error)
            assert "\n" not in message and "weights_only" not in message, message
            assert not any(ord(ch) < 32 for ch in message), repr(message)
        else:
            for tensor in checkpoint.flow.state_dict().values():
                if tensor.is_floating_point():
                    assert not tensor.isnan().any()
        sampled = harness.run("sample", str(path), "-n", "5", "--seed", "0")
        harness.assert_clean_ending(sampled)
        if sampled.status == 0:
            rows = sampled.stdout.strip().splitlines()[1:]
            assert len(rows) == 5 and all(
                math.isfinite(float(v)) for r in rows for v in r.split(",")
            )
        evaluated = harness.run("eval", str(path), "moons", "--samples", "50")
        harness.assert_clean_ending(evaluated)
        if evaluated.status == 0:
            assert math.isfinite(float(evaluated.stdout.split()[2])), evaluated.stdout


@given(
    flips=st.lists(st.tuples(st.integers(0, 10**9), st.integers(1, 255)), min_size=1, max_size=4)
)
def test_byte_flips_are_caught_or_harmless(model: Path, tmp_path_factory, harness, flips):
    data = bytearray(model.read_bytes())
    for position, mask in flips:
        data[position % len(data)] ^= mask
    path = tmp_path_factory.mktemp("flip") / "model.pt"
    path.write_bytes(bytes(data))
    check_everything(path, harness)


hostile = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from([10**8, 10**9, 2**31, -1, 0, "\x1b[31mred\x1b[0m", "maf\n", "nsf"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def tamperings(draw: Any) -> list[tuple[str, Any, Any]]:
    parts = st.sampled_from(["argument", "new-argument", "preset", "extra", "weights", "drop"])
    return [
        (draw(parts), draw(st.integers(0, 1000)), draw(hostile))
        for _ in range(draw(st.integers(1, 3)))
    ]


def tamper(payload: dict[str, Any], changes: list[tuple[str, Any, Any]]) -> None:
    for part, index, value in changes:
        if part == "argument" and payload["arguments"]:
            keys = sorted(payload["arguments"])
            payload["arguments"][keys[index % len(keys)]] = value
        elif part == "new-argument":
            payload["arguments"][f"x{index}"] = value
        elif part == "preset":
            payload["preset"] = value
        elif part == "extra":
            keys = sorted(payload["extra"])
            payload["extra"][keys[index % len(keys)]] = value
        elif part == "weights":
            keys = sorted(payload["state_dict"])
            key = keys[index % len(keys)]
            tensor = payload["state_dict"][key]
            if isinstance(value, float) and tensor.is_floating_point():
                filled = torch.tensor(value, dtype=torch.float64).to(tensor.dtype)  # may be inf
                payload["state_dict"][key] = filled.expand_as(tensor).clone()
            elif type(value) is int and 0 <= value < 64:
                payload["state_dict"][key] = torch.zeros(value)
        elif part == "drop":
            keys = sorted(payload["state_dict"])
            del payload["state_dict"][keys[index % len(keys)]]


@given(changes=tamperings())
def test_crafted_checkpoints_are_refused_in_one_line(
    model: Path, tmp_path_factory, harness, changes
):
    payload = unpack(model)
    tamper(payload, changes)
    path = tmp_path_factory.mktemp("crafted") / "model.pt"
    pack(payload, path)
    check_everything(path, harness)
