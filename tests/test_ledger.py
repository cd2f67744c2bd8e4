"""The label ledger: what a run's training and checkpoint selection read, taken from its record (recorded, or
derived from the method's needs, its stages' rules, its protocol and the runs it was built on)."""

from __future__ import annotations

import pytest

from debiaslab.bench.ledger import label_ledger
from debiaslab.errors import DataError
from debiaslab.evaluation.ledger import check_labels, ledger_text


def _final(method: str, rule: str = "val_unbiased", **more) -> dict:
    stages = more.pop("stages", [{"name": method, "selection": rule}])
    return {"method": method, "selection": rule, "selection_split": "val", "hparams": {}, "stages": stages, **more}


def _text(final: dict, rule: str | None = None, inputs=lambda path: None) -> str:
    return ledger_text(label_ledger(final, rule, inputs))


def test_recorded_labels_are_used_as_written_and_checked() -> None:
    source = "inferred:error_set-seed0.npz sha256:0123456789ab"  # how runs name a groups file
    recorded = {"train": "inferred", "select": "inferred", "train_source": source, "select_source": source}
    final = _final("groupdro", labels=recorded)
    assert label_ledger(final) == recorded
    assert _text(final) == "train: inferred groups · select: inferred groups"
    # another rule reported from the same training keeps the training's labels, with that rule's selection
    assert _text(final, "val_worst_class") == "train: inferred groups · select: none"
    # and a group rule reported from a run trained on a groups file read that file's validation groups
    trained = {"train": "inferred", "select": "none", "train_source": source, "select_source": None}
    groups = {"file": "runs/x/groups/error_set-seed0.npz", "sha256": "0123456789abcdef", "inferrer": "error_set"}
    worst_class = _final("groupdro", "val_worst_class", labels=trained, groups=groups)
    assert label_ledger(worst_class, "val_unbiased")["select_source"] == source
    assert _text(worst_class, "val_unbiased") == "train: inferred groups · select: inferred groups"
    assert _text({**worst_class, "groups": None}, "val_unbiased") == "train: inferred groups · select: val groups"
    with pytest.raises(DataError, match=r"labels\.select = 'val'; expected one of groups, inferred, none"):
        check_labels({"train": "none", "select": "val"})


def test_training_labels_come_from_what_the_method_requires() -> None:
    assert _text(_final("erm")) == "train: none · select: val groups"
    assert _text(_final("erm", "val_worst_class")) == "train: none · select: none"
    assert _text(_final("groupdro")) == "train: train groups · select: val groups"
    assert _text(_final("reweight_group", "last")) == "train: train groups · select: none"
    # an earlier stage that selected on validation groups counts, whatever the last stage's rule
    two = _final("denetdm", "val_worst_class", stages=[{"selection": "val_unbiased"}, {"selection": "val_worst_class"}])
    assert _text(two) == "train: none · select: val groups"
    assert _text(_final("erm", selection_split="test")) == "train: none · select: test groups"  # paper protocol


def test_runs_built_on_other_runs_carry_their_labels() -> None:
    base = _final("erm")
    teacher = _final("groupdro")
    runs = {"runs/erm/seed0": base, "runs/groupdro/seed0": teacher}
    dfr = {
        "method": "dfr",
        "selection": "dfr_val_half",
        "hparams": {"base_run": "runs/erm/seed0"},
        "stages": [],
        "extras": {"variant": "group", "tune_metric": "worst_group"},
    }
    # DFR's last layer is fitted on validation groups: counted as selection, as runs record it
    assert _text(dfr, inputs=runs.get) == "train: none · select: val groups"
    dfr_class = {**dfr, "method": "dfr_class", "extras": {"variant": "class", "tune_metric": "worst_class"}}
    assert _text(dfr_class, inputs=runs.get) == "train: none · select: val groups (base run)"
    free_base = {**dfr_class, "hparams": {"base_run": "runs/erm-free/seed0"}}
    found = {**runs, "runs/erm-free/seed0": _final("erm", "val_worst_class")}
    assert _text(free_base, inputs=found.get) == "train: none · select: none"
    dett = _final("dett", hparams={"teacher_run": "runs/groupdro/seed0"})
    assert _text(dett, inputs=runs.get) == "train: train groups (teacher) · select: val groups"
    with pytest.raises(DataError, match=r"base_run 'runs/erm-free/seed0'.*not found"):
        label_ledger(free_base, inputs=runs.get)
    # a run that recorded its own labels still reads its teacher's where that run is found
    recorded = {"train": "none", "select": "groups", "train_source": None, "select_source": None}
    student = {**dett, "labels": recorded}
    assert _text(student, inputs=runs.get) == "train: train groups (teacher) · select: val groups"
    assert _text(student) == "train: none · select: val groups"  # teacher not found: the record as written
    with pytest.raises(DataError, match="no selection rule"):
        label_ledger({**dfr, "extras": {}}, inputs=runs.get)
