"""What ``debiaslab methods`` shows: per method the labels it needs (training, and validation through its
selection rule) and, per dataset preset, every hyperparameter value with its source."""

from __future__ import annotations

import dataclasses
from typing import Any

from debiaslab.evaluation.selection import get_rule
from debiaslab.methods.base import Method
from debiaslab.methods.presets import DATASET_PRESETS

#: the column of hyperparameters resolved with no dataset
GENERIC = "(no dataset)"
#: the source of a value that no table row sets
DATACLASS_DEFAULT = "default"


def preset_datasets(method: type[Method]) -> list[str]:
    """Datasets with a training preset or a row in the method's own table, in a stable order."""
    rows = [d for d in method.hparam_table if d != "*"]
    return list(dict.fromkeys([*DATASET_PRESETS, *rows]))


def resolved(method: type[Method], dataset: str | None) -> dict[str, dict[str, Any]]:
    """``{hparam: {"value": v, "source": s}}`` for ``method`` on ``dataset`` (None: no dataset preset)."""
    instance = method(dataset=dataset)
    values = dataclasses.asdict(instance.hparams)
    return {name: {"value": values[name], "source": instance.hparam_sources[name]} for name in values}


def selection_needs(method: type[Method], dataset: str | None) -> str:
    """Which labels the epoch selection uses by default on ``dataset``, in words."""
    if method.requires.val_attrs:
        return "validation attributes (the method trains on them)"
    rule = method(dataset=dataset).hparams.selection
    if rule == "auto":
        return "auto: validation attributes when present (val_worst_group), else a label-free rule"
    needs = "needs validation attributes" if get_rule(rule).needs_groups else "no attribute labels"
    return f"{rule}: {needs}"


def label_needs(method: type[Method]) -> str:
    """One line: the training labels, then what the default selection uses, per dataset where it differs."""
    generic = selection_needs(method, None)
    training = "attribute labels" if method.requires.train_attrs else "none"
    lines = [f"training: {training}", f"selection {generic}"]
    for dataset in preset_datasets(method):
        specific = selection_needs(method, dataset)
        if specific != generic:
            lines.append(f"{dataset}: {specific}")
    return "; ".join(lines)


def method_card(method: type[Method]) -> dict[str, Any]:
    """Everything ``debiaslab methods NAME`` shows, as plain data (also its ``--format json`` output)."""
    presets = {GENERIC: resolved(method, None)}
    presets.update({d: resolved(method, d) for d in preset_datasets(method)})
    return {
        "name": method.name,
        "summary": method.summary,
        "requires": {"train_attrs": method.requires.train_attrs, "val_attrs": method.requires.val_attrs},
        "labels": label_needs(method),
        "presets": presets,
    }
