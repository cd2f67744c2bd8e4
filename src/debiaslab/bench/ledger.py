"""The label ledger of a finished run (:mod:`debiaslab.evaluation.ledger`): ``final.json["labels"]`` when the run
recorded it, otherwise derived from the rest of its record the way runs record it.

Derived from what the record says: the method's declared needs (``requires``: group labels on the training split;
on the validation split, which counts as selection, as DFR's last layer fitted on validation groups does), the
selection rule of every stage, and the split it selected on (``test`` under the papers' protocol). Either way the
runs it was built on (a DFR base run, a DeTT/KD teacher) fold in where they are found: a student distilled from a
GroupDRO teacher read group labels through it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from debiaslab.errors import DataError
from debiaslab.evaluation.ledger import GROUP_SOURCES, check_labels, rule_reads, stronger
from debiaslab.evaluation.metrics import GROUP_METRIC_KEYS

#: reads the ``final.json`` of a run a record names (a base run, a teacher) or returns None when it is not there
InputReader = Callable[[str], "dict[str, Any] | None"]
#: how an input run's hyperparameter is named in the ledger
INPUT_NAMES = {"base_run": "base run", "teacher_run": "teacher"}


def read_input(path: str) -> dict[str, Any] | None:
    """The ``final.json`` of the run at ``path`` (a run directory or its ``model.pt``), None when absent."""
    where = Path(path)
    final = (where.parent if where.suffix == ".pt" else where) / "final.json"
    try:
        return json.loads(final.read_text())
    except (OSError, ValueError):
        return None


def label_ledger(final: Mapping[str, Any], rule: str | None = None, inputs: InputReader = read_input) -> dict:
    """The ledger of the model a run deployed (``rule``: of the checkpoint another selection rule chose from the
    same training, as in ``final["selections"]``). Raises :class:`DataError` when a run it was built on is
    needed and ``inputs`` cannot find it."""
    recorded = final.get("labels")
    if recorded is None:
        return _derive(final, rule, inputs)
    labels = check_labels(recorded, "final.json labels")
    if rule not in (None, final.get("selection")):  # another rule of the same training: that rule's selection
        own = {**labels, **_selection(final, rule)}
        groups = final.get("groups")
        if own["select"] == "groups" and groups:  # the validation split carried the run's inferred groups
            name = Path(str(groups.get("file", ""))).name
            own.update(select="inferred", select_source=f"inferred:{name} sha256:{str(groups.get('sha256', ''))[:12]}")
        if labels["select"] != "none" and _reads_on_validation(final):  # a head fitted on validation stays
            own = _fold(own, labels, "select", None)
        labels = own
    return _with_inputs(final, check_labels(labels, "labels"), inputs, required=False)


def _derive(final: Mapping[str, Any], rule: str | None, inputs: InputReader) -> dict[str, Any]:
    from debiaslab.methods.registry import get_method

    method = get_method(final["method"])
    hparams = final.get("hparams") or {}
    labels: dict[str, Any] = {"train": "none", "train_source": None}
    if method.requires.train_attrs:
        labels.update(train="groups")
    teacher = hparams.get("teacher_method")
    if teacher and not hparams.get("teacher_run") and get_method(teacher).requires.train_attrs:
        labels = _fold(labels, {"train": "groups", "train_source": None}, "train", "teacher")
    labels.update(_selection(final, rule))
    if _reads_on_validation(final):
        labels = _fold(labels, {"select": "groups", "select_source": None}, "select", None)
    return _with_inputs(final, check_labels(labels, "derived labels"), inputs, required=True)


def _reads_on_validation(final: Mapping[str, Any]) -> bool:
    """Whether the method itself fits on validation groups (DFR's head; not its ``class`` variant)."""
    from debiaslab.methods.registry import get_method

    variant = (final.get("extras") or {}).get("variant")
    return get_method(final["method"]).requires.val_attrs and variant != "class"


def _with_inputs(final: Mapping[str, Any], labels: dict, inputs: InputReader, required: bool) -> dict[str, Any]:
    """``labels`` with the ledgers of the runs the run was built on folded in (``required``: one not found is an
    error; otherwise it is left out)."""
    from debiaslab.methods.registry import get_method

    hparams = final.get("hparams") or {}
    for name in sorted(get_method(final["method"]).run_inputs):
        path = hparams.get(name)
        if not path:
            continue
        found = inputs(str(path))
        if found is None:
            if not required:
                continue
            raise DataError(
                f"{final['method']} run built on {name} {path!r}: that run's final.json is not found, so the labels "
                "it read are unknown"
            )
        theirs = label_ledger(found, inputs=inputs)
        via = INPUT_NAMES.get(name, name.replace("_", " "))
        labels = _fold(labels, theirs, "train", via)
        labels = _fold(labels, theirs, "select", via)
    return check_labels(labels, "labels")


def _selection(final: Mapping[str, Any], rule: str | None) -> dict[str, Any]:
    """``select`` and ``select_source`` from the rules of the record's stages (the last one replaced by ``rule``)."""
    rules = [s.get("selection") for s in final.get("stages") or []]
    rules = [r for r in rules if r] or [final.get("selection")]
    if rule is not None:
        rules[-1] = rule
    select = "none"
    for name in rules:
        select = stronger(select, _rule_reads(final, name))
    split = final.get("selection_split") or "val"
    return {"select": select, "select_source": (None if split == "val" else split) if select != "none" else None}


def _rule_reads(final: Mapping[str, Any], name: str | None) -> str:
    """What one stage's selection read: a named rule's needs, or for a method's own procedure (e.g. DFR's choice
    of C on half of validation) the validation metric it records as ``extras["tune_metric"]``."""
    if name is None:
        return "none"
    try:
        return rule_reads(name)
    except DataError:
        metric = (final.get("extras") or {}).get("tune_metric")
        if metric is None:
            raise DataError(
                f"{final['method']} selected by {name!r}, which is no selection rule, and its record names no "
                "extras.tune_metric; cannot tell which labels it read"
            ) from None
        return "groups" if metric in GROUP_METRIC_KEYS else "none"


def _fold(labels: dict[str, Any], theirs: Mapping[str, Any], key: str, via: str | None) -> dict[str, Any]:
    """``labels`` with ``theirs[key]`` folded in: the part reading more labels wins, its source named ``via`` (the
    run it came through) unless ``via`` is None."""
    mine = labels.get(key) or "none"
    if stronger(mine, theirs[key]) == mine:
        return labels
    source = theirs.get(f"{key}_source")
    if via is not None:
        source = via if source in GROUP_SOURCES else f"{via}, {source}"
    return {**labels, key: theirs[key], f"{key}_source": source}
