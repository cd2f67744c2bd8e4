"""Premise checks every method gets, and the pieces methods use to add their own (``Method.health``).

A run's checks read the fitted models and the training signals a method kept; a record's checks
(``Method.record_health``) read only a finished run's ``final.json``, for runs written before checks were
recorded. The check functions themselves are in :mod:`debiaslab.evaluation.health`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.stage import StageResult
from debiaslab.engine.trainer import Trainer, eval_mode
from debiaslab.evaluation.health import (
    Check,
    at_chance,
    chance_check,
    error_set_checks,
    gap_check,
    selected_epoch_check,
)
from debiaslab.evaluation.selection import get_rule


def predictions(trainer: Trainer, model: nn.Module, dataset: GroupDataset) -> Tensor:
    """Predicted class of every example of ``dataset`` (clean pass, eval mode), on the CPU."""
    with eval_mode(model), torch.no_grad():
        return trainer.predict(model, dataset).argmax(dim=1)


def conflicting_mask(dataset: GroupDataset) -> Tensor | None:
    """Which examples are bias-conflicting (None without attributes or aligned groups): for labelled checks only."""
    return ~dataset.is_aligned if dataset.has_attrs and dataset.aligned_groups else None


def majority_share(dataset: GroupDataset) -> float:
    return float(dataset.class_counts.max()) / max(len(dataset), 1)


def accuracy_and_loss(model: nn.Module, dataset: GroupDataset, trainer: Trainer) -> tuple[float, float]:
    """Plain accuracy and mean cross-entropy of ``model`` (no per-group report: the run's evaluation already
    warned about its groups)."""
    with eval_mode(model):
        logits = trainer.predict(model, dataset)
    if not len(dataset):
        return float("nan"), float("nan")
    accuracy = float((logits.argmax(dim=1) == dataset.y).float().mean())
    return accuracy, float(F.cross_entropy(logits, dataset.y))


def common_checks(
    stages: Sequence[StageResult], model: nn.Module, train: GroupDataset, val: GroupDataset | None, trainer: Trainer
) -> list[Check]:
    """Every method's checks: the deployed ``model`` left chance on the training set (the training loss per epoch
    of the last of ``stages`` beside), the training/validation accuracy gap, and the epochs the selecting stages
    kept."""
    train_acc, train_loss = accuracy_and_loss(model, train, trainer)
    last = stages[-1] if stages else None
    losses = [float(h["train_loss"]) for h in last.history if "train_loss" in h] if last is not None else []
    checks = [chance_check(train_acc, train_loss, train.n_classes, majority_share(train), losses)]
    if val is not None:
        checks.append(gap_check(train_acc, accuracy_and_loss(model, val, trainer)[0]))
    kept = [
        {
            "name": s.name,
            "selected_epoch": s.selected_epoch,
            "epochs": len(s.history),
            "selection": s.selection,
            "scores": stage_scores(s),
        }
        for s in stages
    ]
    checks.append(selected_epoch_check(kept))
    return checks


def stage_scores(stage: StageResult) -> list[float] | None:
    """The selection rule's score at every epoch of ``stage``, read from the validation metrics its history holds
    (the deployed read-out's, or the one the stage scored: the one that gives the kept score); None if unknown."""
    if stage.selection == "last" or stage.score is None or not stage.history or not stage.selected_epoch >= 1:
        return None
    rule = get_rule(stage.selection)
    first = stage.history[0]
    for key in ["val", *sorted(k for k in first if k.startswith("val_") and isinstance(first[k], dict))]:
        if not all(isinstance(h.get(key), dict) and rule.metric in h[key] for h in stage.history):
            continue
        scores = [float(rule.score(h[key])) for h in stage.history]
        if math.isclose(scores[stage.selected_epoch - 1], float(stage.score), rel_tol=1e-9, abs_tol=1e-12):
            return scores
    return None


def record_split(final: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The split a record's checks read (validation; test for a run without one) and its metrics there."""
    metrics = final.get("metrics") or {}
    split = "val" if metrics.get("val") else "test"
    return split, metrics.get(split) or {}


def record_n_classes(final: dict[str, Any]) -> int:
    return int((final.get("test_report") or {}).get("n_classes") or 0)


def dead_on_record(metrics: dict[str, Any], n_classes: int) -> bool:
    """Whether recorded metrics show a model that learned nothing (accuracy near 1/K, outputs near uniform)."""
    acc, loss = metrics.get("accuracy"), metrics.get("loss")
    return n_classes > 1 and acc is not None and at_chance(acc, loss, n_classes)


def describe_metrics(split: str, metrics: dict[str, Any]) -> str:
    loss = metrics.get("loss")
    text = f"{split} accuracy {100 * metrics['accuracy']:.1f} %"
    return text + (f", loss {loss:.3f}" if isinstance(loss, int | float) and math.isfinite(loss) else "")


def common_record_checks(final: dict[str, Any]) -> list[Check]:
    """From a ``final.json``: the epochs the selecting stages kept, and whether the deployed model is at chance
    on validation (accuracy near 1/K with near-uniform outputs)."""
    checks = [dataclasses.replace(selected_epoch_check(final.get("stages") or []), source="record")]
    n_classes = record_n_classes(final)
    split, metrics = record_split(final)
    if n_classes > 1 and metrics.get("accuracy") is not None:
        dead = dead_on_record(metrics, n_classes)
        text = describe_metrics(split, metrics)
        checks.append(
            Check(
                "left_chance",
                "fail" if dead else "ok",
                {"split": split, "accuracy": metrics["accuracy"], "loss": metrics.get("loss")},
                f"the deployed model is at chance ({text}; log K = {math.log(n_classes):.3f})" if dead else text,
                source="record",
            )
        )
    return checks


def error_set_health(
    errors: Tensor | None, train: GroupDataset, what: str = "error set", labelled: bool = True
) -> list[Check]:
    """:func:`~debiaslab.evaluation.health.error_set_checks` of the error set a method kept (none: no checks);
    ``labelled`` adds its precision / recall for the bias-conflicting examples when the data has attributes."""
    if errors is None:
        return []
    return error_set_checks(errors, train.y, train.n_classes, conflicting_mask(train) if labelled else None, what)
