"""Method cost on Colored MNIST: training-step seconds per epoch of each method relative to ERM, and BAM's
auxiliary-table memory.

Every method trains the LfF MLP for a few epochs on the same in-memory data and threads; the time is the median
over epochs of the engine's ``train_time_s`` (training steps only, no validation). Methods with two stages report
the stage named in ``STAGES``. Run: ``make bench-cost`` (or ``python benchmarks/method_cost.py``). Time it on a
quiet machine: another job on the cores changes every number.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics

import torch

from debiaslab.data import build_dataset
from debiaslab.engine.trainer import Trainer
from debiaslab.methods import get_method
from debiaslab.methods.bam import aux_memory

#: (label, method, hyperparameters, stage whose epochs are timed)
STAGES: list[tuple[str, str, dict, str]] = [
    ("erm", "erm", {}, "erm"),
    ("ule reweight (default)", "ule", {}, "ule"),
    ("ule mask", "ule", {"omega": "mask"}, "ule"),
    ("ule perturb", "ule", {"omega": "perturb"}, "ule"),
    ("ule align (double backprop)", "ule", {"omega": "align", "omega_weight": 30.0}, "ule"),
    ("lff", "lff", {}, "lff"),
    ("bam amplify (aux table)", "bam", {"epochs": 1}, "amplify"),
    ("denetdm experts (batch 64)", "denetdm", {"epochs": 1}, "experts"),
]


def epoch_seconds(bundle, method: str, hparams: dict, stage: str, epochs: int) -> float:
    key = "amplify_epochs" if method == "bam" else "expert_epochs" if method == "denetdm" else "epochs"
    fitted = get_method(method)(dataset="colored_mnist", **{**hparams, key: epochs})
    fitted.fit(bundle.train, bundle.val, trainer=Trainer(device="cpu", seed=0, progress=False))
    times = [h["train_time_s"] for h in fitted.fit_result_.history if h["stage"] == stage]
    return statistics.median(times[1:] if len(times) > 1 else times)  # the first epoch warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results-method-cost.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = build_dataset("colored_mnist", ratio=args.ratio)
    rows = []
    for label, method, hparams, stage in STAGES:
        rows.append(
            {"method": label, "s_per_epoch": round(epoch_seconds(bundle, method, hparams, stage, args.epochs), 3)}
        )
    base = rows[0]["s_per_epoch"]
    for row in rows:
        row["x_erm"] = round(row["s_per_epoch"] / base, 2)
    bam = get_method("bam")(dataset="colored_mnist")
    memory = aux_memory(len(bundle.train), bundle.train.n_classes, bam.hparams.optim_config())
    result = {
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "ratio": args.ratio,
        "epochs": args.epochs,
        "rows": rows,
        "bam_aux_memory_bytes": memory,
        "n_train": len(bundle.train),
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
    width = max(len(r["method"]) for r in rows)
    for row in rows:
        print(f"{row['method']:<{width}}  {row['s_per_epoch']:7.2f} s/epoch  {row['x_erm']:5.2f}x ERM")
    print(f"BAM auxiliary table: {memory}")


if __name__ == "__main__":
    main()
