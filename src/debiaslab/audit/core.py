"""One audit: read a finished run (or only a dataset), get the biased reference, compute what the page shows, and
write ``audit.md``, ``audit.json`` and the figures into the output folder.

What is computed: examples per class and group (true attributes, else the reference's right / wrong split);
the reference's per-example training loss and, per class, the images it finds hardest and easiest; the
input-gradient saliency of the reference and of the run (:mod:`debiaslab.audit.panels`); the per-group
validation accuracy of both; the run's health checks.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from debiaslab.audit import figures, page, panels
from debiaslab.audit.panels import Evidence, draw_figures
from debiaslab.audit.reference import (
    DEFAULT_INFERRER,
    Reference,
    audit_groups,
    biased_reference,
    check_input_shape,
    logits_of,
    per_example_loss,
)
from debiaslab.data.core import GroupDataset
from debiaslab.data.registry import build_dataset, check_options
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.evaluation.group_inference import inference_quality
from debiaslab.evaluation.metrics import evaluate_predictions
from debiaslab.inference.apply import check_groups_for
from debiaslab.inference.groups_file import GroupsFile, read_groups
from debiaslab.run.directory import FINAL
from debiaslab.run.train import load_finished_run, load_run_config
from debiaslab.utils.io import atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

PAGE, FACTS = "audit.md", "audit.json"


@dataclass
class AuditConfig:
    """What ``debiaslab audit`` was asked for: a run directory, or a dataset with its options."""

    run_dir: str | None = None
    dataset: str | None = None
    dataset_options: dict[str, Any] = field(default_factory=dict)
    out: str | None = None
    groups: str | None = None  # a groups file (``debiaslab infer-groups``) whose groups are shown
    inferrer: str = DEFAULT_INFERRER  # the group inferrer that gives the reference and its pseudo-groups
    reference_run: str | None = None
    reference_hparams: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    device: str = "auto"
    num_threads: int | None = None
    data_root: str | None = None
    cache_dir: str | None = None
    examples: int = 6  # hardest and easiest training images per class
    saliency_examples: int = 2  # of those, the hardest and easiest per class whose gradients are drawn
    saliency_per_class: int = 64  # validation examples per class in the mean saliency maps

    def out_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        if self.run_dir:
            return Path(self.run_dir) / "audit"
        opts = "-".join(f"{k}{v}" for k, v in sorted(self.dataset_options.items()))
        return Path("runs") / "audit" / f"{self.dataset}{'-' + opts if opts else ''}"


@dataclass
class AuditResult:
    out: Path
    page: Path
    figures: dict[str, Path]
    facts: dict[str, Any]


@dataclass
class Subject:
    """What is audited: a dataset and, for a run, its deployed model, ``final.json``, ``config.yaml`` and model
    spec (``model`` None: a dataset alone)."""

    dataset: str
    options: dict[str, Any]
    model: nn.Module | None = None
    final: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)


def load_subject(cfg: AuditConfig) -> Subject:
    if (cfg.run_dir is None) == (cfg.dataset is None):
        raise ConfigError("audit needs a finished run directory or --dataset NAME (not both)")
    if cfg.run_dir is None:
        assert cfg.dataset is not None
        return Subject(cfg.dataset, check_options(cfg.dataset, cfg.dataset_options))
    model, spec = load_finished_run(cfg.run_dir)
    config = load_run_config(cfg.run_dir)
    final = json.loads((Path(cfg.run_dir) / FINAL).read_text())
    run = config["run"]
    options = check_options(run["dataset"], dict(run.get("dataset_options") or {}))
    return Subject(run["dataset"], options, model, final, config, spec)


def run_audit(cfg: AuditConfig) -> AuditResult:
    """Write the audit of ``cfg`` (see the module docstring); returns where it went and what it found."""
    started = time.perf_counter()
    figures.require_matplotlib()  # before any data is built or model trained
    subject = load_subject(cfg)
    seed = cfg.seed if cfg.seed is not None else int(subject.config.get("run", {}).get("seed", 0))
    groups_file = read_groups(cfg.groups) if cfg.groups is not None else None
    bundle = build_dataset(subject.dataset, cfg.data_root, cfg.cache_dir, **subject.options)
    if groups_file is not None:
        check_groups_for(groups_file, subject.dataset, subject.options, bundle)
    train, val = bundle.train, bundle.val
    if subject.model is not None:
        check_input_shape(subject.spec, train, f"run {cfg.run_dir}")
    trainer = Trainer(device=cfg.device, seed=seed, progress=False, num_threads=cfg.num_threads)
    reference = biased_reference(
        train,
        val,
        trainer,
        dataset=subject.dataset,
        inferrer=cfg.inferrer,
        reference_run=cfg.reference_run,
        hparams={**reference_architecture(subject), **cfg.reference_hparams},
    )
    models: dict[str, nn.Module] = {"reference": reference.model}
    if subject.model is not None:
        models["run"] = subject.model.to(trainer.device)
    split = "validation" if bundle.val is not bundle.test else "test"
    ev = gather_evidence(train, val, split, models, reference, groups_file, trainer, cfg.examples, seed)
    facts = audit_facts(cfg, subject, bundle.protocol, reference, groups_file, ev)
    out = cfg.out_dir()
    drawn = draw_figures(out, ev, saliency_examples=cfg.saliency_examples, per_class=cfg.saliency_per_class)
    facts["figures"] = {k: p.name for k, p in drawn.items()}
    facts["classes_drawn"] = min(train.n_classes, panels.MAX_CLASSES)
    facts["time_s"] = round(time.perf_counter() - started, 1)
    atomic_write_json(out / FACTS, _jsonable(facts))
    page_path = atomic_write_text(out / PAGE, page.audit_markdown(facts))
    log.info("audit written to %s in %.1f s", page_path, facts["time_s"])
    return AuditResult(out, page_path, drawn, facts)


def gather_evidence(
    train: GroupDataset,
    val: GroupDataset,
    split: str,
    models: dict[str, nn.Module],
    reference: Reference,
    groups_file: GroupsFile | None,
    trainer: Trainer,
    k: int,
    seed: int,
) -> Evidence:
    """The reference's training losses and ranking, the groups, and each model's per-group report on ``val``."""
    ref_train = logits_of(models["reference"], train, trainer)
    val_logits = {name: logits_of(model, val, trainer) for name, model in models.items()}
    wrong = ref_train.argmax(dim=1) != train.y
    grouping = audit_groups(train, val, reference.groups, groups_file)
    train_counts = grouping.counts(train, "train")
    reports = {
        name: evaluate_predictions(
            logits,
            val.y,
            grouping.val,
            n_classes=val.n_classes,
            n_attrs=grouping.n,
            aligned_groups=grouping.aligned,
            train_group_counts=train_counts.flatten(),
        )
        for name, logits in val_logits.items()
    }
    loss = per_example_loss(ref_train, train)
    hardest, easiest = ranked_per_class(loss, train.y, train.n_classes, k)
    return Evidence(
        train=train,
        val=val,
        split=split,
        models=models,
        trainer=trainer,
        grouping=grouping,
        counts={"train": train_counts, split: grouping.counts(val, "val")},
        reports=reports,
        loss=loss,
        wrong=wrong,
        minority=~grouping.is_majority(train.y, grouping.train),
        hardest=hardest,
        easiest=easiest,
        seed=seed,
    )


def audit_facts(
    cfg: AuditConfig,
    subject: Subject,
    protocol: str,
    reference: Reference,
    groups_file: GroupsFile | None,
    ev: Evidence,
) -> dict[str, Any]:
    """Everything the page states, as plain data (written to ``audit.json``)."""
    inferred = {f"reference ({reference.groups.inferrer})": reference.groups.splits["train"]}
    n_pseudo = {f"reference ({reference.groups.inferrer})": reference.groups.n_per_class}
    if groups_file is not None:
        inferred[ev.grouping.label] = groups_file.splits["train"]
        n_pseudo[ev.grouping.label] = groups_file.n_per_class
    return {
        "subject": describe_subject(cfg, subject, protocol),
        "reference": {"source": reference.source, "settings": reference.settings},
        "seed": ev.seed,
        "val_split": ev.split,
        "groups": {
            "source": ev.grouping.source,
            "label": ev.grouping.label,
            "names": ev.grouping.names,
            "counts": {split: table.tolist() for split, table in ev.counts.items()},
            "minority_train": int(ev.minority.sum()),
        },
        "reference_errors": {"n_wrong": int(ev.wrong.sum()), "n": len(ev.train)},
        "inference_quality": {
            label: train_quality(ev.train, split.pseudo, split.minority, n_pseudo[label])
            for label, split in inferred.items()
            if ev.train.has_attrs and ev.train.aligned_groups
        },
        "examples": {
            "hardest": [h.tolist() for h in ev.hardest],
            "easiest": [e.tolist() for e in ev.easiest],
            "hardest_loss": [ev.loss[h].tolist() for h in ev.hardest],
            "easiest_loss": [ev.loss[e].tolist() for e in ev.easiest],
        },
        "val": {name: {"metrics": r.metrics, "group_accuracy": r.accuracy_matrix()} for name, r in ev.reports.items()},
        "health": subject.final.get("health") if subject.model is not None else None,
    }


def train_quality(train: GroupDataset, pseudo: Tensor, minority: Tensor, n_pseudo: int) -> dict[str, Any]:
    """How well inferred groups of the training split match its attributes (read after inference): precision,
    recall and F1 of the inferred minority against the bias-conflicting examples, ARI and NMI."""
    scores = inference_quality(train.y, pseudo, minority, train.n_classes, n_pseudo, train.group, ~train.is_aligned)
    return {k: v for k, v in scores.items() if k != "counts"}


def reference_architecture(subject: Subject) -> dict[str, Any]:
    """The audited run's model and its options, so that the reference and the run are compared on one
    architecture (nothing for a dataset alone: JTT's preset for it)."""
    resolved = subject.config.get("resolved_hparams") or {}
    if subject.model is None or "model" not in resolved:
        return {}
    return {"model": resolved["model"], "model_kwargs": dict(resolved.get("model_kwargs") or {})}


def describe_subject(cfg: AuditConfig, subject: Subject, protocol: str) -> dict[str, Any]:
    out: dict[str, Any] = {"dataset": subject.dataset, "dataset_options": subject.options, "protocol": protocol}
    if subject.model is not None:
        final = subject.final
        out.update(
            run=str(cfg.run_dir),
            method=final.get("method"),
            seed=final.get("seed"),
            selection=final.get("selection"),
            selected=final.get("selected"),
            model=subject.spec.get("name"),
            epochs=[s.get("epochs") for s in final.get("stages", [])],
        )
    return out


def ranked_per_class(loss: Tensor, y: Tensor, n_classes: int, k: int) -> tuple[list[Tensor], list[Tensor]]:
    """Per class, the indices of the ``k`` highest-loss examples (hardest first) and of the ``k`` lowest
    (easiest first); ties go to the lower index."""
    hardest, easiest = [], []
    for c in range(n_classes):
        rows = torch.nonzero(y == c).flatten()
        hardest.append(rows[torch.sort(-loss[rows], stable=True).indices[:k]])
        easiest.append(rows[torch.sort(loss[rows], stable=True).indices[:k]])
    return hardest, easiest


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
