"""A user's own images: a folder plus a CSV with the columns ``path,label[,attribute][,split]``.

``path`` is relative to the CSV's folder (or absolute); ``label`` an integer class id (or one of
``class_names``); ``attribute`` the bias attribute id (empty or -1 where unknown); ``split`` one of
``train``/``val``/``test`` (also ``valid``, or ``0``/``1``/``2``). Without a ``split`` column the rows are split
with a fixed seed, stratified by group (by class when attributes are missing): ``test_fraction`` (0.2) of
every stratum goes to test, ``val_fraction`` (0.1) to validation, the rest to training. Without an
``attribute`` column every attribute is unknown (-1): only methods that need no group labels can run, and
asking for another one is an error that lists those that can.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from debiaslab.data.catalog import register_dataset
from debiaslab.data.core import DatasetBundle
from debiaslab.data.files import (
    check_bool,
    check_choice,
    check_files_exist,
    check_split_nonempty,
    file_sha256,
    parse_split_column,
    read_csv_columns,
    resolve_user_path,
)
from debiaslab.data.images import (
    DEFAULT_WORKERS,
    MODES,
    NORMALIZATIONS,
    DecodeSpec,
    as_size,
    check_workers,
    table_splits,
    to_model_input,
)
from debiaslab.data.labels import check_count, check_names, label_ids, split_ids
from debiaslab.data.transforms import Compose, RandomCrop, RandomHorizontalFlip
from debiaslab.errors import ConfigError

log = logging.getLogger(__name__)

NAME = "folder"
REQUIRED: tuple[str, ...] = ("path", "label")
OPTIONAL: tuple[str, ...] = ("attribute", "split")


@register_dataset(NAME)
def build_folder(
    data_root: Path,
    cache_dir: Path,
    *,
    csv: str | None = None,
    n_classes: int | None = None,
    n_attrs: int | None = None,
    class_names: list[str] | None = None,
    image_size: int | None = None,
    mode: str = "RGB",
    normalize: str = "none",
    augment: bool = False,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_seed: int = 0,
    workers: int = DEFAULT_WORKERS,
    preload: bool | str = "auto",
    verify: bool = False,
) -> DatasetBundle:
    """Your images: a CSV (path,label[,attribute][,split]) whose paths are relative to the CSV's folder.

    ``csv`` is required (absolute, or relative to the data root, else to the working directory).
    ``n_classes`` / ``n_attrs`` declare the ids (default: largest id + 1); ``class_names`` lets labels be
    names. ``image_size`` resizes every image (default: all images must share one size). ``augment`` adds
    padded random crops and flips to training. ``preload`` decodes everything into memory (auto: when it
    takes at most 1 GiB).
    """
    if csv is None:
        raise ConfigError(
            "dataset 'folder' needs --data-opt csv=PATH: a CSV with columns path,label[,attribute][,split]"
        )
    n_classes = check_count(n_classes, "n_classes")
    n_attrs = check_count(n_attrs, "n_attrs")
    names = check_names(class_names, "class_names")
    size = as_size(image_size, "image_size")
    mode = check_choice(mode, "mode", tuple(MODES))
    normalize = check_choice(normalize, "normalize", tuple(NORMALIZATIONS))
    augment = check_bool(augment, "augment")
    verify = check_bool(verify, "verify")
    workers = check_workers(workers)

    table = resolve_user_path(csv, data_root, "csv")
    if table.is_dir():
        raise ConfigError(f"csv={csv!r} is the folder {table}; give the CSV file inside it")
    rows = read_csv_columns(table, REQUIRED, OPTIONAL)
    lines = rows.lines

    def where(i: int) -> str:
        return f"{table} line {lines[i]}"

    y, k = label_ids(rows["label"], where, "label", declared=n_classes, names=names)
    attr: np.ndarray | None = None
    n_a = 1
    if rows.has("attribute"):
        attr, n_a = label_ids(rows["attribute"], where, "attribute", declared=n_attrs, names=None, unknown_ok=True)
    elif n_attrs is not None:
        raise ConfigError(f"n_attrs={n_attrs} but {table} has no 'attribute' column")
    given = parse_split_column(rows["split"], lines, table, "split") if rows.has("split") else None
    split, how = split_ids(
        given, y, attr, n_a, val_fraction=val_fraction, test_fraction=test_fraction, split_seed=split_seed
    )
    check_split_nonempty(split, table if given is not None else f"{table} ({how})", NAME)
    paths = [table.parent / p for p in rows["path"]]
    check_files_exist(paths, lines, table)

    channels = MODES[mode]
    tail = to_model_input(normalize, channels)
    eval_tf = Compose(tail)
    if augment:
        if size is None:
            raise ConfigError("augment=true needs image_size (the crop size)")
        train_tf = Compose([RandomCrop(size, padding=max(1, size[0] // 8)), RandomHorizontalFlip(), *tail])
    else:
        train_tf = eval_tf
    splits = table_splits(
        name=NAME,
        paths=paths,
        y=y,
        attr=attr,
        split=split,
        lines=lines,
        table=table,
        n_classes=k,
        n_attrs=n_a,
        spec=DecodeSpec(size=size, mode=mode),
        workers=workers,
        train_transform=train_tf,
        eval_transform=eval_tf,
        preload=preload,
        verify=verify,
    )
    recipe = {
        "dataset": NAME,
        "csv": str(table),
        "csv_sha256": file_sha256(table),
        "n_classes": k,
        "n_attrs": n_a,
        "has_attribute_column": attr is not None,
        "split": how,
        "image_size": list(size) if size else None,
        "mode": mode,
        "normalize": normalize,
        "augment": augment,
        "class_names": names,
    }
    notes = []
    if attr is None:
        notes.append(
            f"{table} has no attribute column: group metrics are undefined and only methods that need no "
            "attribute labels can run"
        )
    return DatasetBundle(
        name=NAME,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        recipe=recipe,
        default_model="resnet18",
        notes=notes,
    )
