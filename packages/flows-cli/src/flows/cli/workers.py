"""Data-parallel processes for ``flows fit`` under ``torchrun``: join the group, leave it cleanly.

One process (no ``torchrun``) is rank 0 of 1 and touches no :mod:`torch.distributed` state.
Under ``torchrun``, every wait on the other processes (joining, each collective) is bounded by
``--dist-timeout`` seconds, so one stopped or hung process makes the others fail with one line
instead of waiting forever.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import re
from typing import Any

from flows.cli.arguments import CLIError

__all__ = ["Workers", "check_device", "start_workers"]

# How gloo, nccl and the rendezvous store word a wait that ran out of time.
_TIMED_OUT = re.compile(r"timed? ?out|timeout|deadline exceeded", re.IGNORECASE)


@dataclasses.dataclass
class Workers:
    """This process's place among the data-parallel processes (one process: rank 0 of 1).

    Arguments:
        rank: This process's rank.
        world: The number of processes.
        device: The torch device this process trains on.
        started: Whether this process is in a :mod:`torch.distributed` group.
        timeout: The seconds any wait on the other processes may take (``--dist-timeout``).
    """

    rank: int
    world: int
    device: Any
    started: bool = False
    timeout: float = 300.0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def stop(self) -> None:
        """Leave the group once every process is done with it; a no-op after leaving."""
        if self.started:
            import torch.distributed

            self.started = False
            # Tearing gloo down while another rank still uses it aborts that rank: wait first.
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()

    def abandon(self) -> None:
        """Leave the group after a failure, without waiting for processes that may be gone."""
        if self.started:
            import torch.distributed

            self.started = False
            # The group is already broken; exiting is all that is left to do.
            with contextlib.suppress(Exception):
                torch.distributed.destroy_process_group()

    def explain(self, error: BaseException) -> BaseException:
        """``error`` as one actionable line when it is a collective that ran out of time."""
        return _explain(error, self.timeout) if self.world > 1 else error


def _explain(error: BaseException, timeout: float) -> BaseException:
    if isinstance(error, RuntimeError) and _TIMED_OUT.search(str(error)):
        return CLIError(
            f"another data-parallel process did not answer within --dist-timeout {timeout:g} "
            "seconds (it stopped, hung or is much slower); raise --dist-timeout if it is only slow"
        )
    return error


def check_device(text: str | None) -> Any:
    """The torch device ``text`` names, refused unless this machine can use it.

    Raises:
        CLIError: Not a device name, CUDA (or that CUDA device) missing, or a device torch
            cannot allocate on.
    """
    import torch

    if text is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(text)
    except RuntimeError:
        raise CLIError(
            f"--device {text!r} is not a torch device (e.g. cpu, cuda, cuda:1)"
        ) from None
    if chosen.type == "meta":
        raise CLIError(f"--device {text}: the meta device holds no data; choose cpu or cuda")
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise CLIError(f"--device {text}: CUDA is not available on this machine")
        count = torch.cuda.device_count()
        if chosen.index is not None and chosen.index >= count:
            raise CLIError(
                f"--device {text}: this machine has {count} CUDA device(s), "
                f"cuda:0 to cuda:{count - 1}"
            )
    if chosen.type != "cpu":
        try:
            torch.empty(1, device=chosen)
        except Exception as error:  # each backend words "not here" its own way
            detail = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise CLIError(
                f"--device {text}: not usable on this machine" + (f" ({detail})" if detail else "")
            ) from None
    return chosen


def start_workers(device: str | None, timeout: float = 300.0) -> Workers:
    """Join the process group when launched by ``torchrun`` (gloo on CPU, nccl on GPU).

    Arguments:
        device: ``--device``: a torch device name, or ``None`` for cuda when available.
        timeout: ``--dist-timeout``: the seconds joining and each collective may wait.

    Raises:
        CLIError: The device is not usable, or the other processes did not join in time.
    """
    chosen = check_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Workers(0, 1, chosen, timeout=timeout)
    import torch
    import torch.distributed

    local = int(os.environ.get("LOCAL_RANK", "0"))
    if chosen.type == "cuda":
        name = f"cuda:{local}"
        chosen = check_device(name)
        torch.cuda.set_device(chosen)
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    try:
        torch.distributed.init_process_group(
            backend=backend, timeout=datetime.timedelta(seconds=timeout)
        )
    except RuntimeError as error:
        raise _explain(error, timeout) from None
    return Workers(
        torch.distributed.get_rank(),
        torch.distributed.get_world_size(),
        chosen,
        started=True,
        timeout=timeout,
    )
