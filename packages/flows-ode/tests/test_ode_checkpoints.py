"""A CNF checkpoint written before Preset recorded its arguments still loads.

The file under ``data/checkpoints-v1`` was written by the code before
:class:`flows.core.presets.Preset` (flows-core's ``tests/data/checkpoints-v1/generate.py``
says how): it must load, give the log-densities it gave then, and hold the very arguments the
same call records now.
"""

from __future__ import annotations

from pathlib import Path

import torch

from flows.core import load
from flows.ode import CNF

CHECKPOINT = Path(__file__).parent / "data" / "checkpoints-v1" / "cnf.ckpt"


def test_version_1_checkpoint_loads_with_the_same_densities(dtype, device):
    checkpoint = load(CHECKPOINT)
    assert checkpoint.preset == "cnf" and type(checkpoint.flow) is CNF
    extra = checkpoint.extra
    flow = checkpoint.flow.to(dtype=dtype, device=device)
    x = extra["x"].to(dtype=dtype, device=device)
    c = extra["c"].to(dtype=dtype, device=device)
    log_prob = flow(c).log_prob(x).detach()
    # Within the adaptive solver's tolerances (atol 1e-6, rtol 1e-5), whatever its steps.
    tolerance = (
        {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float64 else {"atol": 1e-3, "rtol": 1e-3}
    )
    torch.testing.assert_close(log_prob.cpu().double(), extra["log_prob"], **tolerance)


def test_version_1_arguments_are_those_the_same_call_records_now():
    checkpoint = load(CHECKPOINT)
    call = checkpoint.extra["call"]
    now = CNF(*call["args"], **call["kwargs"])
    assert repr(now.arguments) == repr(checkpoint.arguments)  # the tuple stays a tuple
    now.load_state_dict(checkpoint.flow.state_dict())  # strict: the same architecture
