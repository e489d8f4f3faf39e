"""The optimizer of flows' fits and the rule that lowers its learning rate.

:func:`flows.core.fit` and :func:`flows.core.fit_to_target` both step with :func:`make_adam`
and, when asked (``lr_patience``), halve the rate with :func:`plateau_halving`.

Example:
    >>> import torch
    >>> weights = [torch.nn.Parameter(torch.zeros(3))]
    >>> optimizer = make_adam(weights, lr=0.1, weight_decay=0.0)
    >>> plateau = plateau_halving(optimizer, lr_patience=1)
    >>> for measure in (1.0, 1.0, 1.0):  # the second without a new best halves it
    ...     plateau.step(measure)
    >>> optimizer.param_groups[0]["lr"]
    0.05
"""

from __future__ import annotations

__all__ = ["make_adam", "plateau_halving"]

from collections.abc import Sequence

import torch
from torch import Tensor


def make_adam(params: Sequence[Tensor], lr: float, weight_decay: float) -> torch.optim.Adam:
    """Adam over ``params``, fused into one kernel per tensor where torch has one for them.

    On the CPU torch's default Adam steps tensor by tensor in Python, which for a small flow
    costs about as much as its forward pass; the fused kernel (CPU and CUDA, floating-point
    parameters) does the same update without that overhead (BENCHMARKS.md, "Fused Adam").
    """
    fused = bool(params) and all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params
    )
    return torch.optim.Adam(list(params), lr=lr, weight_decay=weight_decay, fused=fused or None)


def plateau_halving(
    optimizer: torch.optim.Optimizer, lr_patience: int | None
) -> torch.optim.lr_scheduler.ReduceLROnPlateau | None:
    """The rule that halves the learning rate at the (lr_patience + 1)-th stale measure.

    A measure is stale when it sets no new best; the count starts afresh after each halving.

    ``None`` without ``lr_patience``. Its ``step(value)`` takes each measure, lower better;
    any new best counts (threshold 0), as it does for early stopping.
    """
    if lr_patience is None:
        return None
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, factor=0.5, patience=lr_patience, threshold=0.0
    )
