"""A user's images sorted into one folder per class, ``root/<class>/<file>``, with no label table.

Classes are the sub-folder names in sorted order (class id = position). With sub-folders ``train``, ``val``
and ``test`` directly under ``root`` (``root/<split>/<class>/<file>``) those are the splits (every split must
have the same class folders); otherwise the images are split as in the ``folder`` dataset (seeded,
stratified by group, ``val_fraction`` 0.1, ``test_fraction`` 0.2). The bias attribute comes from an optional
second CSV, ``attributes=PATH`` with columns ``path,attribute`` (``path`` relative to ``root``, as in
``cat/img001.png`` or ``train/cat/img001.png``; ``attribute`` an id, or empty / -1 where unknown); images it does
not list have an unknown attribute. Without it every attribute is unknown: only methods that need no group
labels can run, and asking for another one is an error that lists those that can.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from debiaslab.data.catalog import register_dataset
from debiaslab.data.core import DatasetBundle
from debiaslab.data.files import SPLIT_NAMES, file_sha256, read_csv_columns, resolve_user_path
from debiaslab.data.image_table import user_image_bundle, user_image_loading
from debiaslab.data.images import DEFAULT_WORKERS, IMAGE_EXTENSIONS
from debiaslab.data.labels import Aligned, check_count, label_ids, user_labels
from debiaslab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

NAME = "class_folders"


def _class_dirs(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path) -> list[Path]:
    """The image files below ``folder``; other files (not hidden ones) are counted in a warning."""
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")]
    images = sorted(p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS)
    skipped = sorted(p.relative_to(folder) for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS)
    if skipped:
        shown = ", ".join(map(str, skipped[:3])) + (", ..." if len(skipped) > 3 else "")
        log.warning(
            "class folder %s: skipped %d non-image file(s) (%s); images end in %s",
            folder,
            len(skipped),
            shown,
            " ".join(IMAGE_EXTENSIONS),
        )
    return images


def scan_class_folders(root: Path) -> tuple[list[Path], np.ndarray, np.ndarray | None, list[str]]:
    """Image paths, class ids, split ids (None without split folders) and class names of ``root``."""
    top = _class_dirs(root)
    by_split = set(top) >= {"train"} and set(top) <= set(SPLIT_NAMES) and len(top) > 1
    parts = [(root / s, i) for i, s in enumerate(SPLIT_NAMES) if s in top] if by_split else [(root, -1)]
    names = _class_dirs(parts[0][0])
    if len(names) < 2:
        raise DataError(
            f"{parts[0][0]} has {len(names)} class folder(s) ({', '.join(names) or 'none'}); expected one "
            "sub-folder per class (at least two), each holding that class's images"
        )
    paths: list[Path] = []
    y: list[int] = []
    split: list[int] = []
    for folder, sid in parts:
        here = _class_dirs(folder)
        if here != names:
            raise DataError(
                f"{folder} has class folders {', '.join(here)}; expected the same as {parts[0][0]}: {', '.join(names)}"
            )
        for k, name in enumerate(names):
            files = _images(folder / name)
            if not files:
                raise DataError(f"class folder {folder / name} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
            paths += files
            y += [k] * len(files)
            split += [sid] * len(files)
    return paths, np.asarray(y, dtype=np.int64), np.asarray(split, dtype=np.int64) if by_split else None, names


def read_attributes(table: Path, root: Path, paths: list[Path], n_attrs: int | None) -> tuple[np.ndarray, int]:
    """Attribute id per image from ``table`` (``path,attribute``; unknown: -1), and their count."""
    rows = read_csv_columns(table, ("path", "attribute"))
    lines = rows.lines

    def where(i: int) -> str:
        return f"{table} line {lines[i]}"

    ids, n_a = label_ids(rows["attribute"], where, "attribute", declared=n_attrs, names=None, unknown_ok=True)
    position = {p.resolve(): i for i, p in enumerate(paths)}
    attr = np.full(len(paths), -1, dtype=np.int64)
    for r, rel in enumerate(rows["path"]):
        target = (root / rel).resolve()
        if target not in position:
            raise DataError(f"{where(r)}: path {rel!r} is not an image under the class folders of {root}")
        attr[position[target]] = ids[r]
    missing = int((attr < 0).sum())
    if missing:
        log.warning("%s: %d of %d images have no attribute (unknown)", table, missing, len(paths))
    return attr, max(n_a, 1)


@register_dataset(NAME)
def build_class_folders(
    data_root: Path,
    cache_dir: Path,
    *,
    root: str | None = None,
    attributes: str | None = None,
    n_attrs: int | None = None,
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
    """Your images in one folder per class (root/<class>/<file>, or root/<split>/<class>/<file>); no table.

    ``root`` is required (absolute, or relative to the data root, else to the working directory);
    ``attributes`` an optional CSV ``path,attribute`` for the bias attribute. Other options as for ``folder``.
    """
    if root is None:
        raise ConfigError(
            "dataset 'class_folders' needs --data-opt root=PATH: a folder with one sub-folder of images per class"
        )
    n_attrs = check_count(n_attrs, "n_attrs")
    loading = user_image_loading(
        image_size=image_size, mode=mode, normalize=normalize, augment=augment, workers=workers, preload=preload,
        verify=verify,
    )  # fmt: skip
    folder = resolve_user_path(root, data_root, "root")
    if not folder.is_dir():
        raise ConfigError(f"root={root!r} is not a folder ({folder}); expected root/<class>/<image files>")
    paths, y, given, names = scan_class_folders(folder)
    attr = None
    table: Path | None = None
    if attributes is not None:
        table = resolve_user_path(attributes, data_root, "attributes")
        attr = read_attributes(table, folder, paths, n_attrs)
    elif n_attrs is not None:
        raise ConfigError(f"n_attrs={n_attrs} but no attributes=CSV was given")
    labels = user_labels(
        NAME, folder, (y, len(names)), attr, given, aligned=aligned, class_names=names, val_fraction=val_fraction,
        test_fraction=test_fraction, split_seed=split_seed,
    )  # fmt: skip
    if given is not None:
        labels.how = "folders"
    recipe = {
        "root": str(folder),
        "class_names": names,
        "n_images": len(paths),
        "attributes": str(table) if table is not None else None,
        "attributes_sha256": file_sha256(table) if table is not None else None,
    }
    return user_image_bundle(NAME, paths, labels, loading, folder, None, recipe)
