"""What ``debiaslab methods`` shows: the methods grouped by family or by the labels they train with, per method the
labels it needs (training, and validation through its selection rule) and, per dataset preset, every hyperparameter
value with its source."""

from __future__ import annotations

import dataclasses
from typing import Any

from debiaslab.errors import ConfigError
from debiaslab.evaluation.selection import get_rule
from debiaslab.methods.base import Method
from debiaslab.methods.families import FAMILIES
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


#: what a method trains with, in the order ``debiaslab methods --by labels`` lists them
TRAINING_LABELS: dict[str, str] = {
    "none": "class labels only: no attribute label is read in training",
    "validation attributes": "fits part of the model on attribute-labelled validation examples",
    "training attributes": "reads the attribute (group) of every training example",
}
GROUPINGS = ("family", "labels")


def training_labels(method: type[Method]) -> str:
    """The key of :data:`TRAINING_LABELS` that describes what ``method`` trains with."""
    if method.requires.train_attrs:
        return "training attributes"
    return "validation attributes" if method.requires.val_attrs else "none"


def selection_summary(method: type[Method]) -> str:
    """The default selection rule in a few words: the generic rule, then the datasets whose preset changes it."""
    generic = method(dataset=None).hparams.selection
    by_rule: dict[str, list[str]] = {}
    for dataset in preset_datasets(method):
        rule = method(dataset=dataset).hparams.selection
        if rule != generic:
            by_rule.setdefault(rule, []).append(dataset)
    text = "; ".join([generic, *(f"{rule} on {', '.join(names)}" for rule, names in by_rule.items())])
    return f"{text} (validation attributes are also trained on)" if method.requires.val_attrs else text


def grouped(methods: list[type[Method]], by: str = "family") -> list[tuple[str, str, list[type[Method]]]]:
    """``(group, description, methods)`` in listing order: by ``family`` (:data:`FAMILIES`) or by the labels the
    methods train with (``labels``, :data:`TRAINING_LABELS`); methods keep their order inside a group."""
    if by not in GROUPINGS:
        raise ConfigError(f"cannot group methods by {by!r}; expected one of {', '.join(GROUPINGS)}")
    key, table = (family_of, FAMILIES) if by == "family" else (training_labels, TRAINING_LABELS)
    groups: dict[str, list[type[Method]]] = {name: [] for name in table}
    for method in methods:
        groups.setdefault(key(method), []).append(method)
    return [(name, table.get(name, ""), members) for name, members in groups.items() if members]


def family_of(method: type[Method]) -> str:
    """The method's family; a method (e.g. a plugin's) that names none is listed under ``other``."""
    return method.family or "other"


def method_card(method: type[Method], dataset: str | None = None) -> dict[str, Any]:
    """Everything ``debiaslab methods NAME`` shows, as plain data (also its ``--format json`` output); with
    ``dataset`` only that dataset's preset (a registered dataset without a preset shows the generic values)."""
    if dataset is not None:
        presets = {dataset: resolved(method, dataset)}
    else:
        presets = {GENERIC: resolved(method, None)}
        presets.update({d: resolved(method, d) for d in preset_datasets(method)})
    return {
        "name": method.name,
        "summary": method.summary,
        "family": family_of(method),
        "training_labels": training_labels(method),
        "requires": {"train_attrs": method.requires.train_attrs, "val_attrs": method.requires.val_attrs},
        "labels": label_needs(method),
        "presets": presets,
    }
