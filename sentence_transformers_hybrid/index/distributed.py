"""Rank, world size, device and barrier under ``torchrun`` (one process per device, any number of nodes).

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`init_distributed` starts the process group:
NCCL when CUDA is there, else gloo (CPU). Each rank encodes its own shards on :func:`rank_device`; rank 0 searches
and scores after :func:`barrier`. Without ``torchrun`` everything is rank 0 of 1 and the barrier does nothing.

The barrier waits as long as the slowest rank encodes: the group's timeout is ``$STH_DIST_TIMEOUT_S`` seconds
(default 48 hours; torch's default of 30 minutes would end a long encode).

Example:
    >>> dist_context()
    (0, 1)
"""

from __future__ import annotations

import datetime
import os

import torch

__all__ = ["barrier", "dist_context", "init_distributed", "is_main_process", "rank_device"]


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed() -> bool:
    """Start the process group when launched by ``torchrun`` and none is running; ``True`` when distributed."""
    if not torch.distributed.is_available():
        return False
    if torch.distributed.is_initialized():
        return True
    if not _launched():
        return False
    timeout = datetime.timedelta(seconds=float(os.environ.get("STH_DIST_TIMEOUT_S", 48 * 3600)))
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        torch.distributed.init_process_group("nccl", timeout=timeout)
    else:
        torch.distributed.init_process_group("gloo", timeout=timeout)
    return True


def dist_context() -> tuple[int, int]:
    """``(rank, world_size)`` of this process (``(0, 1)`` without a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return dist_context()[0] == 0


def rank_device() -> str:
    """This rank's device: ``cuda:{LOCAL_RANK}`` when CUDA is there, else ``cpu``."""
    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return "cpu"


def barrier() -> None:
    """Wait for every rank (nothing to wait for without a process group)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
