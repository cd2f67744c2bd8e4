"""Put a groups file's pseudo-groups in place of a dataset's groups, after checking that it belongs to it."""

from __future__ import annotations

import dataclasses
from typing import Any

from debiaslab.data.core import DatasetBundle
from debiaslab.errors import ConfigError, DataError
from debiaslab.inference.groups_file import GroupsFile


def check_groups_for(groups: GroupsFile, dataset: str, options: dict[str, Any], bundle: DatasetBundle) -> None:
    """One line, before any training, when ``groups`` was inferred on another dataset, other options or splits of
    another size, or when this dataset selects on its test split (groups files have no test groups)."""
    where = f"groups file {groups.path}"
    if groups.meta.get("dataset") != dataset:
        raise DataError(f"{where} was inferred on dataset {groups.meta.get('dataset')!r}, not {dataset!r}")
    recorded = groups.meta.get("dataset_options") or {}
    if _normal(recorded) != _normal(options):
        raise DataError(f"{where} was inferred with dataset options {recorded}, not {options}")
    for name in ("train", "val"):
        want, have = len(getattr(bundle, name)), groups.splits[name].pseudo.numel()
        if want != have:
            raise DataError(f"{where} has {have} {name} examples; the {name} split of {dataset} has {want}")
    if bundle.selection != "val":
        raise ConfigError(
            f"{where}: this dataset selects on its {bundle.selection} split (protocol {bundle.protocol!r}); inferred "
            "groups exist for train and val only"
        )


def with_inferred_groups(bundle: DatasetBundle, groups: GroupsFile) -> DatasetBundle:
    """``bundle`` whose train and val splits carry the pseudo-groups (the test split keeps its true groups)."""
    source = groups.source()
    train = bundle.train.with_groups(groups.splits["train"].pseudo, groups.n_per_class, source)
    val = bundle.val.with_groups(groups.splits["val"].pseudo, groups.n_per_class, source)
    return dataclasses.replace(bundle, train=train, val=val)


def _normal(options: dict[str, Any]) -> dict[str, str]:
    return {
        str(k): repr(float(v)) if isinstance(v, int | float) and not isinstance(v, bool) else repr(v)
        for k, v in options.items()
    }
