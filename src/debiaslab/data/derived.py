"""What the datasets derived from a clean one (Colored MNIST, Biased MNIST, Corrupted CIFAR-10) share: the options
``protocol`` / ``val_fraction`` / ``data_seed``, the seeded validation split held out of the clean training set
before the bias is applied, and one builder that caches the derived arrays by recipe and makes the bundle.

Every random draw comes from its own stream of ``data_seed`` (:data:`STREAMS`), so that, e.g., the test split's
bias does not depend on the protocol.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import numbers
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from debiaslab.data.array_cache import ArrayCache, protocol_bundle, split_names
from debiaslab.data.core import BatchTransform, DatasetBundle, GroupDataset
from debiaslab.errors import ConfigError

PROTOCOLS: tuple[str, ...] = ("default", "paper")
#: the random stream of each use of ``data_seed``
STREAMS: dict[str, int] = {"val_split": 0, "train": 1, "val": 2, "test": 3}


# ---------------------------------------------------------------------------------------------- options
def check_number(name: str, value: Any, what: str, *, low: float = 0.0, high: float = 1.0, bounds: str = "()") -> float:
    """``value`` as a float between ``low`` and ``high``, each end open or closed as ``bounds`` says (``"()"``,
    ``"[]"``, ``"(]"``); ``what`` says what the option means."""
    if isinstance(value, str):  # YAML reads "1e-3" as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} {value!r} is not a number; {what}")
    v = float(value)
    above = v > low if bounds[0] == "(" else v >= low
    below = v < high if bounds[1] == ")" else v <= high
    if not (above and below):
        raise ConfigError(f"{name} {v} is outside {bounds[0]}{low:g}, {high:g}{bounds[1]}; {what}")
    return v


def check_protocol_options(
    title: str, clean: str, protocol: Any, val_fraction: Any, data_seed: Any
) -> tuple[str, float, int]:
    """``protocol``, ``val_fraction`` and ``data_seed`` of a dataset derived from ``clean`` (e.g. MNIST)."""
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"unknown {title} protocol {protocol!r}; expected one of: {', '.join(PROTOCOLS)} "
            f"(default: select on a validation split held out from {clean}-train; paper: select on test, as the "
            "papers do)"
        )
    what = f"the fraction of {clean}-train held out (stratified by class) for validation, e.g. 0.1"
    vf = check_number("val_fraction", val_fraction, what)
    if isinstance(data_seed, bool) or not isinstance(data_seed, numbers.Integral) or data_seed < 0:
        raise ConfigError(f"data_seed {data_seed!r} is not a non-negative integer (it seeds the bias assignment)")
    return str(protocol), vf, int(data_seed)


# ---------------------------------------------------------------------------------------------- the splits
def seeded_rng(data_seed: int, *stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([data_seed, *stream])))


def holdout_sizes(counts: np.ndarray, fraction: float) -> np.ndarray:
    """Per-class held-out sizes summing to ``round(sum(counts) * fraction)`` (largest remainder)."""
    counts = np.asarray(counts, dtype=np.int64)
    total = int(np.rint(counts.sum() * fraction))
    quota = counts * fraction
    sizes = np.floor(quota).astype(np.int64)
    extra = total - int(sizes.sum())
    if extra > 0:
        order = np.argsort(-(quota - sizes), kind="stable")
        sizes[order[:extra]] += 1
    return sizes


def stratified_holdout(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of a held-out set of ``round(N * fraction)`` examples, stratified by class
    (:func:`holdout_sizes`); which examples are held out is drawn from ``rng``."""
    y = np.asarray(y)
    classes, counts = np.unique(y, return_counts=True)
    mask = np.zeros(len(y), dtype=bool)
    for c, k in zip(classes, holdout_sizes(counts, fraction)):
        idx = np.flatnonzero(y == c)
        mask[rng.permutation(idx)[:k]] = True
    return mask


def check_holdout_sizes(y: np.ndarray, val_fraction: float, n_classes: int, kind: str = "class") -> None:
    counts = np.bincount(y, minlength=n_classes)
    k = holdout_sizes(counts, val_fraction)
    if (k < 1).any() or (counts - k < 1).any():
        raise ConfigError(
            f"val_fraction {val_fraction} leaves a {kind} without validation or training images; "
            "choose a value such as 0.1"
        )


#: ``make(split, x, y, stream) -> (derived x, attribute)``: the bias applied to one split of the clean data
MakeSplit = Callable[[str, np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def derive_splits(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], recipe: dict[str, Any], make: MakeSplit
) -> dict[str, np.ndarray]:
    """``{split}_x``, ``{split}_y``, ``{split}_attr`` of the recipe's splits: under the ``default`` protocol a
    validation split is held out of ``train`` (stratified, seeded) before ``make`` applies the bias to each split.
    The same recipe gives byte-identical arrays."""
    seed = recipe["data_seed"]
    (train_x, train_y), parts = train, {}
    if recipe["protocol"] == "default":
        held = stratified_holdout(train_y, recipe["val_fraction"], seeded_rng(seed, STREAMS["val_split"]))
        parts["val"] = (train_x[held], train_y[held])
        train_x, train_y = train_x[~held], train_y[~held]
    parts = {"train": (train_x, train_y), **parts, "test": test}
    out: dict[str, np.ndarray] = {}
    for split, (x, y) in parts.items():
        derived, attr = make(split, x, y, STREAMS[split])
        out |= {f"{split}_x": derived, f"{split}_y": y, f"{split}_attr": attr}
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------- the builder
def recipe_hash(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(_canonical(recipe).encode()).hexdigest()


def _canonical(recipe: dict[str, Any]) -> str:
    return json.dumps(recipe, sort_keys=True, separators=(",", ":"))


def derived_bundle(
    name: str,
    title: str,
    recipe: dict[str, Any],
    cache_dir: Path,
    *,
    load: Callable[[], Any],
    derive: Callable[[Any], dict[str, np.ndarray]],
    image_shape_ok: Callable[[tuple[int, ...]], bool],
    n_classes: int,
    transforms: tuple[BatchTransform, BatchTransform],
    default_model: str,
    test_described: str,
    kind: str = "class",
    extra_recipe: dict[str, Any] | None = None,
    notes: Sequence[str] = (),
) -> DatasetBundle:
    """The bundle of a derived dataset: its arrays read from ``<cache_dir>/<name>/<recipe hash>.npz``, else built
    (``derive(load())``, where ``load`` returns the clean ``train_x``/``train_y``/``test_x``/``test_y``, whose
    ``val_fraction`` must leave every ``kind`` examples on both sides) and cached there. Every split has
    ``n_classes`` classes and as many attribute values (attribute c is the aligned one of class c);
    ``transforms`` are the training and evaluation batch transforms."""
    key = recipe_hash(recipe)
    protocol = recipe["protocol"]

    def build() -> dict[str, np.ndarray]:
        clean = load()
        if protocol == "default":
            check_holdout_sizes(clean.train_y, recipe["val_fraction"], n_classes, kind)
        return derive(clean)

    path = Path(cache_dir) / name / f"{key}.npz"
    arrays = ArrayCache(path, _canonical(recipe), split_names(protocol), title, image_shape_ok).arrays(build)
    splits = {
        s: GroupDataset(
            x=torch.from_numpy(arrays[f"{s}_x"]),
            y=torch.from_numpy(arrays[f"{s}_y"]),
            attr=torch.from_numpy(arrays[f"{s}_attr"]),
            n_classes=n_classes,
            n_attrs=n_classes,
            transform=transforms[0] if s == "train" else transforms[1],
            name=name,
            split=s,
        )
        for s in split_names(protocol)
    }
    full = {**recipe, "recipe_sha256": key, **(extra_recipe or {})}
    return protocol_bundle(name, title, splits, protocol, full, default_model, test_described, notes)
