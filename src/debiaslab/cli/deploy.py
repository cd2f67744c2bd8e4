"""Command-line parts for using finished runs: ``predict``, ``export``, ``evaluate`` on another dataset or
split, and the experiment-tracking options of ``train``. :mod:`debiaslab.cli.main` adds them to its parser."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console

from debiaslab.cli.options import from_args

console = Console()


def add_tracking_args(train: argparse.ArgumentParser) -> None:
    train.add_argument(
        "--tensorboard", action="store_true", help="write TensorBoard event files under <run dir>/tensorboard"
    )
    train.add_argument(
        "--mlflow",
        nargs="?",
        const="",
        metavar="URI",
        help="log to an MLflow run (default store: sqlite:///<run dir>/mlflow.db)",
    )


def add_evaluate_args(evaluate: argparse.ArgumentParser) -> None:
    evaluate.add_argument("--dataset", help="score on this dataset instead of the run's own")
    evaluate.add_argument("--split", choices=["val", "test"], help="only this split (default: both)")
    evaluate.add_argument("--ratio", type=float, help="bias-conflicting ratio (Colored MNIST)")
    evaluate.add_argument("--data-opt", action="append", metavar="KEY=VALUE", help="a dataset option")
    evaluate.add_argument("--out", metavar="FILE", help="also save the result (metrics and group tables) as JSON")


def add_parsers(sub: Any, data_args: Any) -> None:
    predict = sub.add_parser("predict", help="predict classes and probabilities of new inputs with a finished run")
    predict.add_argument("run_dir")
    predict.add_argument("input", help="a folder of images, an .npz with array x, or a CSV of texts (column text)")
    predict.add_argument("--out", help="output CSV (default <run dir>/predictions.csv)")
    predict.add_argument("--device", default="auto")
    data_args(predict)

    export = sub.add_parser(
        "export", help="export a finished run's model to ONNX or TorchScript, checked by running it"
    )
    export.add_argument("run_dir")
    export.add_argument("--format", required=True, choices=["onnx", "torchscript"])
    export.add_argument("--out", help="output file (default <run dir>/model.onnx or model.torchscript.pt)")


def cmd_predict(args: argparse.Namespace) -> int:
    from debiaslab.deploy.predict import predict_run

    path, n = predict_run(
        args.run_dir, args.input, args.out, device=args.device, data_root=args.data_root, cache_dir=args.cache_dir
    )
    console.print(f"{n} predictions written to {path}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from debiaslab.deploy.export import export_run

    result = export_run(args.run_dir, args.format, args.out)
    console.print(
        f"{result.format} model written to {result.path}; checked against PyTorch on {result.batch} inputs: "
        f"max abs difference {result.max_abs_diff:.2g} (tolerance {result.atol:g} + {result.rtol:g} x |logit|)"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """``debiaslab evaluate RUN_DIR [--dataset NAME] [--split S] [--ratio R] [--data-opt K=V]``."""
    from debiaslab.deploy.crosseval import evaluate_on
    from debiaslab.run.train import parse_key_values

    options = parse_key_values(args.data_opt, "--data-opt")
    if args.ratio is not None:
        options["ratio"] = args.ratio
    passed = from_args(args, "dataset", "split", "data_root", "cache_dir", "device")
    reports, name, used = evaluate_on(args.run_dir, dataset_options=options, **passed)
    opts = ", ".join(f"{k}={v}" for k, v in sorted(used.items()))
    last = list(reports)[-1]
    console.print(reports[last].render_auto())
    for split, report in reports.items():
        console.print(f"{name}{f' ({opts})' if opts else ''} {split}: {report.summary_line()}")
    if args.out:
        from debiaslab.utils.io import atomic_write_json

        doc = {"run_dir": str(args.run_dir), "dataset": name, "dataset_options": used}
        path = atomic_write_json(args.out, {**doc, "splits": {s: r.to_dict() for s, r in reports.items()}})
        console.print(f"result written to {path}")
    return 0


COMMANDS = {"predict": cmd_predict, "export": cmd_export}
