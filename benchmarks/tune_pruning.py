"""Wall time of a hyperparameter search with and without pruning, and the share of trials pruned.

The same search (method, dataset, space, budget, random sampler with the same seed, so every pruner setting sees
the same configurations in the same order) is run once per pruner in a fresh search directory; the JSON result
gives each one's wall time, its trial counts, its best validation score and its time relative to the unpruned
search. The target: with pruning, well under half the unpruned time.

    python benchmarks/tune_pruning.py --trials 20 --epochs 8 --threads 1 --out benchmarks/results-tune-pruning.json

Settings measured by separate invocations (e.g. one per pruner, to use more cores) are combined with
``--merge A.json B.json ... --out ALL.json`` (the same search settings are required).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from debiaslab.methods.registry import get_method
from debiaslab.tune.search import run_search
from debiaslab.tune.study import SearchSpec
from debiaslab.utils.io import atomic_write_json


def measure(args: argparse.Namespace, pruner: str, root: Path) -> dict:
    spec = SearchSpec(
        method=args.method,
        dataset=args.dataset,
        dataset_options={"ratio": args.ratio},
        space=dict(get_method(args.method).search_space),
        rule=args.rule,
        trials=args.trials,
        epochs=args.epochs,
        sampler=args.sampler,
        pruner=pruner,
        seed=args.seed,
        out=str(root / pruner),
        threads=args.threads,
        device="cpu",
    )
    started = time.perf_counter()
    result = run_search(spec, workers=1)
    wall = time.perf_counter() - started
    epochs = sum((r["last_step"] or 0) for r in result.trials)
    best = result.best.get(args.rule)
    return {
        "pruner": pruner,
        "wall_s": round(wall, 1),
        "trials": result.counts,
        "pruned_share": round(result.counts["pruned"] / max(result.counts["done"], 1), 3),
        "validated_epochs": epochs,
        "best_score": None if best is None else round(best["score"], 4),
        "best_trial": None if best is None else best["trial"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", default="erm")
    parser.add_argument("--dataset", default="colored_mnist")
    parser.add_argument("--ratio", type=float, default=0.01)
    parser.add_argument("--rule", default="val_unbiased")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=8, help="epoch cap of every trial")
    parser.add_argument("--sampler", default="random", choices=["random", "tpe"])
    parser.add_argument("--pruners", nargs="+", default=["none", "median", "hyperband"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results-tune-pruning.json")
    parser.add_argument("--merge", nargs="+", metavar="JSON", help="combine earlier results files; run nothing")
    args = parser.parse_args()
    if args.merge:
        merge(args.merge, Path(args.out))
        return
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    results = []
    with tempfile.TemporaryDirectory(prefix="tune-pruning-") as tmp:
        for pruner in args.pruners:
            results.append(measure(args, pruner, Path(tmp)))
            print(json.dumps(results[-1]))
    doc = {
        "command": "python benchmarks/tune_pruning.py "
        + " ".join(
            f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
            for k, v in vars(args).items()
            if k not in ("out", "merge")
        ),
        "setup": {k: v for k, v in vars(args).items() if k not in ("out", "merge")},
        "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"{args.threads} thread(s) per search",
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "results": with_ratios(results),
    }
    atomic_write_json(Path(args.out), doc)
    show(doc)


def with_ratios(results: list[dict]) -> list[dict]:
    """Each result with its wall time and trained epochs relative to the unpruned search (when measured)."""
    base = next((r for r in results if r["pruner"] == "none"), None)
    for r in results:
        r["time_vs_unpruned"] = round(r["wall_s"] / base["wall_s"], 3) if base else None
        r["epochs_vs_unpruned"] = round(r["validated_epochs"] / base["validated_epochs"], 3) if base else None
    return results


def merge(paths: list[str], out: Path) -> None:
    docs = [json.loads(Path(p).read_text()) for p in paths]
    setups = [{k: v for k, v in d["setup"].items() if k != "pruners"} for d in docs]
    if any(s != setups[0] for s in setups):
        raise SystemExit(f"cannot merge: the search settings differ ({setups})")
    results = with_ratios([r for d in docs for r in d["results"]])
    doc = {
        "commands": [d.get("command") for d in docs],
        "setup": setups[0],
        "machine": docs[0]["machine"],
        "note": "settings measured by separate invocations (" + ", ".join(paths) + ")",
        "results": results,
    }
    atomic_write_json(out, doc)
    show(doc)


def show(doc: dict) -> None:
    for r in doc["results"]:
        print(
            f"{r['pruner']:>9}: {r['wall_s']:7.1f} s ({r['time_vs_unpruned']}x unpruned), {r['validated_epochs']} "
            f"epochs ({r['epochs_vs_unpruned']}x), {r['trials']['pruned']}/{r['trials']['done']} pruned, "
            f"best {doc['setup']['rule']} {r['best_score']}"
        )


if __name__ == "__main__":
    main()
