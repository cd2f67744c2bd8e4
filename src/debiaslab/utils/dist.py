"""Data-parallel helpers over ``torch.distributed`` (torchrun sets the environment; gloo on CPU, nccl on GPU).

Every rank holds the same model, visits a disjoint shard of each epoch's indices, and gradients are averaged
with one all-reduce per parameter tensor after backward. Unlike wrapping in ``DistributedDataParallel`` this
works for any loss a method writes (several models, double backprop, auxiliary per-example tables).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return rank() == 0


def init_from_env() -> bool:
    """Initialise the process group when launched by torchrun (``WORLD_SIZE`` > 1). Returns True if distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return is_distributed()


def shard(indices: Tensor) -> Tensor:
    """This rank's share of an epoch's indices (equal sizes; the tail that does not divide is dropped)."""
    if not is_distributed():
        return indices
    world = world_size()
    usable = indices.numel() - indices.numel() % world
    return indices[rank() : usable : world]


def broadcast_module(module: torch.nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if is_distributed():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    if not is_distributed():
        return
    world = world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(world)


def gather_cat(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Concatenate equally sized per-rank tensors over all ranks (rank order), so per-example tables indexed by
    the dataset index stay identical on every rank. Returns the inputs unchanged when not distributed."""
    if not is_distributed():
        return tensors
    out = []
    for t in tensors:
        parts = [torch.empty_like(t) for _ in range(world_size())]
        dist.all_gather(parts, t.contiguous())
        out.append(torch.cat(parts))
    return tuple(out)


def barrier() -> None:
    if is_distributed():
        dist.barrier()
