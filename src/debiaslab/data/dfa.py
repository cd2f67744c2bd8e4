"""The image folders released with DFA (Lee et al. 2021): Colored MNIST, Corrupted CIFAR-10 and BFFHQ.

Layout (labels are parsed from the file name ``<idx>_<y>_<b>.<ext>``: class ``y``, bias attribute ``b``)::

    cmnist/{0.5pct,1pct,2pct,5pct}/{align,conflict}/<class>/<idx>_<y>_<b>.png     training
    cmnist/{pct}/valid/...                                                        validation
    cmnist/test/<class>/...                                                       test
    cifar10c/...                                                                  same as cmnist
    bffhq/0.5pct/{align,conflict}/<class>/...,  bffhq/valid/*,  bffhq/test/*

Validation and test files may sit directly in their folder or one class folder deeper. A training file in
``align`` must have ``y == b`` and one in ``conflict`` ``y != b``; its class folder must be ``y``.

BFFHQ: class = age (0 young, 1 old), bias = gender; the aligned groups are y == b. DFA reports the accuracy
on the bias-conflicting test images: that is the ``conflicting_samples`` metric here (``conflicting`` is the
mean over the conflicting groups); ``test_conflicting_only`` keeps only those images, as DFA's loader does.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from debiaslab.data.catalog import register_dataset
from debiaslab.data.core import DatasetBundle
from debiaslab.data.files import SPLIT_NAMES, check_bool, find_dataset_dir
from debiaslab.data.image_table import ImageLoading, ImageRows, image_bundle, image_loading
from debiaslab.data.images import DEFAULT_WORKERS, DecodeSpec, as_size, list_images
from debiaslab.data.transforms import RandomCrop
from debiaslab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Conflicting ratio -> the release's folder name.
PCT_FOLDERS: dict[float, str] = {0.005: "0.5pct", 0.01: "1pct", 0.02: "2pct", 0.05: "5pct"}


def parse_label_name(path: Path) -> tuple[int, int]:
    """``(y, b)`` from ``<idx>_<y>_<b>.<ext>`` (the index may itself contain underscores)."""
    parts = path.stem.rsplit("_", 2)
    try:
        if len(parts) != 3:
            raise ValueError
        return int(parts[1]), int(parts[2])
    except ValueError:
        raise DataError(f"{path}: file name is not <index>_<class>_<bias>.<ext> with integer labels") from None


def _labels(paths: list[Path], n_classes: int, n_attrs: int) -> tuple[np.ndarray, np.ndarray]:
    y = np.empty(len(paths), dtype=np.int64)
    b = np.empty(len(paths), dtype=np.int64)
    for i, p in enumerate(paths):
        y[i], b[i] = parse_label_name(p)
        if not 0 <= y[i] < n_classes:
            raise DataError(f"{p}: class {y[i]} outside the declared classes 0..{n_classes - 1}")
        if not 0 <= b[i] < n_attrs:
            raise DataError(f"{p}: bias attribute {b[i]} outside 0..{n_attrs - 1}")
    return y, b


def _train_files(pct_dir: Path, n_classes: int) -> tuple[list[Path], np.ndarray, np.ndarray]:
    paths: list[Path] = []
    for part in ("align", "conflict"):
        folder = pct_dir / part
        if not folder.is_dir():
            raise DataError(f"{folder} not found; the DFA layout has {pct_dir}/align and {pct_dir}/conflict")
        found = list_images(folder, 2)
        for p in found:
            y, b = parse_label_name(p)
            if p.parent.name != str(y):
                raise DataError(f"{p}: class {y} in its name but it sits in class folder {p.parent.name!r}")
            if (part == "align") != (y == b):
                want = "y == b" if part == "align" else "y != b"
                raise DataError(f"{p}: class {y} and bias {b} in a {part!r} folder, which holds {want} only")
        paths += found
    if not paths:
        raise DataError(f"no images under {pct_dir}/align/<class>/ or {pct_dir}/conflict/<class>/")
    y, b = _labels(paths, n_classes, n_classes)
    return paths, y, b


def _eval_files(folder: Path, n_classes: int) -> tuple[list[Path], np.ndarray, np.ndarray]:
    if not folder.is_dir():
        raise DataError(f"{folder} not found (expected the DFA validation/test images there)")
    paths = list_images(folder, (1, 2))
    if not paths:
        raise DataError(f"no images in {folder} or its class folders")
    y, b = _labels(paths, n_classes, n_classes)
    return paths, y, b


def _pct_folder(base: Path, ratio: float | str) -> Path:
    """The folder for a conflicting ratio (0.01) or a folder name given directly ("1pct")."""
    available = sorted(p.name for p in base.iterdir() if p.is_dir() and p.name.endswith("pct"))
    if isinstance(ratio, str):
        name: str | None = ratio
    elif isinstance(ratio, int | float) and not isinstance(ratio, bool):
        name = PCT_FOLDERS.get(round(float(ratio), 6))
    else:
        name = None
    if name is None or not name.endswith("pct") or not (base / name).is_dir():
        have = ", ".join(available) or "none"
        ratios = ", ".join(f"{r:g} ({n})" for r, n in PCT_FOLDERS.items())
        raise ConfigError(f"ratio {ratio!r}: no such folder in {base} (it has: {have}); the release has {ratios}")
    return base / name


def build_dfa(
    name: str,
    folder_name: str,
    data_root: Path,
    loading: ImageLoading,
    *,
    root: str | None,
    ratio: float | str,
    n_classes: int,
    valid_at_top: bool,
    default_model: str,
    test_conflicting_only: bool = False,
    recipe: dict[str, object] | None = None,
) -> DatasetBundle:
    """A bundle from one DFA folder (``valid_at_top``: BFFHQ's ``valid`` sits beside the pct folders)."""
    base = find_dataset_dir(data_root, root, (folder_name,), "test", name)
    pct_dir = _pct_folder(base, ratio)
    listed = {
        "train": _train_files(pct_dir, n_classes),
        "val": _eval_files(base / "valid" if valid_at_top else pct_dir / "valid", n_classes),
        "test": _eval_files(base / "test", n_classes),
    }
    if test_conflicting_only:
        paths, y, b = listed["test"]
        keep = np.flatnonzero(y != b)
        listed["test"] = ([paths[i] for i in keep], y[keep], b[keep])
    parts = [listed[s] for s in SPLIT_NAMES]
    rows = ImageRows(
        paths=[p for paths, _, _ in parts for p in paths],
        y=np.concatenate([y for _, y, _ in parts]),
        attr=np.concatenate([b for _, _, b in parts]),
        split=np.concatenate([np.full(len(y), sid) for sid, (_, y, _) in enumerate(parts)]),
        source=base,
    )
    recipe = {
        "root": str(base),
        "ratio": next((r for r, n in PCT_FOLDERS.items() if n == pct_dir.name), str(ratio)),
        "folder": pct_dir.name,
        "test_conflicting_only": test_conflicting_only,
        **(recipe or {}),
    }
    return image_bundle(
        name, rows, loading, n_classes=n_classes, n_attrs=n_classes, recipe=recipe, default_model=default_model
    )


@register_dataset("dfa_cmnist")
def build_dfa_cmnist(
    data_root: Path,
    cache_dir: Path,
    *,
    root: str | None = None,
    ratio: float | str = 0.01,
    normalize: str = "none",
    workers: int = DEFAULT_WORKERS,
    preload: bool | str = "auto",
) -> DatasetBundle:
    """Colored MNIST as released by DFA (<root>/cmnist/{pct}/...): digit = class, colour = bias."""
    loading = image_loading(DecodeSpec(), normalize, workers, preload)
    return build_dfa(
        "dfa_cmnist", "cmnist", data_root, loading, root=root, ratio=ratio, n_classes=10, valid_at_top=False,
        default_model="mlp",
    )  # fmt: skip


@register_dataset("dfa_cifar10c")
def build_dfa_cifar10c(
    data_root: Path,
    cache_dir: Path,
    *,
    root: str | None = None,
    ratio: float | str = 0.01,
    augment: bool = True,
    normalize: str = "cifar10",
    workers: int = DEFAULT_WORKERS,
    preload: bool | str = "auto",
) -> DatasetBundle:
    """Corrupted CIFAR-10 as released by DFA (<root>/cifar10c/{pct}/...): object = class, corruption = bias.

    ``augment``: random 32 x 32 crops of the 4-pixel padded image and horizontal flips (the DFA/LfF recipe).
    """
    crops = [RandomCrop(32, padding=4)] if check_bool(augment, "augment") else None
    loading = image_loading(DecodeSpec(), normalize, workers, preload, augment_ops=crops)
    return build_dfa(
        "dfa_cifar10c", "cifar10c", data_root, loading, root=root, ratio=ratio, n_classes=10, valid_at_top=False,
        default_model="resnet18",
    )  # fmt: skip


@register_dataset("bffhq")
def build_bffhq(
    data_root: Path,
    cache_dir: Path,
    *,
    root: str | None = None,
    ratio: float | str = 0.005,
    image_size: int = 224,
    augment: bool = True,
    normalize: str = "cifar10",
    test_conflicting_only: bool = False,
    workers: int = DEFAULT_WORKERS,
    preload: bool | str = False,
) -> DatasetBundle:
    """BFFHQ as released by DFA (<root>/bffhq/...): age = class (0 young, 1 old), gender = bias.

    Images are resized to ``image_size`` (224, as DFA); ``augment``: random crops of the 4-pixel padded image
    and flips (DFA's recipe, which also normalises with the CIFAR-10 statistics: ``normalize``).
    """
    test_conflicting_only = check_bool(test_conflicting_only, "test_conflicting_only")
    size = as_size(image_size, "image_size")
    crops = None
    if check_bool(augment, "augment"):
        if size is None:
            raise ConfigError("augment=true needs an image_size (the crop size)")
        crops = [RandomCrop(size, padding=4)]
    loading = image_loading(DecodeSpec(size=size), normalize, workers, preload, augment_ops=crops)
    return build_dfa(
        "bffhq", "bffhq", data_root, loading, root=root, ratio=ratio, n_classes=2, valid_at_top=True,
        default_model="resnet18", test_conflicting_only=test_conflicting_only,
        recipe={"image_size": list(size) if size else None, "class_names": ["young", "old"],
                "attr_names": ["female", "male"]},
    )  # fmt: skip
