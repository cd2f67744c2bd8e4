"""Process-group helpers over ``torch.distributed`` (torchrun sets the environment; gloo on CPU, nccl on GPU).

Every rank holds the same model and visits its share of each global batch
(:mod:`debiaslab.engine.data_parallel`); per-example tables stay identical on every rank through
:func:`gather_cat`. Outside a process group every helper is a no-op.
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


def broadcast_module(module: torch.nn.Module) -> None:
    """Make every rank start from rank 0's parameters and buffers."""
    if is_distributed():
        for tensor in module.state_dict().values():
            dist.broadcast(tensor, src=0)


def collective_device() -> torch.device:
    """Where tensors passed to collectives live: the current GPU under nccl, else the CPU."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average ``params``' gradients over the ranks with one all-reduce per (device, dtype), not one per tensor.

    A small all-reduce first agrees which parameters have a gradient on any rank; a rank that has none for such a
    parameter contributes zeros, so every rank ends with the same gradients (and the same ``None`` ones).
    """
    if not is_distributed():
        return
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    present = torch.tensor([p.grad is not None for p in params], dtype=torch.int32, device=collective_device())
    dist.all_reduce(present, op=dist.ReduceOp.MAX)
    buckets: dict[tuple[torch.device, torch.dtype], list[Tensor]] = {}
    for p, used in zip(params, present.tolist()):
        if not used:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        buckets.setdefault((p.grad.device, p.grad.dtype), []).append(p.grad)
    world = world_size()
    for grads in buckets.values():
        flat = _flatten_dense_tensors(grads)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)
        for grad, synced in zip(grads, _unflatten_dense_tensors(flat, grads)):
            grad.copy_(synced)


def gather_cat(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Concatenate per-rank tensors over all ranks (rank order) along dim 0, so per-example tables indexed by the
    dataset index stay identical on every rank. Ranks may hold different lengths (the last global batch of an
    epoch splits unevenly): they are padded to the longest for the collective and trimmed after. Returns the
    inputs unchanged when not distributed."""
    if not is_distributed() or not tensors:
        return tensors
    world = world_size()
    device = collective_device()
    sizes = torch.tensor([tensors[0].shape[0]], device=device)
    all_sizes = [torch.empty_like(sizes) for _ in range(world)]
    dist.all_gather(all_sizes, sizes)
    lengths = [int(n) for n in torch.cat(all_sizes).tolist()]
    longest = max(lengths)
    out = []
    for t in tensors:
        padded = t.new_zeros((longest, *t.shape[1:]))
        padded[: t.shape[0]] = t
        parts = [torch.empty_like(padded) for _ in range(world)]
        dist.all_gather(parts, padded.contiguous())
        out.append(torch.cat([part[:n] for part, n in zip(parts, lengths)]))
    return tuple(out)


def global_mean(t: Tensor) -> Tensor:
    """The mean of ``t``'s entries over every rank's ``t`` (ranks may hold different numbers); ``t.mean()`` when
    not distributed. The result is detached."""
    if not is_distributed():
        return t.mean()
    stats = torch.stack([t.detach().sum().double(), torch.tensor(float(t.numel()), device=t.device)])
    stats = stats.to(collective_device())
    dist.all_reduce(stats)
    return (stats[0] / stats[1]).to(t.device, t.dtype)


def sum_values(sums: dict[str, Tensor]) -> None:
    """Replace each value of ``sums`` (scalars, the same keys on every rank) by its sum over the ranks, in place."""
    if not is_distributed() or not sums:
        return
    keys = sorted(sums)
    device = collective_device()
    flat = torch.stack([torch.as_tensor(sums[k]).to(device, torch.float64).reshape(()) for k in keys])
    dist.all_reduce(flat)
    for key, value in zip(keys, flat.cpu().unbind(0)):
        sums[key] = value


def barrier() -> None:
    if is_distributed():
        dist.barrier()
