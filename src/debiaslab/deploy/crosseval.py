"""Score a finished run on another dataset, other dataset options or one split: e.g. a Colored MNIST run trained
at 1 % bias-conflicting examples, evaluated on the splits built at 5 %.

Options start from the run's own when the dataset is the run's (``--ratio 0.05`` changes only the ratio) and from
the dataset's defaults otherwise. A dataset whose inputs or classes do not match the model's is a one-line error:
the scores would mean nothing. A dataset that prepares its inputs otherwise (another scaling or normalisation,
e.g. Biased MNIST's ``(x - 0.5) / 0.5`` for a Colored MNIST model trained on ``x`` in [0, 1]) is scored with a
warning that says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from debiaslab.data.input_spec import describe_inputs
from debiaslab.data.registry import build_dataset, list_datasets
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, DataError
from debiaslab.evaluation.metrics import EvalReport
from debiaslab.run.train import evaluate_splits, load_finished_run, load_run_config

log = logging.getLogger(__name__)

SPLITS = ("val", "test")


def _describe(steps: list[dict[str, Any]] | None) -> str:
    if steps is None:
        return "a transform without a description"
    return " then ".join(", ".join(f"{k}={v}" for k, v in step.items()) for step in steps) or "no transform"


def _fmt(shape: Any) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def evaluate_on(
    run_dir: str | os.PathLike[str],
    *,
    dataset: str | None = None,
    dataset_options: dict[str, Any] | None = None,
    split: str | None = None,
    data_root: str | None = None,
    cache_dir: str | None = None,
    device: str = "auto",
) -> tuple[dict[str, EvalReport], str, dict[str, Any]]:
    """Reports of the run's deployed model on ``dataset`` (default: the run's) with ``dataset_options`` layered
    on the run's options when it is the run's dataset, for ``split`` (default: validation and test).

    Returns the reports, the dataset name and the options used."""
    run_dir = Path(run_dir)
    model, spec = load_finished_run(run_dir)
    config = load_run_config(run_dir)
    run = config["run"]
    name = dataset or run["dataset"]
    options = dict(run["dataset_options"]) if name == run["dataset"] else {}
    options.update(dataset_options or {})
    if split is not None and split not in SPLITS:
        raise ConfigError(f"split {split!r}; expected one of: {', '.join(SPLITS)}")
    known = [s.name for s in list_datasets()]
    if dataset is None and name not in known:
        raise ConfigError(
            f"{run_dir} was trained on {name!r}, which is not a registered dataset (a run made from Python on "
            f"its own data); pass --dataset NAME with one of: {', '.join(known)}"
        )
    bundle = build_dataset(name, data_root, cache_dir, **options)
    data_shape = list(bundle.test.input_shape)
    if data_shape != list(spec["input_shape"]):
        raise DataError(
            f"dataset {name!r} has inputs of shape {_fmt(data_shape)} but the model of {run_dir} takes "
            f"{_fmt(spec['input_shape'])}; evaluate it on a dataset with the inputs it was trained on"
        )
    if bundle.test.n_classes != int(spec["n_classes"]):
        raise DataError(
            f"dataset {name!r} has {bundle.test.n_classes} classes but the model of {run_dir} predicts "
            f"{spec['n_classes']}; evaluate it on a dataset with the same classes"
        )
    recorded = config.get("input") or {}
    steps = describe_inputs(bundle.test, bundle.recipe).get("transform")
    if recorded.get("transform") is not None and steps != recorded["transform"]:
        log.warning(
            "dataset %r prepares its inputs differently from the data %s was trained on (%s, not %s): the model "
            "sees inputs scaled unlike in training",
            name,
            run_dir,
            _describe(steps),
            _describe(recorded["transform"]),
        )
    trainer = Trainer(device=device, progress=False)
    model.to(trainer.device)
    reports = evaluate_splits(model, bundle, trainer)
    if split is not None:
        if split not in reports:  # a dataset whose validation split is its test split
            raise ConfigError(f"dataset {name!r} has no separate {split!r} split (only: {', '.join(reports)})")
        reports = {split: reports[split]}
    return reports, name, options
