"""One trial of a search: an ordinary training run on the training split, scored on validation only.

The dataset bundle of a trial has no test split (``test`` is None), so nothing in a trial can evaluate it; the
trial's ``final.json`` holds validation metrics and the score of every selection rule, never a test number.
Per-epoch validation scores go to the pruner through the Trainer's ``epoch_hook``; a pruned trial stops after
the epoch that was judged, its history kept in ``metrics.jsonl``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from debiaslab import __version__
from debiaslab.data.core import DatasetBundle
from debiaslab.data.registry import build_dataset
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.evaluation.metrics import EvalReport
from debiaslab.evaluation.selection import get_rule
from debiaslab.inference.apply import with_inferred_groups
from debiaslab.inference.groups_file import GroupsFile
from debiaslab.inference.in_runs import check_reads_groups, label_ledger
from debiaslab.methods.registry import get_method
from debiaslab.run.directory import claimed_run_dir, plan_run_dir, recover_run_dir, run_dir_lock
from debiaslab.run.train import (
    FINAL,
    RunConfig,
    _plain,
    check_resumable,
    groups_of,
    groups_record,
    run_record,
    with_dataset_model,
)
from debiaslab.utils.io import atomic_write_json, atomic_write_yaml, finite_or_none

log = logging.getLogger(__name__)

RULES = ("val_worst_group", "val_unbiased", "val_worst_class", "val_classdiff", "val_accuracy")


def search_bundle(cfg: RunConfig) -> DatasetBundle:
    """The dataset of ``cfg`` without its test split (a search must select on a validation split of its own).
    Kept in memory for the next trial of the same process (trials never modify their splits)."""
    key = json.dumps([cfg.dataset, cfg.dataset_options, cfg.data_root, cfg.cache_dir], sort_keys=True, default=str)
    if key not in _BUNDLES:
        _BUNDLES.clear()
        _BUNDLES[key] = _without_test(cfg)
    return _BUNDLES[key]


_BUNDLES: dict[str, DatasetBundle] = {}


def _without_test(cfg: RunConfig) -> DatasetBundle:
    bundle = build_dataset(cfg.dataset, cfg.data_root, cfg.cache_dir, **cfg.dataset_options)
    if bundle.selection != "val":
        raise ConfigError(
            f"dataset {cfg.dataset} with options {cfg.dataset_options} selects on {bundle.selection}; a search "
            "selects on validation only (drop protocol=paper)"
        )
    if bundle.val is bundle.test:
        raise ConfigError(f"dataset {cfg.dataset} has no validation split apart from test; a search needs one")
    return dataclasses.replace(bundle, test=None)  # type: ignore[arg-type]


class PruningHook:
    """The Trainer's ``epoch_hook`` for a trial: reports the rule's validation score of every selecting epoch
    (steps 1, 2, ... across the run's selecting stages) and raises ``optuna.TrialPruned`` when the pruner says so."""

    def __init__(self, trial: Any, rule: str) -> None:
        self.trial, self.rule, self.step = trial, get_rule(rule), 0

    def __call__(self, stage: str, epoch: int, metrics: dict[str, Any]) -> None:
        import optuna

        self.step += 1
        score = self.rule.score(metrics) if metrics else math.nan
        if math.isfinite(score):
            self.trial.report(score, self.step)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} of stage {stage} (step {self.step})")


def train_trial(cfg: RunConfig, epoch_hook: Any = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train ``cfg`` in its run directory on train, selecting on validation, and write ``final.json`` with the
    validation metrics and ``scores`` (every applicable rule's validation score); the test split is never built
    into the trial. Checkpoints are removed when the trial ends (finished or pruned): trials are not resumed.
    With ``cfg.groups`` the trial trains and is scored on that file's inferred train and val groups."""
    started = time.perf_counter()
    method = get_method(cfg.method)(dataset=cfg.dataset, **cfg.hparams)
    bundle = search_bundle(cfg)
    method = with_dataset_model(method, cfg, bundle)
    groups = groups_of(cfg, bundle)
    if groups is not None:
        bundle = with_inferred_groups(bundle, groups)
        check_reads_groups(method, bundle.val, groups)
    train, val = bundle.train, bundle.val
    method.check_labels(train, val)
    run_dir = cfg.run_dir()
    with run_dir_lock(run_dir):  # one writer per trial folder
        recover_run_dir(run_dir)
        return _train_trial_in(run_dir, cfg, method, bundle, epoch_hook, extra, started, groups)


def _train_trial_in(
    run_dir: Path,
    cfg: RunConfig,
    method: Any,
    bundle: DatasetBundle,
    epoch_hook: Any,
    extra: dict[str, Any] | None,
    started: float,
    groups: GroupsFile | None = None,
) -> dict[str, Any]:
    train, val = bundle.train, bundle.val
    labels = label_ledger(method, train, val)
    inferred = {"groups": groups_record(groups)} if groups is not None else {}
    action = plan_run_dir(run_dir, overwrite=cfg.overwrite, resume=cfg.resume)
    if action == "resume":
        check_resumable(run_dir, cfg)
    with claimed_run_dir(run_dir, action):
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_yaml(
            run_dir / "config.yaml",
            {
                "run": _plain(cfg.identity()),
                "trial": extra or {},
                "dataset_recipe": _plain(bundle.recipe),
                "resolved_hparams": _plain(dataclasses.asdict(method.hparams)),
                "hparam_sources": method.hparam_sources,
                "labels": labels,
                **inferred,
                "debiaslab_version": __version__,
                "torch_version": str(torch.__version__),
            },
        )
        trainer = Trainer(
            device=cfg.device,
            precision=cfg.precision,
            seed=cfg.seed,
            run_dir=run_dir,
            progress=False,
            num_threads=cfg.num_threads,
            epoch_hook=epoch_hook,
            config_hash=cfg.checkpoint_hash(),
        )
        try:
            method.fit(train, val, trainer=trainer)
        finally:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        result = method.fit_result_
        assert result is not None and method.model_ is not None
        counts = train.group_counts if train.has_attrs else None
        val_report = trainer.evaluate(method.model_, val, method.model_, train_group_counts=counts)
        final = {
            **run_record(cfg),
            "selection": result.selection,
            "selected": _plain(result.selected),
            "metrics": {"val": val_report.metrics},
            "scores": rule_scores(result, val_report, val.has_attrs),
            "labels": labels,
            **inferred,
            "train_time_s": round(sum(s.wall_time_s for s in result.stages), 2),
            "total_time_s": round(time.perf_counter() - started, 2),
            "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_json(run_dir / FINAL, finite_or_none(final))
    return final


def rule_scores(result: Any, val_report: EvalReport, has_attrs: bool) -> dict[str, float | None]:
    """Each applicable rule's validation score of this training: the best of the final stage's epochs under that
    rule (the epoch it would deploy), or the deployed model's validation score for a method whose final model is
    not an epoch of a validated stage (DFR's re-fitted head). Rules needing group labels are left out when
    validation has none."""
    final = result.stages[-1] if result.stages else None
    records = [h["val"] for h in (final.history if final is not None else []) if isinstance(h.get("val"), dict)]
    scores: dict[str, float | None] = {}
    for name in RULES:
        rule = get_rule(name)
        if rule.needs_groups and not has_attrs:
            continue
        best: float | None = None
        for metrics in records or [val_report.metrics]:
            score = rule.score(metrics)
            if rule.is_better(score, best):
                best = score
        scores[name] = best if best is not None and math.isfinite(best) else None
    return scores


def trial_dir(out: str | Path, number: int) -> Path:
    return Path(out) / "trials" / f"trial{number:04d}"
