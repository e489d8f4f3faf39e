"""Autocast: spline flows run their networks in bfloat16 or float16, the splines in float32.

Under :func:`torch.autocast` only the hyper-networks' layers may run in the low-precision
dtype: the spline's bins, knots, derivatives and log-derivatives stay in the data's float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from flows.splines import NCSF, NSF

NETWORK_OPS = {
    "aten.addmm.default",
    "aten.mm.default",
    "aten.relu_.default",
    "aten.relu.default",
    "aten._to_copy.default",
    "aten.t.default",
    "aten.view.default",
    "aten.permute.default",
    "aten.detach.default",
}

FLOWS: dict[str, Callable[[int], nn.Module]] = {
    "nsf": lambda context: NSF(3, context, bins=4, transforms=2, hidden_features=(16, 16)),
    "nsf-coupling": lambda context: NSF(
        4, context, bins=4, transforms=2, passes=2, hidden_features=(16, 16)
    ),
    "ncsf": lambda context: NCSF(3, context, bins=4, transforms=2, hidden_features=(16, 16)),
}


class LowPrecisionOps(TorchDispatchMode):
    """Records every aten operation that returns a bfloat16 or float16 tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        low = (torch.bfloat16, torch.float16)
        if any(isinstance(o, Tensor) and o.dtype in low for o in outputs):
            self.ops.add(str(func))
        return out


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("name", list(FLOWS))
def test_only_the_networks_run_in_the_autocast_dtype(
    name: str, context: int, low: torch.dtype, device: torch.device
) -> None:
    torch.manual_seed(0)
    flow = FLOWS[name](context).to(device)
    features = 4 if name == "nsf-coupling" else 3
    x = torch.randn(64, features, device=device)
    if name == "ncsf":
        x = x.clamp(-3.0, 3.0)  # NCSF's domain is the circle [-pi, pi]
    c = torch.randn(64, context, device=device) if context else None
    exact = flow(c).log_prob(x)
    with torch.autocast(device.type, dtype=low), LowPrecisionOps() as recorded:
        log_p = flow(c).log_prob(x)
    assert recorded.ops, "autocast ran no network in low precision"
    assert recorded.ops <= NETWORK_OPS, sorted(recorded.ops - NETWORK_OPS)
    assert log_p.dtype == torch.float32
    torch.testing.assert_close(log_p, exact, rtol=0, atol=0.1)
