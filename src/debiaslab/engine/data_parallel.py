"""One run on several processes (``torchrun``): which examples each process takes, and how gradients are averaged.

``--batch-size`` is the global batch. Each epoch's index order is cut into global batches exactly as one process
would cut it; process ``r`` of ``N`` takes the positions ``r, r + N, ...`` of every global batch, and its loss is
scaled by ``N * n_r / m`` (``n_r`` its share of a batch of ``m``), so the averaged gradient is the gradient of the
mean loss over the whole global batch. With losses that are means over the batch's examples (ERM, reweighting,
LfF, ULE, BAM, ...) N processes then take the same steps as one, up to floating-point order.

Gradients are averaged one of two ways (the stage's ``grad_sync``):

- ``"ddp"`` (default): :class:`torch.nn.parallel.DistributedDataParallel` wraps a module whose forward *is* the
  stage's loss, so every model the loss runs (several models in one stage, per-example parameter tables such as
  BAM's auxiliary logits) is covered by DDP's bucketed all-reduce, overlapped with the backward pass. Parameters
  that get no gradient in a step are allowed (``find_unused_parameters``).
- ``"allreduce"``: after backward, every gradient is flattened into one buffer per dtype and averaged with one
  all-reduce (after a small one agreeing which parameters have a gradient on any process). For losses DDP cannot
  run: double backprop (ULE's alignment term differentiates input gradients with ``create_graph``).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from debiaslab.data.core import Batch
from debiaslab.engine.sampling import iterate_batches, num_batches
from debiaslab.engine.stage import LossOutput, Stage, StepContext
from debiaslab.errors import ConfigError
from debiaslab.utils import dist

GRAD_SYNCS = ("ddp", "allreduce")


def check_global_batch(stage: Stage) -> None:
    """The stage's batch must split evenly over the processes (``--batch-size`` is the global batch)."""
    world = dist.world_size()
    if stage.batch_size % world:
        raise ConfigError(
            f"batch size {stage.batch_size} (stage {stage.name!r}) does not divide over {world} processes: "
            f"--batch-size is the global batch, use a multiple of {world}"
        )


def local_batches(indices: Tensor, global_batch: int, drop_last: bool) -> Iterator[tuple[Tensor, int, float]]:
    """``(this process's indices, global batch size m, loss scale)`` for each global batch of ``indices``.

    A last global batch with fewer examples than processes is skipped on every process (so no process is idle).
    """
    world, rank = dist.world_size(), dist.rank()
    for idx in iterate_batches(indices, global_batch, drop_last):
        m = idx.numel()
        if world == 1:
            yield idx, m, 1.0
            continue
        if m < world:
            continue
        local = idx[rank::world]
        yield local, m, world * local.numel() / m


def steps_per_epoch(n: int, global_batch: int, drop_last: bool) -> int:
    """Optimiser steps of an epoch of ``n`` indices (the count :func:`local_batches` yields)."""
    steps = num_batches(n, global_batch, drop_last)
    tail = n % global_batch
    if not drop_last and 0 < tail < dist.world_size():
        steps -= 1
    return steps


class _StageLoss(nn.Module):
    """The stage's modules as a module whose forward is the stage's loss (what DDP wraps)."""

    def __init__(self, stage: Stage) -> None:
        super().__init__()
        self.inner = stage.modules
        self.loss_fn = stage.loss_fn
        self.ctx: StepContext | None = None

    def forward(self, batch: Batch) -> LossOutput:
        assert self.ctx is not None
        return self.loss_fn(batch, self.ctx)


class GradSync:
    """Computes a stage's loss and averages its gradients over the processes (nothing to do in one process)."""

    def __init__(self, stage: Stage, params: list[nn.Parameter]) -> None:
        if stage.grad_sync not in GRAD_SYNCS:
            raise ConfigError(f"grad_sync {stage.grad_sync!r} of stage {stage.name!r}; expected one of {GRAD_SYNCS}")
        self.stage = stage
        self.params = params
        self.mode = stage.grad_sync if dist.is_distributed() else "none"
        if self.mode == "ddp" and not any(p.requires_grad for p in stage.modules.parameters()):
            self.mode = "allreduce"  # DDP refuses a module with nothing to train
        self._ddp: Any = None
        if self.mode == "ddp":
            from torch.nn.parallel import DistributedDataParallel

            # device_ids=None: the module already sits on its one device and inputs are already there. Buffers
            # (per-example tables, BatchNorm statistics) are not re-broadcast each forward: methods keep their
            # tables identical on every process themselves (dist.gather_cat).
            self._ddp = DistributedDataParallel(
                _StageLoss(stage), device_ids=None, find_unused_parameters=True, **_no_buffer_broadcast()
            )

    def loss(self, batch: Batch, ctx: StepContext) -> LossOutput:
        if self._ddp is None:
            return self.stage.loss_fn(batch, ctx)
        self._ddp.module.ctx = ctx
        return self._ddp(batch)

    def backward(self, loss: Tensor, scale: float) -> None:
        """``(scale * loss).backward()``, then the gradients are the average over processes."""
        (loss * scale if scale != 1.0 else loss).backward()
        if self.mode == "allreduce":
            dist.average_gradients(self.params)


def _no_buffer_broadcast() -> dict[str, bool]:
    """The DDP argument that turns off the per-forward buffer broadcast (renamed in newer torch)."""
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    params = inspect.signature(DistributedDataParallel.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


def all_finite(loss: Tensor) -> bool:
    """Whether the loss is finite on every process (all stop together instead of one waiting forever)."""
    finite = torch.isfinite(loss.detach()).all()
    if not dist.is_distributed():
        return bool(finite)
    flag = finite.to(dist.collective_device(), torch.float32).reshape(1)
    torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MIN)
    return bool(flag.item() > 0)


def reduce_sums(sums: dict[str, Tensor]) -> dict[str, Tensor]:
    """Sum per-process weighted loss sums over the processes (one all-reduce per epoch)."""
    sums = dict(sums)
    dist.sum_values(sums)
    return sums
