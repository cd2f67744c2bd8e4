"""Corrupted CIFAR-10 under the LfF protocol: the object is the class, one of ten corruptions the bias.

Built offline from a local CIFAR-10 (python batches). Corruption k is the bias-aligned corruption of class k;
the assignment is the deterministic milestone rule of Colored MNIST (:func:`~debiaslab.data.colored_mnist.
bias_attributes`): training uses aligned ratio ``1 - ratio``, evaluation splits 0.1 (corruption independent
of the class). The corruptions are CIFAR-10-C's "type 0" set at severity 5 (:mod:`debiaslab.data.corruptions`).

As for Colored MNIST, ``protocol="default"`` holds out ``val_fraction`` of CIFAR-10-train (stratified by
class, seeded) *before* corrupting, corrupts it unbiased and selects checkpoints on it, and reports on the
corrupted CIFAR-10 test set; ``protocol="paper"`` corrupts all 50 000 training images and selects on test, as
LfF, DFA and DeNetDM do. Built arrays are cached under ``<cache_dir>/corrupted_cifar10/<recipe hash>.npz``.

Frost needs the texture photos of the ImageNet-C code (``frost1.png .. frost5.jpg``) in ``<data_root>/frost``
(or ``frost_dir``). Without them the build stops with an error, unless ``frost="synthetic"`` asks for a
procedural substitute, which is then recorded in the recipe and in every report's notes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from debiaslab.data.catalog import register_dataset
from debiaslab.data.cifar10 import Cifar10Arrays, batch_hashes, load_cifar10, locate_cifar10
from debiaslab.data.colored_mnist import bias_attributes
from debiaslab.data.core import DatasetBundle
from debiaslab.data.corruptions import (
    CORRUPTIONS,
    FROST_FILES,
    corruption_functions,
    load_frost_textures,
    synthetic_frost_textures,
)
from debiaslab.data.derived import check_number, check_protocol_options, derive_splits, derived_bundle, seeded_rng
from debiaslab.data.files import check_bool, check_choice, file_sha256, resolve_user_path
from debiaslab.data.images import NORMALIZATIONS, to_model_input
from debiaslab.data.transforms import Compose, RandomCrop, RandomHorizontalFlip
from debiaslab.errors import DataError

log = logging.getLogger(__name__)

NAME = "corrupted_cifar10"
FORMAT_VERSION = 1
FROST_MODES: tuple[str, ...] = ("images", "synthetic")
FROST_FOLDERS: tuple[str, ...] = ("frost", "frost_images")
SEVERITY = 5
N_CLASSES = 10
EVAL_ALIGNED_RATIO = 0.1
_STREAM_FROST = 4  # after the streams of the splits (debiaslab.data.derived.STREAMS)
_CHUNK = 2048  # images corrupted per vectorised step


# ---------------------------------------------------------------------------------------------- building
def corrupt_split(
    images: np.ndarray, attr: np.ndarray, functions: dict[str, Any], seed: int, stream: int
) -> np.ndarray:
    """uint8 ``(N, 3, 32, 32)``: image i corrupted by corruption ``attr[i]`` (HWC in, CHW out)."""
    out = np.empty_like(images)
    for k, name in enumerate(CORRUPTIONS):
        idx = np.flatnonzero(attr == k)
        rng = seeded_rng(seed, stream, k)
        for start in range(0, len(idx), _CHUNK):
            part = idx[start : start + _CHUNK]
            out[part] = functions[name](images[part], rng)
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))


def corrupt_cifar10(
    cifar: Cifar10Arrays, recipe: dict[str, Any], frost_textures: list[np.ndarray]
) -> dict[str, np.ndarray]:
    """``{split}_x`` (uint8 N,3,32,32), ``{split}_y``, ``{split}_attr`` for a recipe (val only by default)."""
    seed = recipe["data_seed"]
    functions = corruption_functions(frost_textures)

    def make(split: str, x: np.ndarray, y: np.ndarray, stream: int) -> tuple[np.ndarray, np.ndarray]:
        attr = bias_attributes(y, recipe["train_aligned_ratio" if split == "train" else "eval_aligned_ratio"])
        log.info("corrupting %d CIFAR-10 %s images", len(y), split)
        return corrupt_split(x, attr, functions, seed, stream), attr

    return derive_splits((cifar.train_x, cifar.train_y), (cifar.test_x, cifar.test_y), recipe, make)


# ---------------------------------------------------------------------------------------------- options
def _frost_folder(data_root: Path, frost_dir: str | None) -> Path:
    if frost_dir is not None:
        return resolve_user_path(frost_dir, data_root, "frost_dir")
    for name in FROST_FOLDERS:
        if (Path(data_root) / name / FROST_FILES[0]).is_file():
            return Path(data_root) / name
    looked = ", ".join(str(Path(data_root) / n) for n in FROST_FOLDERS)
    raise DataError(
        f"Corrupted CIFAR-10 needs the Frost texture images {', '.join(FROST_FILES)} (from the ImageNet-C "
        f"code, create_c/frost*) and found none in {looked}. Put them there, pass --data-opt frost_dir=PATH, "
        "or pass --data-opt frost=synthetic for a procedural substitute (not the published Frost corruption)"
    )


# ---------------------------------------------------------------------------------------------- builder
@register_dataset(NAME)
def build_corrupted_cifar10(
    data_root: Path,
    cache_dir: Path,
    *,
    ratio: float = 0.01,
    protocol: str = "default",
    val_fraction: float = 0.1,
    data_seed: int = 0,
    cifar_dir: str | None = None,
    frost: str = "images",
    frost_dir: str | None = None,
    augment: bool = True,
    normalize: str = "cifar10",
) -> DatasetBundle:
    """Corrupted CIFAR-10 (LfF protocol, type-0 corruptions, severity 5) built from a local CIFAR-10 copy.

    ``ratio`` is the conflicting fraction of training; ``protocol`` default (select on a validation split held
    out before corrupting) or paper (select on test); ``frost`` images (texture files required) or synthetic
    (a documented substitute); ``augment`` random crops and flips in training (as LfF).
    """
    ratio = check_number("ratio", ratio, "the fraction of bias-conflicting training examples, e.g. 0.01")
    protocol, val_fraction, data_seed = check_protocol_options(
        "Corrupted CIFAR-10", "CIFAR-10", protocol, val_fraction, data_seed
    )
    frost = check_choice(frost, "frost", FROST_MODES)
    augment = check_bool(augment, "augment")
    normalize = check_choice(normalize, "normalize", tuple(NORMALIZATIONS))
    folder = locate_cifar10(data_root, cifar_dir)
    frost_folder = _frost_folder(data_root, frost_dir) if frost == "images" else None
    frost_record: Any = (
        {name: file_sha256(frost_folder / name) for name in FROST_FILES if (frost_folder / name).is_file()}
        if frost_folder is not None
        else "synthetic"
    )
    recipe = {
        "dataset": NAME,
        "format_version": FORMAT_VERSION,
        "protocol": protocol,
        "ratio": ratio,
        "train_aligned_ratio": 1.0 - ratio,
        "eval_aligned_ratio": EVAL_ALIGNED_RATIO,
        "val_fraction": val_fraction if protocol == "default" else None,
        "data_seed": data_seed,
        "corruptions": list(CORRUPTIONS),
        "severity": SEVERITY,
        "frost": frost_record,
        "cifar10_sha256": batch_hashes(folder),
    }

    def derive(cifar: Cifar10Arrays) -> dict[str, np.ndarray]:
        textures = (
            load_frost_textures(frost_folder)
            if frost_folder is not None
            else synthetic_frost_textures(seeded_rng(data_seed, _STREAM_FROST))
        )
        return corrupt_cifar10(cifar, recipe, textures)

    tail = to_model_input(normalize)
    eval_tf = Compose(tail)
    train_tf = Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(), *tail]) if augment else eval_tf
    notes = []
    if frost == "synthetic":
        notes.append(
            "Corrupted CIFAR-10 frost='synthetic': the Frost corruption uses procedural textures instead of the "
            "CIFAR-10-C frost photos, so this is not the published dataset; numbers are not comparable."
        )
    return derived_bundle(
        NAME,
        "Corrupted CIFAR-10",
        recipe,
        cache_dir,
        load=lambda: load_cifar10(folder),
        derive=derive,
        image_shape_ok=lambda chw: chw == (3, 32, 32),
        n_classes=N_CLASSES,
        transforms=(train_tf, eval_tf),
        default_model="resnet20",
        test_described="the corrupted test split, which is also the reported split (as in LfF, DFA and DeNetDM)",
        extra_recipe={"augment": augment, "normalize": normalize},
        notes=notes,
    )
