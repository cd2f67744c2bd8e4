"""CelebA (Liu et al. 2015) from a local copy: any binary attribute as the class, another as the bias.

Expected in ``<root>``: ``img_align_celeba/`` with the aligned JPEGs (the Kaggle copy's nested
``img_align_celeba/img_align_celeba/`` is accepted too), the attributes as ``list_attr_celeba.csv`` (header
``image_id,<40 attribute names>``) or the original ``list_attr_celeba.txt`` (a count line, a line of 40 names,
then ``<file> <40 values>``), and the official partition as ``list_eval_partition.csv`` (``image_id,partition``)
or ``.txt`` (``<file> <partition>``), with 0 train, 1 val, 2 test. Attribute values are -1/1 (or 0/1) and
become 0/1.

Default: class ``Blond_Hair``, bias ``Male`` (GroupDRO, JTT, DFR); the smallest training group is blond
males (1 387 images). CelebA has no "aligned" attribute value per class, so aligned / conflicting metrics are
not defined; worst-group and the per-group table are. Images are centre-cropped to 178 x 178 and resized to
224 x 224 as in the GroupDRO code; ``augment`` adds a random-resized crop (scale 0.7-1, ratio 1-4/3) and a
horizontal flip for training.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from debiaslab.data.catalog import register_dataset
from debiaslab.data.core import DatasetBundle
from debiaslab.data.files import (
    CsvColumns,
    check_bool,
    check_split_nonempty,
    find_dataset_dir,
    parse_int_column,
    read_csv_columns,
)
from debiaslab.data.image_table import ImageRows, image_bundle, image_loading
from debiaslab.data.images import DEFAULT_WORKERS, DecodeSpec, as_size
from debiaslab.data.transforms import RandomResizedCrop
from debiaslab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

NAME = "celeba"
IMAGES = "img_align_celeba"
FOLDERS: tuple[str, ...] = ("celeba", "CelebA", "celeba/celeba")
ATTR_FILES: tuple[str, ...] = ("list_attr_celeba.csv", "list_attr_celeba.txt")
PARTITION_FILES: tuple[str, ...] = ("list_eval_partition.csv", "list_eval_partition.txt")
ORIGINAL_MIN_SIDE = 178  # the aligned images are 178 x 218
DEFAULT_MODEL = "resnet50"


def _pick(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"celeba: none of {', '.join(str(folder / n) for n in names)} exists")


def _read_whitespace_table(path: Path, columns: list[str], names_line: int) -> CsvColumns:
    """The original ``.txt`` files: whitespace-separated ``<file> <values...>``; attribute names on line
    ``names_line`` (1-based; 0 = no names line, then the columns are ``image_id`` and ``partition``)."""
    try:
        text = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    if names_line:
        if len(text) < names_line:
            raise DataError(f"{path}: expected the attribute names on line {names_line}; the file is too short")
        header = ["image_id", *text[names_line - 1].split()]
        first = names_line
    else:
        header = ["image_id", "partition"]
        first = 0
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path} has no column {', '.join(map(repr, missing))}; available: {', '.join(header[1:])}")
    where = {c: header.index(c) for c in columns}
    out: dict[str, list[str]] = {c: [] for c in columns}
    lines: list[int] = []
    for lineno, line in enumerate(text[first:], start=first + 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != len(header):
            raise DataError(f"{path} line {lineno}: {len(fields)} field(s), expected {len(header)}")
        for c, i in where.items():
            out[c].append(fields[i])
        lines.append(lineno)
    if not lines:
        raise DataError(f"{path} has no rows")
    return CsvColumns(path, out, lines, header)


def _read_attrs(path: Path, columns: list[str]) -> CsvColumns:
    if path.suffix == ".csv":
        return read_csv_columns(path, columns)
    return _read_whitespace_table(path, columns, names_line=2)


def _read_partition(path: Path) -> CsvColumns:
    if path.suffix == ".csv":
        return read_csv_columns(path, ["image_id", "partition"])
    return _read_whitespace_table(path, ["image_id", "partition"], names_line=0)


def _binary(values: list[str], lines: list[int], path: Path, column: str) -> np.ndarray:
    raw = parse_int_column(values, lines, path, column, allowed=(-1, 0, 1), what=" (a binary attribute: -1/1 or 0/1)")
    return (raw == 1).astype(np.int64)


@register_dataset(NAME)
def build_celeba(
    data_root: Path,
    cache_dir: Path,
    *,
    root: str | None = None,
    target: str = "Blond_Hair",
    attribute: str = "Male",
    crop: int = ORIGINAL_MIN_SIDE,
    image_size: int = 224,
    augment: bool = False,
    normalize: str = "imagenet",
    workers: int = DEFAULT_WORKERS,
    preload: bool | str = False,
    verify: bool = False,
) -> DatasetBundle:
    """CelebA: a binary attribute as class (target, default Blond_Hair) and another as bias (default Male).

    ``root`` defaults to ``<data_root>/celeba``. Images are centre-cropped to ``crop`` (178) and resized to
    ``image_size``; ``augment`` adds random resized crops and flips to training.
    """
    if not isinstance(target, str) or not isinstance(attribute, str) or target == attribute:
        raise ConfigError(f"target {target!r} and attribute {attribute!r} must be two different attribute names")
    size = as_size(image_size, "image_size")
    centre = as_size(crop, "crop")
    augment = check_bool(augment, "augment")
    out = size or centre  # image_size=None keeps the crop's size
    if augment and out is None:
        raise ConfigError("augment=true needs image_size or crop (the size of the random crops)")
    crops = [RandomResizedCrop(out, scale=(0.7, 1.0), ratio=(1.0, 4 / 3))] if augment else None
    decode = DecodeSpec(size=size, center_crop=centre)
    loading = image_loading(decode, normalize, workers, preload, verify, augment_ops=crops)
    folder = find_dataset_dir(data_root, root, FOLDERS, IMAGES, NAME)
    images = folder / IMAGES
    if (images / IMAGES).is_dir():  # the Kaggle copy nests the folder
        images = images / IMAGES
    attr_path, part_path = _pick(folder, ATTR_FILES), _pick(folder, PARTITION_FILES)
    attrs = _read_attrs(attr_path, ["image_id", target, attribute])
    y = _binary(attrs[target], attrs.lines, attr_path, target)
    a = _binary(attrs[attribute], attrs.lines, attr_path, attribute)

    part = _read_partition(part_path)
    split_of = dict(zip(part["image_id"], range(len(part))))
    part_split = parse_int_column(part["partition"], part.lines, part_path, "partition", allowed=(0, 1, 2))
    split = np.empty(len(attrs), dtype=np.int64)
    for i, image_id in enumerate(attrs["image_id"]):
        j = split_of.get(image_id)
        if j is None:
            raise DataError(f"{attr_path} line {attrs.lines[i]}: image {image_id!r} is not listed in {part_path}")
        split[i] = part_split[j]
    check_split_nonempty(split, part_path, NAME)
    paths = [images / image_id for image_id in attrs["image_id"]]
    recipe = {
        "root": str(folder),
        "target": target,
        "attribute": attribute,
        "image_size": list(out) if out else None,
        "center_crop": list(centre) if centre else None,
        "class_names": [f"not {target}", target],
        "attr_names": [f"not {attribute}", attribute],
    }
    rows = ImageRows(paths, y, a, split, attr_path, attrs.lines)
    return image_bundle(
        NAME, rows, loading, n_classes=2, n_attrs=2, recipe=recipe, default_model=DEFAULT_MODEL, aligned_groups=()
    )
