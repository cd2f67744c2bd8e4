"""Engine overhead: ERM epoch time on Colored MNIST through debiaslab vs a bare PyTorch loop.

Both loops see the same in-memory uint8 tensors, the LfF MLP, Adam lr 1e-3, batch 256 and shuffled epochs.
The engine's numbers are reported twice: training steps only, and the full epoch (plus per-epoch validation,
selection bookkeeping and an atomic checkpoint).
Run: ``make bench-speed`` (or ``python benchmarks/engine_overhead.py``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F

from debiaslab.data import build_dataset
from debiaslab.engine.trainer import Trainer
from debiaslab.methods.erm import ERM
from debiaslab.models import build_model


def bare_loop_epoch_times(train, epochs: int, seed: int) -> list[float]:
    torch.manual_seed(seed)
    model = build_model("mlp", train.input_shape, train.n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_all, y_all = train.x, train.y
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        model.train()
        for idx in torch.randperm(len(train)).split(256):
            x = x_all[idx].float().div_(255)
            loss = F.cross_entropy(model(x), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    return times


def engine_epoch_times(bundle, epochs: int, seed: int, checkpoint: bool) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(device="cpu", seed=seed, run_dir=tmp if checkpoint else None, progress=False)
        method = ERM(dataset="colored_mnist", epochs=epochs)
        method.fit(bundle.train, bundle.val, trainer=trainer)
    history = method.fit_result_.history
    return [h["train_time_s"] for h in history], [h["time_s"] for h in history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="alternating bare/engine rounds (drift cancels)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = build_dataset("colored_mnist", ratio=args.ratio)
    bare_loop_epoch_times(bundle.train, 1, 0)  # warm-up
    bare, eng_train, eng_full = [], [], []
    for _ in range(args.rounds):
        bare += bare_loop_epoch_times(bundle.train, args.epochs, 0)
        t, f = engine_epoch_times(bundle, args.epochs, 0, checkpoint=True)
        eng_train += t
        eng_full += f
    bare_m, train_m, full_m = (statistics.median(t) for t in (bare, eng_train, eng_full))
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip() + f", {args.threads} threads",
        "torch": torch.__version__,
        "train_examples": len(bundle.train),
        "epochs_per_round": args.epochs,
        "rounds": args.rounds,
        "bare_loop_s_per_epoch": round(bare_m, 3),
        "engine_train_steps_s_per_epoch": round(train_m, 3),
        "engine_full_epoch_s": round(full_m, 3),
        "overhead_train_steps_pct": round(100 * (train_m / bare_m - 1), 1),
        "overhead_full_epoch_pct": round(100 * (full_m / bare_m - 1), 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)


if __name__ == "__main__":
    main()
