"""The label ledger of a result: which group labels its training and its model selection read, and where from.

A number in this field means little without it: a method that chose its checkpoint on validation group labels is
not comparable with one that read none. Every run records it as ``final.json["labels"]``::

    {"train": "none" | "groups" | "inferred",    # group labels the training read
     "select": "groups" | "inferred" | "none",   # group labels the deployed model's selection read (a rule on
                                                 # validation groups, or a head fitted on them: DFR)
     "train_source": str | None,                 # None for the dataset's own groups; the inferred groups file
     "select_source": str | None}                # (``inferred:<file> sha256:<hash>``); or the run it came
                                                 # through (``teacher``, ``base run``); ``test`` under the
                                                 # papers' protocol

``inferred`` means groups read from a file of inferred groups rather than the dataset's annotations. This module
checks and prints the schema; :mod:`debiaslab.bench.ledger` derives it for records written before the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from debiaslab.errors import DataError
from debiaslab.evaluation.selection import get_rule, list_rules

TRAIN = ("none", "groups", "inferred")
SELECT = ("groups", "inferred", "none")
KEYS = ("train", "select", "train_source", "select_source")
#: sources that name a split of the run's own dataset (anything else names the run or file the labels came through)
GROUP_SOURCES = (None, "train", "val", "test")
#: the order of how much a pipeline's labels reveal: a part reading more wins when parts are combined
_RANK = {"none": 0, "inferred": 1, "groups": 2}


def check_labels(labels: Mapping[str, Any], where: str = "labels") -> dict[str, Any]:
    """``labels`` as a plain dict, or :class:`DataError` naming the key and the values expected."""
    if not isinstance(labels, Mapping):
        raise DataError(f"{where} = {labels!r}; expected a mapping with keys {', '.join(KEYS)}")
    out = {k: labels.get(k) for k in KEYS}
    for key, allowed in (("train", TRAIN), ("select", SELECT)):
        if out[key] not in allowed:
            raise DataError(f"{where}.{key} = {out[key]!r}; expected one of {', '.join(allowed)}")
    for key in ("train_source", "select_source"):
        if out[key] is not None and not isinstance(out[key], str):
            raise DataError(f"{where}.{key} = {out[key]!r}; expected a string or null")
    return out


def rule_reads(rule: str) -> str:
    """``"groups"`` when the selection rule reads validation group labels, else ``"none"``."""
    if rule not in list_rules():
        raise DataError(f"selection rule {rule!r} unknown; expected one of {', '.join(list_rules())}")
    return "groups" if get_rule(rule).needs_groups else "none"


def stronger(a: str, b: str) -> str:
    """The value that reads more labels (``groups`` over ``inferred`` over ``none``)."""
    return a if _RANK[a] >= _RANK[b] else b


def ledger_text(labels: Mapping[str, Any]) -> str:
    """``train: none · select: val groups`` (one cell of a results table)."""
    labels = check_labels(labels)
    return f"train: {_train_text(labels)} · select: {_select_text(labels)}"


def _train_text(labels: dict[str, Any]) -> str:
    return _groups_text(labels["train"], labels["train_source"], "train", ("val", "test"))


def _select_text(labels: dict[str, Any]) -> str:
    return _groups_text(labels["select"], labels["select_source"], "val", ("test",))


def _groups_text(kind: str, source: Any, home: str, other_splits: tuple[str, ...]) -> str:
    """What one use reads: ``none``, inferred groups, or the groups of its ``home`` split, of another split, or of
    a named source."""
    if kind == "none":
        return "none"
    if kind == "inferred":
        return "inferred groups" + _via(source)
    if source in (None, home):
        return f"{home} groups"
    if source in other_splits:
        return f"{source} groups"
    return f"{home} groups ({source})"


def _via(source: str | None) -> str:
    """`` (teacher)`` when inferred groups came through another run (``teacher, inferred:<file> ...``); the file
    itself stays in the record (a table row names its inferrer)."""
    via = (source or "").rpartition(", ")[0]
    return f" ({via})" if via else ""
