"""One loader for every image dataset read from files: a table of rows, each a file, a class, a bias attribute
and a split.

``folder``, ``class_folders``, ``waterbirds``, ``celeba`` and the DFA folders differ only in how they find their
rows (a CSV, class sub-folders, a metadata file, file names) and in their transforms; each lists its rows in an
:class:`ImageRows`, says how files become model inputs in an :class:`ImageLoading`, and :func:`image_bundle`
makes the train / val / test splits, decoded lazily by a thread pool (:class:`~debiaslab.data.images.ImageFiles`)
or preloaded into memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from debiaslab.data.core import BatchTransform, DatasetBundle, GroupDataset
from debiaslab.data.files import SPLIT_NAMES, check_bool, check_choice, check_files_exist, warn_empty_groups
from debiaslab.data.images import (
    MODES,
    NORMALIZATIONS,
    DecodeSpec,
    ImageFiles,
    as_size,
    check_workers,
    to_model_input,
    want_preload,
)
from debiaslab.data.labels import UserLabels
from debiaslab.data.transforms import Compose, RandomCrop, RandomHorizontalFlip
from debiaslab.errors import ConfigError


@dataclass
class ImageRows:
    """The rows of an image dataset: ``paths[i]`` has class ``y[i]``, attribute ``attr[i]`` (None: unknown for
    every row) and split ``split[i]`` (0 train, 1 val, 2 test). ``source`` is the table or folder they were read
    from and ``lines`` the table line of each row, for messages."""

    paths: Sequence[Path]
    y: np.ndarray
    attr: np.ndarray | None
    split: np.ndarray
    source: Path | str
    lines: Sequence[int] | None = None


@dataclass(frozen=True)
class ImageLoading:
    """How the files become model inputs: decoded to one size (``decode``), then a batch transform per split;
    ``workers`` decoding threads, ``preload`` into memory (true / false / auto), ``verify`` every file up front."""

    decode: DecodeSpec
    train_transform: BatchTransform
    eval_transform: BatchTransform
    workers: int
    preload: bool | str = False
    verify: bool = False
    recipe: dict[str, Any] = field(default_factory=dict)


def image_loading(
    decode: DecodeSpec,
    normalize: object,
    workers: object,
    preload: bool | str,
    verify: object = False,
    *,
    eval_ops: Sequence[BatchTransform] = (),
    augment_ops: Sequence[BatchTransform] | None = None,
) -> ImageLoading:
    """The options every image dataset shares, checked: training adds ``augment_ops`` and a horizontal flip
    (None: no augmentation) in front of the evaluation pipeline's ``eval_ops`` + uint8 -> float + ``normalize``."""
    normalize = check_choice(normalize, "normalize", tuple(NORMALIZATIONS))
    tail = to_model_input(normalize, decode.channels)
    eval_tf = Compose([*eval_ops, *tail])
    train_tf = Compose([*augment_ops, RandomHorizontalFlip(), *tail]) if augment_ops is not None else eval_tf
    return ImageLoading(
        decode=decode,
        train_transform=train_tf,
        eval_transform=eval_tf,
        workers=check_workers(workers),
        preload=preload,
        verify=check_bool(verify, "verify"),
        recipe={"normalize": normalize, "augment": augment_ops is not None},
    )


def image_bundle(
    name: str,
    rows: ImageRows,
    loading: ImageLoading,
    *,
    n_classes: int,
    n_attrs: int,
    recipe: dict[str, Any],
    default_model: str,
    notes: Sequence[str] = (),
    aligned_groups: Iterable[int] | None = None,
) -> DatasetBundle:
    """The train / val / test splits of ``rows`` loaded as ``loading`` says; groups empty in a split are logged
    (:func:`~debiaslab.data.files.warn_empty_groups`); a missing file fails first, naming the line listing it."""
    check_files_exist(rows.paths, rows.lines, rows.source)
    aligned = None if aligned_groups is None else tuple(aligned_groups)
    splits: dict[str, GroupDataset] = {}
    for sid, split_name in enumerate(SPLIT_NAMES):
        idx = np.flatnonzero(rows.split == sid)
        origin = TableOrigin(rows.source, np.asarray(rows.lines)[idx]) if rows.lines is not None else None
        files = ImageFiles([rows.paths[i] for i in idx], loading.decode, workers=loading.workers, origin=origin)
        if loading.verify:
            files.verify()
        preload = want_preload(files, loading.preload)
        x = files.load_all(f"{name}/{split_name} images") if preload and len(files) else None
        ds = GroupDataset(
            y=torch.as_tensor(rows.y[idx], dtype=torch.long),
            attr=None if rows.attr is None else torch.as_tensor(rows.attr[idx], dtype=torch.long),
            n_classes=n_classes,
            n_attrs=n_attrs,
            x=x,
            loader=None if x is not None else files,
            transform=loading.train_transform if split_name == "train" else loading.eval_transform,
            aligned_groups=aligned,
            name=name,
            split=split_name,
        )
        warn_empty_groups(ds, rows.source)
        splits[split_name] = ds
    return DatasetBundle(
        name=name,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        recipe={"dataset": name, **recipe, **loading.recipe},
        default_model=default_model,
        notes=list(notes),
    )


def user_image_loading(
    *,
    image_size: object,
    mode: object,
    normalize: object,
    augment: object,
    workers: object,
    preload: bool | str,
    verify: object,
) -> ImageLoading:
    """The loading options of a user's images (``folder``, ``class_folders``): ``image_size`` resizes every image
    (None: all must share one size); ``augment`` adds padded random crops of that size and flips to training."""
    size = as_size(image_size, "image_size")  # type: ignore[arg-type]
    mode = check_choice(mode, "mode", tuple(MODES))
    crops = None
    if check_bool(augment, "augment"):
        if size is None:
            raise ConfigError("augment=true needs image_size (the crop size)")
        crops = [RandomCrop(size, padding=max(1, size[0] // 8))]
    loading = image_loading(DecodeSpec(size=size, mode=mode), normalize, workers, preload, verify, augment_ops=crops)
    loading.recipe.update(image_size=list(size) if size else None, mode=mode)
    return loading


def user_image_bundle(
    name: str,
    paths: Sequence[Path],
    labels: UserLabels,
    loading: ImageLoading,
    source: Path | str,
    lines: Sequence[int] | None,
    recipe: dict[str, Any],
) -> DatasetBundle:
    """The bundle of a user's images with their checked labels (a ResNet-18 by default)."""
    rows = ImageRows(paths, labels.y, labels.attr, labels.split, source, lines)
    return image_bundle(
        name,
        rows,
        loading,
        n_classes=labels.n_classes,
        n_attrs=labels.n_attrs,
        recipe={**recipe, **labels.recipe()},
        default_model="resnet18",
        notes=labels.notes,
        aligned_groups=labels.aligned_groups,
    )


class TableOrigin:
    """``origin(i)`` for files listed in a table: ``'<table> line <n>'``."""

    def __init__(self, table: Path | str, lines: Sequence[int]) -> None:
        self.table, self.lines = str(table), np.asarray(lines, dtype=np.int64)

    def __call__(self, i: int) -> str:
        return f"{self.table} line {int(self.lines[i])}"
