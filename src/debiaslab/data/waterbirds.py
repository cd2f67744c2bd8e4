"""Waterbirds (Sagawa et al. 2020) from a local copy in the GroupDRO / WILDS / SubpopBench layout.

``<root>/metadata.csv`` has the columns ``img_filename`` (relative to ``<root>``), ``y`` (0 landbird,
1 waterbird), ``place`` (0 land, 1 water) and ``split`` (0 train, 1 val, 2 test); other columns are ignored.
Class = bird type, attribute = background, groups = y x place; the aligned groups are (landbird, land) and
(waterbird, water). The published training counts are 3498 / 184 / 56 / 1057 for groups 0..3.

Images are decoded lazily. As in the GroupDRO code every image is resized to ``resize x resize`` (default
256 x 256, aspect ratio not kept) and centre-cropped to ``image_size`` (224) for evaluation; with
``augment`` training uses a random-resized crop (scale 0.7-1, ratio 3/4-4/3) of that resized image plus a
horizontal flip (GroupDRO crops the original image; the difference is the aspect-ratio stretch before
cropping). Normalisation uses the ImageNet statistics for ImageNet-pretrained ResNet-50s.
"""

from __future__ import annotations

import logging
from pathlib import Path

from debiaslab.data.catalog import register_dataset
from debiaslab.data.core import DatasetBundle
from debiaslab.data.files import (
    check_bool,
    check_split_nonempty,
    file_sha256,
    find_dataset_dir,
    parse_int_column,
    read_csv_columns,
)
from debiaslab.data.image_table import ImageRows, image_bundle, image_loading
from debiaslab.data.images import DEFAULT_WORKERS, DecodeSpec, as_size
from debiaslab.data.transforms import CenterCrop, RandomResizedCrop
from debiaslab.errors import ConfigError

log = logging.getLogger(__name__)

NAME = "waterbirds"
METADATA = "metadata.csv"
FOLDERS: tuple[str, ...] = ("waterbirds", "waterbird_complete95_forest2water2", "waterbirds_v1.0", "Waterbirds")
CLASS_NAMES: tuple[str, ...] = ("landbird", "waterbird")
ATTR_NAMES: tuple[str, ...] = ("land", "water")
DEFAULT_MODEL = "resnet50"  # ImageNet-pretrained ResNet-50 in GroupDRO, JTT, DFR


@register_dataset(NAME)
def build_waterbirds(
    data_root: Path,
    cache_dir: Path,
    *,
    root: str | None = None,
    image_size: int = 224,
    resize: int = 256,
    augment: bool = False,
    normalize: str = "imagenet",
    workers: int = DEFAULT_WORKERS,
    preload: bool | str = False,
    verify: bool = False,
) -> DatasetBundle:
    """Waterbirds: bird type (class) x background (attribute), from <root>/metadata.csv and its images.

    ``root`` defaults to ``<data_root>/waterbirds`` (or the GroupDRO / WILDS folder names). ``resize`` is the
    square size every file is decoded to; ``image_size`` the centre / random crop; ``augment`` adds random
    resized crops and flips to training; ``preload`` decodes a split into memory (true / false / auto);
    ``verify`` decodes every image once before training.
    """
    crop = as_size(image_size, "image_size")
    load = as_size(resize, "resize")
    assert crop is not None and load is not None
    if crop[0] > load[0] or crop[1] > load[1]:
        raise ConfigError(f"image_size {image_size} is larger than resize {resize}; the crop must fit")
    augment = check_bool(augment, "augment")
    crops = [RandomResizedCrop(crop, scale=(0.7, 1.0), ratio=(3 / 4, 4 / 3))] if augment else None
    loading = image_loading(
        DecodeSpec(size=load), normalize, workers, preload, verify, eval_ops=[CenterCrop(crop)], augment_ops=crops
    )
    folder = find_dataset_dir(data_root, root, FOLDERS, METADATA, NAME)
    table = folder / METADATA
    meta = read_csv_columns(table, ["img_filename", "y", "place", "split"])
    y = parse_int_column(meta["y"], meta.lines, table, "y", allowed=(0, 1), what=" (0 landbird, 1 waterbird)")
    place = parse_int_column(meta["place"], meta.lines, table, "place", allowed=(0, 1), what=" (0 land, 1 water)")
    split = parse_int_column(meta["split"], meta.lines, table, "split", allowed=(0, 1, 2), what=" (0/1/2)")
    check_split_nonempty(split, table, NAME)
    paths = [folder / name for name in meta["img_filename"]]
    recipe = {
        "root": str(folder),
        "metadata_sha256": file_sha256(table),
        "image_size": list(crop),
        "resize": list(load),
        "class_names": list(CLASS_NAMES),
        "attr_names": list(ATTR_NAMES),
    }
    rows = ImageRows(paths, y, place, split, table, meta.lines)
    return image_bundle(NAME, rows, loading, n_classes=2, n_attrs=2, recipe=recipe, default_model=DEFAULT_MODEL)
