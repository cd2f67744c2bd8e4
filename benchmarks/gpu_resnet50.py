"""Throughput on one machine with a GPU: a ResNet-50 training step at 224 x 224 (fp32 against bf16 autocast with
channels_last), and the folder-of-JPEG data pipeline's decoding rate on the CPU cores.

1. Training step: SGD on random images (batch ``--batch``), after warm-up steps; images/s = batch / median step
   time over ``--steps`` steps, for ``fp32`` and for ``bf16+channels_last``. Peak GPU memory per setting.
2. JPEG pipeline: ``--jpegs`` random JPEGs of ``--jpeg-side`` pixels are written to a temporary folder and read back
   through :class:`debiaslab.data.images.ImageFiles` (the loader of ``folder``, Waterbirds and CelebA), resized to
   ``--size`` with ``--workers`` decoding threads; images/s over whole passes in batches of ``--batch``.

With no GPU it runs on the CPU (``--device cpu``), which is only useful with tiny settings to check the script, e.g.
``python benchmarks/gpu_resnet50.py --device cpu --size 32 --batch 2 --steps 2 --warmup 1 --jpegs 16``.
Writes ``--out`` (JSON) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from debiaslab.data.images import DecodeSpec, ImageFiles
from debiaslab.models import build_model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_step_rate(device: torch.device, setting: str, args: argparse.Namespace) -> dict[str, Any]:
    """Images/s of ResNet-50 training steps in ``setting`` (``fp32`` or ``bf16+channels_last``)."""
    torch.manual_seed(0)
    model = build_model("resnet50", (3, args.size, args.size), 1000).to(device)
    channels_last = setting != "fp32"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(args.batch, 3, args.size, args.size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(args.warmup + args.steps):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=setting != "fp32"):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    out: dict[str, Any] = {"step_s_median": round(step, 5), "images_per_s": round(args.batch / step, 1)}
    if device.type == "cuda":
        out["peak_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def jpeg_rate(args: argparse.Namespace) -> dict[str, Any]:
    """Images/s of decoding + resizing a folder of JPEGs with the library's image loader."""
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.jpegs):
            pixels = rng.integers(0, 256, (args.jpeg_side, args.jpeg_side, 3), dtype=np.uint8)
            path = Path(tmp) / f"{i:05d}.jpg"
            Image.fromarray(pixels).save(path, quality=90)
            paths.append(path)
        files = ImageFiles(paths, DecodeSpec(size=(args.size, args.size)), workers=args.workers)
        files.load(np.arange(min(args.batch, len(files))))  # warm-up: thread pool, first decode
        rates = []
        for _ in range(args.passes):
            t0 = time.perf_counter()
            for start in range(0, len(files), args.batch):
                files.load(np.arange(start, min(start + args.batch, len(files))))
            rates.append(len(files) / (time.perf_counter() - t0))
    return {"images_per_s_median": round(statistics.median(rates), 1), "workers": args.workers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--jpegs", type=int, default=2000, help="JPEG files for the pipeline measurement")
    parser.add_argument("--jpeg-side", type=int, default=320, help="side of the JPEG files written")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decoding threads")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--out", default="benchmarks/results-gpu-resnet50.json")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        machine = f"{torch.cuda.get_device_name(device)}, {os.cpu_count()} CPU cores, torch {torch.__version__}"
    else:
        machine = f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}"
    result = {
        "machine": machine,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "resnet50_train_step": {s: train_step_rate(device, s, args) for s in ("fp32", "bf16+channels_last")},
        "jpeg_pipeline": jpeg_rate(args),
    }
    steps = result["resnet50_train_step"]
    result["bf16_channels_last_speedup"] = round(
        steps["bf16+channels_last"]["images_per_s"] / steps["fp32"]["images_per_s"], 2
    )
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
