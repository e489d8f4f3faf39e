"""Checkpoints of the spline presets written before Preset recorded their arguments still load.

The files under ``data/checkpoints-v1`` were written by the code before
:class:`flows.core.presets.Preset` (flows-core's ``tests/data/checkpoints-v1/generate.py``
says how): each must load, give the log-densities it gave then, and hold the very arguments the
same call records now.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from flows.core import load
from flows.splines import NCSF
from flows.splines.presets import BPF, NAF, NSF, SOSPF, UNAF

CHECKPOINTS = Path(__file__).parent / "data" / "checkpoints-v1"
NAMES = ["bpf", "naf", "ncsf", "nsf", "sospf", "unaf"]


def test_the_version_1_checkpoints_are_all_here():
    assert sorted(path.stem for path in CHECKPOINTS.glob("*.ckpt")) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_version_1_checkpoints_load_with_the_same_densities(name, dtype, device):
    checkpoint = load(CHECKPOINTS / f"{name}.ckpt")
    assert checkpoint.preset == name and checkpoint.format_version == 1
    expected = {"bpf": BPF, "naf": NAF, "ncsf": NCSF, "nsf": NSF, "sospf": SOSPF, "unaf": UNAF}
    assert type(checkpoint.flow) is expected[name]
    extra = checkpoint.extra
    flow = checkpoint.flow.to(dtype=dtype, device=device)
    x = extra["x"].to(dtype=dtype, device=device)
    c = None if extra["c"] is None else extra["c"].to(dtype=dtype, device=device)
    log_prob = (flow() if c is None else flow(c)).log_prob(x).detach()
    tolerance = (
        {"atol": 1e-7, "rtol": 1e-7} if dtype == torch.float64 else {"atol": 1e-4, "rtol": 1e-4}
    )
    torch.testing.assert_close(log_prob.cpu().double(), extra["log_prob"], **tolerance)


@pytest.mark.parametrize("name", NAMES)
def test_version_1_arguments_are_those_the_same_call_records_now(name):
    checkpoint = load(CHECKPOINTS / f"{name}.ckpt")
    call = checkpoint.extra["call"]
    now = type(checkpoint.flow)(*call["args"], **call["kwargs"])
    assert repr(now.arguments) == repr(checkpoint.arguments)  # tuples and lists alike
    now.load_state_dict(checkpoint.flow.state_dict())  # strict: the same architecture


def test_ncsf_orders_alternate_as_maf_orders_do():
    flow = NCSF(3, transforms=3, hidden_features=[8])
    orders = [layer.order.tolist() for layer in flow.transform.transforms[::2]]
    assert orders == [[0, 1, 2], [2, 1, 0], [0, 1, 2]]
