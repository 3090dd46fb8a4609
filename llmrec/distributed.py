"""Splitting evaluation users across processes (``accelerate launch`` / ``torchrun``) and putting them back.

One process (no ``WORLD_SIZE`` > 1 in the environment) is the identity: :func:`shard` returns every item,
:func:`gather` returns its input, nothing imports torch. Under a launcher, :func:`init` sets up the process group
through accelerate's ``PartialState`` (gloo on CPU, nccl with one GPU per process, the device set to the local
rank), :func:`shard` gives each rank one contiguous block (sizes differ by at most one; no padding, so there are no
duplicates to drop) and :func:`gather` returns the concatenation of every rank's list on every rank, which is the
original order. Metrics are then computed once over all users, by every rank, from the same list: identical to one
process by construction. Only the main rank writes files (:func:`is_main`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def world_size() -> int:
    """Processes in the run (``WORLD_SIZE`` from the launcher, or the initialised process group); 1 alone."""
    dist = _dist()
    if dist is not None:
        return dist.get_world_size()
    return max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))


def rank() -> int:
    """This process' global rank (0 alone)."""
    dist = _dist()
    if dist is not None:
        return dist.get_rank()
    return int(os.environ.get("RANK", "0") or 0)


def is_main() -> bool:
    """True on the process that writes outputs (global rank 0; always, alone)."""
    return rank() == 0


def _dist():
    """``torch.distributed`` when a process group is initialised, else None (without importing torch alone)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1 and "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def init() -> int:
    """Join the launcher's process group if there is one and it is not joined yet -> world size.

    Call before loading a model, so that on GPUs each process has its own device (``PartialState`` sets it)."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) <= 1:
        return 1
    import torch

    if _dist() is None:
        from accelerate import PartialState

        PartialState(cpu=not torch.cuda.is_available())
    return world_size()


def default_device() -> str:
    """Where a model goes when the caller names no device: this process' own GPU (``cuda:LOCAL_RANK`` under a
    launcher, ``cuda:0`` alone) when CUDA is available, else ``cpu``."""
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    return f"cuda:{local % max(torch.cuda.device_count(), 1)}"


def shard_bounds(n: int, world: int, rank_: int) -> tuple[int, int]:
    """``[start, end)`` of rank ``rank_``'s contiguous block of ``n`` items over ``world`` processes: the first
    ``n % world`` ranks take one item more (as ``accelerate``'s ``split_between_processes`` without padding)."""
    if world < 1 or not 0 <= rank_ < world or n < 0:
        raise ValueError(f"bad shard: n={n}, world={world}, rank={rank_}")
    base, extra = divmod(n, world)
    start = rank_ * base + min(rank_, extra)
    return start, start + base + (1 if rank_ < extra else 0)


def local_range(n: int) -> range:
    """The indices of ``n`` items this process handles (all of them alone)."""
    world = init()
    if world == 1:
        return range(n)
    start, end = shard_bounds(n, world, rank())
    return range(start, end)


def shard(items: Sequence[T]) -> list[T]:
    """This process' contiguous block of ``items`` (all of them alone)."""
    r = local_range(len(items))
    return list(items[r.start:r.stop])


def gather(local: Sequence[T]) -> list[T]:
    """Every rank's ``local`` list concatenated in rank order, on every rank: for blocks from :func:`shard`, the
    full list in the original order. Every rank must call it (a collective); alone it returns ``list(local)``."""
    if init() == 1:
        return list(local)
    import torch.distributed as dist

    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(local))
    return [x for part in parts for x in part]


def broadcast(obj: T) -> T:
    """The main rank's ``obj`` on every rank (a collective; alone, ``obj``)."""
    if init() == 1:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (a no-op alone)."""
    if init() > 1:
        import torch.distributed as dist

        dist.barrier()
