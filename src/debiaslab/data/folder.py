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

from pathlib import Path

from debiaslab.data.catalog import register_dataset
from debiaslab.data.core import DatasetBundle
from debiaslab.data.files import file_sha256, parse_split_column, read_csv_columns, resolve_user_path
from debiaslab.data.image_table import user_image_bundle, user_image_loading
from debiaslab.data.images import DEFAULT_WORKERS
from debiaslab.data.labels import Aligned, check_count, check_names, label_ids, user_labels
from debiaslab.errors import ConfigError

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
    aligned: Aligned = "auto",
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
    names. ``aligned`` pairs each class with its bias-aligned attribute (see :mod:`debiaslab.data.labels`).
    ``image_size`` resizes every image (default: all images must share one size). ``augment`` adds
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
    loading = user_image_loading(
        image_size=image_size, mode=mode, normalize=normalize, augment=augment, workers=workers, preload=preload,
        verify=verify,
    )  # fmt: skip

    table = resolve_user_path(csv, data_root, "csv")
    if table.is_dir():
        raise ConfigError(f"csv={csv!r} is the folder {table}; give the CSV file inside it")
    rows = read_csv_columns(table, REQUIRED, OPTIONAL)
    lines = rows.lines

    def where(i: int) -> str:
        return f"{table} line {lines[i]}"

    y = label_ids(rows["label"], where, "label", declared=n_classes, names=names)
    attr = None
    if rows.has("attribute"):
        attr = label_ids(rows["attribute"], where, "attribute", declared=n_attrs, names=None, unknown_ok=True)
    elif n_attrs is not None:
        raise ConfigError(f"n_attrs={n_attrs} but {table} has no 'attribute' column")
    given = parse_split_column(rows["split"], lines, table, "split") if rows.has("split") else None
    labels = user_labels(
        NAME, table, y, attr, given, aligned=aligned, class_names=names, val_fraction=val_fraction,
        test_fraction=test_fraction, split_seed=split_seed,
    )  # fmt: skip
    recipe = {
        "csv": str(table),
        "csv_sha256": file_sha256(table),
        "has_attribute_column": attr is not None,
        "class_names": names,
    }
    paths = [table.parent / p for p in rows["path"]]
    return user_image_bundle(NAME, paths, labels, loading, table, lines, recipe)
