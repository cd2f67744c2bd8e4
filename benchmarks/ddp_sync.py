"""Gradient synchronisation of a ResNet-18 training step on two gloo processes (CPU): one all-reduce per
parameter tensor against DistributedDataParallel's bucketed all-reduce overlapped with backward, and against
the coalesced all-reduce (one flat buffer) debiaslab uses for losses DDP cannot run.

Each process takes ``--batch`` images of ``--size`` x ``--size`` (one torch thread each). Per step we time
forward + backward + synchronisation; ``sync`` is that minus the step with no synchronisation at all (``local``)
of the same round, so it is what averaging the gradients adds. Modes run in turn, round after round (the machine
may be shared: medians over rounds are reported). Both processes check that they end with equal gradients.

Run: ``make bench-ddp`` (or ``python benchmarks/ddp_sync.py --rounds 5``); writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from typing import Any

import torch
import torch.distributed as tdist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from debiaslab.models import build_model
from debiaslab.utils import dist

MODES = ("local", "per_tensor", "coalesced", "ddp")


def per_tensor_average(model: torch.nn.Module) -> None:
    """What debiaslab did before: one all-reduce per parameter tensor after backward."""
    world = tdist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            tdist.all_reduce(p.grad)
            p.grad.div_(world)


def _step(model: torch.nn.Module, forward: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mode: str) -> None:
    for p in model.parameters():
        p.grad = None
    loss = F.cross_entropy(forward(x), y)
    loss.backward()
    if mode == "per_tensor":
        per_tensor_average(model)
    elif mode == "coalesced":
        dist.average_gradients(list(model.parameters()))


def _rank(rank: int, init_file: str, args: argparse.Namespace, out_file: str) -> None:
    torch.set_num_threads(1)
    tdist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = build_model("resnet18", (3, args.size, args.size), 10)
    ddp = DistributedDataParallel(model, device_ids=None)  # syncs the initial weights from rank 0
    g = torch.Generator().manual_seed(rank)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=g)
    y = torch.randint(0, 10, (args.batch,), generator=g)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    for mode in MODES:  # warm-up (allocations, DDP's first-iteration bucket rebuild)
        _step(model, ddp if mode == "ddp" else model, x, y, mode)
    for _ in range(args.rounds):
        for mode in MODES:
            forward = ddp if mode == "ddp" else model
            tdist.barrier()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                _step(model, forward, x, y, mode)
            tdist.barrier()
            times[mode].append((time.perf_counter() - t0) / args.steps)
    grads = {}
    for mode in ("per_tensor", "coalesced", "ddp"):
        _step(model, ddp if mode == "ddp" else model, x, y, mode)
        grads[mode] = torch.cat([p.grad.flatten() for p in model.parameters()])
    gathered = [torch.empty_like(grads["ddp"]) for _ in range(2)]
    tdist.all_gather(gathered, grads["ddp"])
    if rank == 0:
        doc = {
            "times": times,
            "n_tensors": sum(1 for _ in model.parameters()),
            "n_params": sum(p.numel() for p in model.parameters()),
            "ranks_agree": bool(torch.equal(gathered[0], gathered[1])),
            "max_diff_vs_per_tensor": {
                m: float((grads[m] - grads["per_tensor"]).abs().max()) for m in ("coalesced", "ddp")
            },
        }
        with open(out_file, "w") as fh:
            json.dump(doc, fh)
    tdist.destroy_process_group()


def summarise(raw: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    med = {m: statistics.median(v) for m, v in raw["times"].items()}
    # what synchronising adds, paired within each round (the rounds drift with the machine's load)
    local = raw["times"]["local"]
    sync = {m: statistics.median(t - t0 for t, t0 in zip(raw["times"][m], local)) for m in MODES if m != "local"}
    return {
        "benchmark": "gradient synchronisation of a ResNet-18 step, 2 gloo processes on CPU",
        "settings": {
            "batch_per_process": args.batch,
            "image_size": args.size,
            "steps": args.steps,
            "rounds": args.rounds,
            "threads_per_process": 1,
        },
        "model": {"tensors": raw["n_tensors"], "parameters": raw["n_params"]},
        "step_s_median": {m: round(v, 5) for m, v in med.items()},
        "step_s_all": {m: [round(t, 5) for t in v] for m, v in raw["times"].items()},
        "sync_s_median": {m: round(v, 5) for m, v in sync.items()},
        "per_tensor_over_ddp_sync": round(sync["per_tensor"] / sync["ddp"], 2) if sync["ddp"] > 0 else None,
        "per_tensor_over_coalesced_sync": round(sync["per_tensor"] / sync["coalesced"], 2)
        if sync["coalesced"] > 0
        else None,
        "per_tensor_over_ddp_step": round(med["per_tensor"] / med["ddp"], 3),
        "ranks_agree": raw["ranks_agree"],
        "max_grad_diff_vs_per_tensor": raw["max_diff_vs_per_tensor"],
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="steps per mode per round")
    parser.add_argument("--batch", type=int, default=8, help="images per process")
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument("--out", default="benchmarks/results-ddp-sync.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw_file = os.path.join(tmp, "raw.json")
        mp.spawn(_rank, args=(os.path.join(tmp, "init"), args, raw_file), nprocs=2, join=True)
        with open(raw_file) as fh:
            raw = json.load(fh)
    result = summarise(raw, args)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps({k: result[k] for k in ("step_s_median", "sync_s_median", "per_tensor_over_ddp_sync")}))
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
