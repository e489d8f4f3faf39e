"""Autocast: bfloat16 and float16 networks, the transforms and log-determinants in float32.

Under :func:`torch.autocast` the hyper-networks' matrix products run in the low-precision
dtype; every other operation of ``log_prob`` (the affine arithmetic, the log-scales, their sums,
the base density) must run in the data's float32. ``fit(..., autocast=...)`` trains so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

from flows.core import MAF, NICE, RealNVP, fit

LOW = [torch.bfloat16, torch.float16]

# The operations of a network's layers (and views of their outputs): all that may run in the
# autocast dtype.
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
    "maf": lambda context: MAF(3, context, transforms=2, hidden_features=(16, 16)),
    "realnvp": lambda context: RealNVP(3, context, transforms=2, hidden_features=(16, 16)),
    "nice": lambda context: NICE(3, context, transforms=2, hidden_features=(16, 16)),
}


class LowPrecisionOps(TorchDispatchMode):
    """Records every aten operation that returns a bfloat16 or float16 tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        outputs = out if isinstance(out, (tuple, list)) else (out,)
        if any(
            isinstance(o, Tensor) and o.dtype in (torch.bfloat16, torch.float16) for o in outputs
        ):
            self.ops.add(str(func))
        return out


@pytest.mark.parametrize("low", LOW, ids=["bfloat16", "float16"])
@pytest.mark.parametrize("context", [0, 2])
@pytest.mark.parametrize("name", list(FLOWS))
def test_only_the_networks_run_in_the_autocast_dtype(
    name: str, context: int, low: torch.dtype, device: torch.device
) -> None:
    torch.manual_seed(0)
    flow = FLOWS[name](context).to(device)
    x = torch.randn(64, 3, device=device)
    c = torch.randn(64, context, device=device) if context else None
    exact = flow(c).log_prob(x)
    with torch.autocast(device.type, dtype=low), LowPrecisionOps() as recorded:
        log_p = flow(c).log_prob(x)
    assert recorded.ops, "autocast ran no network in low precision"
    assert recorded.ops <= NETWORK_OPS, sorted(recorded.ops - NETWORK_OPS)
    assert log_p.dtype == torch.float32
    # Only the networks' rounding remains: the log-densities agree to a few hundredths.
    torch.testing.assert_close(log_p, exact, rtol=0, atol=0.1)


@pytest.mark.parametrize("low", LOW, ids=["bfloat16", "float16"])
def test_fit_under_autocast_trains_float32_weights_as_well(
    low: torch.dtype, device: torch.device
) -> None:
    generator = torch.Generator().manual_seed(1)
    x = (torch.randn(600, 2, generator=generator) * torch.tensor([1.0, 3.0])).to(device)
    results = {}
    for precision in (None, low):
        torch.manual_seed(0)
        flow = MAF(2, transforms=2, hidden_features=(16, 16)).to(device)
        results[precision] = fit(
            flow, x, epochs=8, batch_size=64, lr=1e-2, patience=None, seed=0, autocast=precision
        )
        assert all(p.dtype == torch.float32 for p in flow.parameters())
    full, mixed = results[None], results[low]
    assert mixed.val_nll is not None and full.val_nll is not None
    # Eight epochs from the same start on the same batches: the same fit, up to rounding.
    assert abs(mixed.val_nll - full.val_nll) < 0.05
    assert mixed.val_nll < 4.5  # the entropy of this Gaussian is 3.94 nats


@pytest.mark.parametrize("value", [torch.float32, torch.float64, "bfloat16", True])
def test_a_bad_autocast_dtype_is_refused(value: Any) -> None:
    with pytest.raises(ValueError) as caught:
        fit(MAF(2, transforms=1), torch.randn(20, 2), steps=1, autocast=value)
    assert str(caught.value) == (
        f"autocast must be None, torch.bfloat16 or torch.float16, got {value!r}"
    )
