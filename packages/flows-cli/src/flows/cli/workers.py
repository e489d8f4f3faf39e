"""Data-parallel processes for ``flows fit`` under ``torchrun``: join the group, leave it cleanly.

One process (no ``torchrun``) is rank 0 of 1 and touches no :mod:`torch.distributed` state.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from flows.cli.arguments import CLIError

__all__ = ["Workers", "start_workers"]


@dataclasses.dataclass
class Workers:
    """This process's place among the data-parallel processes (one process: rank 0 of 1)."""

    rank: int
    world: int
    device: Any
    started: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0

    def stop(self) -> None:
        if self.started:
            import torch.distributed

            # Tearing gloo down while another rank still uses it aborts that rank: wait first.
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()


def start_workers(device: str | None) -> Workers:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, nccl on GPU)."""
    import torch

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        chosen = torch.device(device)
    except RuntimeError:
        raise CLIError(
            f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)"
        ) from None
    if world <= 1:
        return Workers(0, 1, chosen)
    import torch.distributed

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local)
        torch.cuda.set_device(chosen)
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    torch.distributed.init_process_group(backend=backend)
    return Workers(torch.distributed.get_rank(), torch.distributed.get_world_size(), chosen, True)
