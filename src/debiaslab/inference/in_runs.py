"""What a run needs of group inference: its groups file (made first when a suite gives the recipe), the check that
the method reads groups at all, and the ledger of which labels the run used for training and for selection."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
from pathlib import Path
from typing import Any

from debiaslab.data.core import DatasetBundle, GroupDataset
from debiaslab.errors import ConfigError
from debiaslab.evaluation.selection import get_rule
from debiaslab.inference.apply import check_groups_for
from debiaslab.inference.groups_file import GroupsFile, read_groups
from debiaslab.inference.pipeline import infer_groups

log = logging.getLogger(__name__)


def groups_for_run(
    path: str,
    recipe: dict[str, Any] | None,
    dataset: str,
    options: dict[str, Any],
    seed: int,
    bundle: DatasetBundle,
    *,
    data_root: str | None = None,
    cache_dir: str | None = None,
    num_threads: int | None = None,
) -> GroupsFile:
    """The run's groups file, checked against its dataset. When it does not exist and ``recipe`` says how to make it
    (``{"inferrer": NAME, "hparams": {...}}``, a bench suite's entry), it is inferred first, once: concurrent runs
    needing the same file wait on a lock beside it."""
    target = Path(path)
    if not target.exists() and recipe:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _locked(target.with_name(target.name + ".lock")):
            if not target.exists():
                log.info("inferring groups (%s) for this run: %s", recipe["inferrer"], target)
                infer_groups(
                    recipe["inferrer"],
                    dataset,
                    target,
                    dataset_options=options,
                    hparams=recipe.get("hparams") or {},
                    seed=seed,
                    data_root=data_root,
                    cache_dir=cache_dir,
                    num_threads=num_threads,
                )
    groups = read_groups(target)
    check_groups_for(groups, dataset, options, bundle)
    return groups


@contextlib.contextmanager
def _locked(path: Path):
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    with contextlib.suppress(OSError):
        os.unlink(path)


def group_use(method: Any, val: GroupDataset | None) -> dict[str, bool]:
    """Whether ``method`` reads groups in training and in choosing its checkpoint (its selection rule, or a head
    fitted on validation groups)."""
    rule = get_rule(method.selection_rule(val)) if val is not None else None
    return {
        "train": bool(method.requires.train_attrs),
        "select": bool(method.requires.val_attrs or (rule is not None and rule.needs_groups)),
    }


def check_reads_groups(method: Any, val: GroupDataset | None, groups: GroupsFile) -> None:
    """``--groups`` for a method and rule that read no groups is a mistake worth one line, before training."""
    use = group_use(method, val)
    if not (use["train"] or use["select"]):
        raise ConfigError(
            f"--groups {groups.path}: method {method.name!r} with selection {method.selection_rule(val)!r} reads no "
            "groups; give it to a group method (reweight_group, resample_group, subsample_group, groupdro, dfr, "
            "rest) or select with val_worst_group / val_unbiased"
        )


def label_ledger(method: Any, train: GroupDataset, val: GroupDataset | None) -> dict[str, Any]:
    """Which labels the run used: ``train`` and ``select`` are ``groups`` (the dataset's attributes), ``inferred``
    (a groups file) or ``none``; ``*_source`` names the file and its hash for inferred groups."""
    use = group_use(method, val)

    def kind(split: GroupDataset | None, used: bool) -> tuple[str, str | None]:
        if not used or split is None:
            return "none", None
        if split.group_source == "attributes":
            return "groups", None
        return "inferred", split.group_source

    train_kind, train_source = kind(train, use["train"])
    select_kind, select_source = kind(val, use["select"])
    return {"train": train_kind, "select": select_kind, "train_source": train_source, "select_source": select_source}
