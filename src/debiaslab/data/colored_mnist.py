"""Colored MNIST under the LfF protocol (LfF, DeNetDM, REST): the digit is the class, the colour the bias.

Each digit class has an aligned colour (colour c for digit c). In dataset order, per class, a fraction ``a``
of the images gets the aligned colour and ``(1 - a) / 9`` each of the other colours, by rounded cumulative
milestones (no randomness). Training uses ``a = 1 - ratio``; evaluation splits use ``a = 0.1`` (colour
independent of the digit). Every image gets its own colour ``clip(mu + eps, 0, 1)``, ``eps ~ N(0, sigma^2
I)``, multiplied into the grey digit and truncated to uint8. Splits are stored as uint8 ``(N, 3, 28, 28)``
tensors and turned into float32 in [0, 1] batch by batch (:class:`~debiaslab.data.transforms.ToFloat`).

The built arrays are cached under ``<cache_dir>/colored_mnist/<recipe hash>.npz``, keyed by everything that
determines them (options, colours, MNIST checksums, a format version).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import numbers
from pathlib import Path
from typing import Any

import numpy as np
import torch

from debiaslab.data.array_cache import cached_arrays, protocol_bundle, split_names
from debiaslab.data.catalog import register_dataset
from debiaslab.data.core import DatasetBundle, GroupDataset
from debiaslab.data.mnist import MNIST_SHA256, MnistArrays, load_mnist
from debiaslab.data.transforms import ToFloat
from debiaslab.errors import ConfigError

log = logging.getLogger(__name__)

NAME = "colored_mnist"
FORMAT_VERSION = 1
PROTOCOLS: tuple[str, ...] = ("default", "paper")
N_CLASSES = 10
SIGMA = 0.005  # "severity 4" in LfF
EVAL_ALIGNED_RATIO = 0.1  # a = 1 / n_colours: the colour says nothing about the digit
#: Mean colour (RGB in [0, 1]) of each bias attribute; colour c is the aligned colour of digit c.
MEAN_COLOURS = np.array(
    [
        [0.9837, 0.3125, 0.1686],
        [0.9905, 0.9156, 0.3515],
        [0.6730, 0.4611, 0.5798],
        [0.7833, 0.8316, 0.6013],
        [0.0880, 0.7780, 0.9818],
        [0.3214, 0.9611, 0.4464],
        [0.0246, 0.2357, 0.7587],
        [0.5552, 0.1016, 0.7618],
        [0.2077, 0.3929, 0.0187],
        [0.8337, 0.2024, 0.2669],
    ],
    dtype=np.float64,
)

# Independent random streams derived from data_seed, one per use, so that e.g. the test split's colours do not
# depend on the protocol.
_STREAM_VAL_SPLIT, _STREAM_TRAIN, _STREAM_VAL, _STREAM_TEST = 0, 1, 2, 3
_CHUNK = 4096  # images coloured per vectorised step (bounds the float64 temporary to ~77 MB)


# ---------------------------------------------------------------------------------------------- the recipe
def bias_attributes(y: np.ndarray, aligned_ratio: float, n_attrs: int = N_CLASSES) -> np.ndarray:
    """Colour index per example by the deterministic milestone rule, per class in dataset order.

    For class c with n_c examples: colour c has proportion ``aligned_ratio``, every other colour
    ``(1 - aligned_ratio) / (n_attrs - 1)``; milestones ``m_j = round(n_c * cumsum_j)``; the i-th example of
    the class (0-based) gets the smallest j with ``m_j > i``.
    """
    y = np.asarray(y)
    attr = np.empty(y.shape, dtype=np.int64)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        p = np.full(n_attrs, (1.0 - aligned_ratio) / (n_attrs - 1))
        p[c] = aligned_ratio
        milestones = np.rint(len(idx) * np.cumsum(p)).astype(np.int64)
        milestones[-1] = len(idx)  # the cumulative sum may end at 0.999...; every example gets a colour
        attr[idx] = np.searchsorted(milestones, np.arange(len(idx)), side="right")
    return attr


def colorize(
    grey: np.ndarray,
    attr: np.ndarray,
    rng: np.random.Generator,
    sigma: float = SIGMA,
) -> np.ndarray:
    """uint8 ``(N, 3, H, W)``: each grey ``(N, H, W)`` digit times its own noisy colour, truncated."""
    n = len(grey)
    noise = rng.normal(0.0, sigma, size=(n, 3))
    colour = np.clip(MEAN_COLOURS[attr] + noise, 0.0, 1.0)
    out = np.empty((n, 3, *grey.shape[1:]), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        stop = min(start + _CHUNK, n)
        prod = colour[start:stop, :, None, None] * grey[start:stop, None, :, :].astype(np.float64)
        out[start:stop] = prod.astype(np.uint8)  # truncation toward zero, as the reference does
    return out


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


def seeded_rng(data_seed: int, stream: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([data_seed, stream])))


def make_recipe(
    *, ratio: float, protocol: str, val_fraction: float | None, data_seed: int, sigma: float
) -> dict[str, Any]:
    """Everything that determines the arrays (and so the cache key). Options must already be validated."""
    return {
        "dataset": NAME,
        "format_version": FORMAT_VERSION,
        "protocol": protocol,
        "ratio": ratio,
        "train_aligned_ratio": 1.0 - ratio,
        "eval_aligned_ratio": EVAL_ALIGNED_RATIO,
        "val_fraction": val_fraction if protocol == "default" else None,
        "data_seed": data_seed,
        "sigma": sigma,
        "colours": MEAN_COLOURS.tolist(),
        "mnist_sha256": dict(sorted(MNIST_SHA256.items())),
    }


def recipe_hash(recipe: dict[str, Any]) -> str:
    canonical = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def colorize_mnist(mnist: MnistArrays, recipe: dict[str, Any]) -> dict[str, np.ndarray]:
    """The split arrays ``{split}_x`` (uint8 N,3,28,28), ``{split}_y``, ``{split}_attr`` (int64) for a recipe.

    ``val_*`` is present only under the default protocol (under ``paper`` the test split doubles as val).
    Deterministic: the same recipe gives byte-identical arrays.
    """
    seed, sigma = recipe["data_seed"], recipe["sigma"]
    train_x, train_y = mnist.train_x, mnist.train_y
    out: dict[str, np.ndarray] = {}
    if recipe["protocol"] == "default":
        held = stratified_holdout(train_y, recipe["val_fraction"], seeded_rng(seed, _STREAM_VAL_SPLIT))
        val_y = train_y[held]
        val_attr = bias_attributes(val_y, recipe["eval_aligned_ratio"])
        out |= {"val_x": colorize(train_x[held], val_attr, seeded_rng(seed, _STREAM_VAL), sigma)}
        out |= {"val_y": val_y, "val_attr": val_attr}
        train_x, train_y = train_x[~held], train_y[~held]
    train_attr = bias_attributes(train_y, recipe["train_aligned_ratio"])
    out |= {"train_x": colorize(train_x, train_attr, seeded_rng(seed, _STREAM_TRAIN), sigma)}
    out |= {"train_y": train_y, "train_attr": train_attr}
    test_attr = bias_attributes(mnist.test_y, recipe["eval_aligned_ratio"])
    out |= {"test_x": colorize(mnist.test_x, test_attr, seeded_rng(seed, _STREAM_TEST), sigma)}
    out |= {"test_y": mnist.test_y, "test_attr": test_attr}
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------- the cache
# ---------------------------------------------------------------------------------------------- options
def _number(name: str, value: Any, what: str) -> float:
    if isinstance(value, str):  # YAML reads "1e-3" as a string
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} {value!r} is not a number; {what}")
    return float(value)


def _check_options(
    ratio: Any, protocol: Any, val_fraction: Any, data_seed: Any, sigma: Any
) -> tuple[float, str, float, int, float]:
    ratio_what = "the fraction of bias-conflicting training examples, e.g. 0.01"
    r = _number("ratio", ratio, ratio_what)
    if not 0.0 < r < 1.0:
        raise ConfigError(f"ratio {ratio} is outside (0, 1); {ratio_what}")
    if protocol not in PROTOCOLS:
        raise ConfigError(
            f"unknown Colored MNIST protocol {protocol!r}; expected one of: {', '.join(PROTOCOLS)} "
            "(default: select on a validation split held out from MNIST-train; "
            "paper: select on test, as the papers do)"
        )
    vf_what = "the fraction of MNIST-train held out (stratified by digit) for validation, e.g. 0.1"
    vf = _number("val_fraction", val_fraction, vf_what)
    if not 0.0 < vf < 1.0:
        raise ConfigError(f"val_fraction {val_fraction} is outside (0, 1); {vf_what}")
    if isinstance(data_seed, bool) or not isinstance(data_seed, numbers.Integral) or data_seed < 0:
        raise ConfigError(f"data_seed {data_seed!r} is not a non-negative integer (it seeds the colours)")
    sigma_what = "the standard deviation of the per-image colour noise, 0.005 in LfF"
    s = _number("sigma", sigma, sigma_what)
    if not 0.0 <= s <= 1.0:
        raise ConfigError(f"sigma {sigma} is outside [0, 1]; {sigma_what}")
    return r, str(protocol), vf, int(data_seed), s


def check_holdout_sizes(y: np.ndarray, val_fraction: float) -> None:
    counts = np.bincount(y, minlength=N_CLASSES)
    k = holdout_sizes(counts, val_fraction)
    if (k < 1).any() or (counts - k < 1).any():
        raise ConfigError(
            f"val_fraction {val_fraction} leaves a digit class without validation or training images; "
            "choose a value such as 0.1"
        )


# ---------------------------------------------------------------------------------------------- the builder
@register_dataset(NAME)
def build_colored_mnist(
    data_root: Path,
    cache_dir: Path,
    *,
    ratio: float = 0.01,
    protocol: str = "default",
    val_fraction: float = 0.1,
    data_seed: int = 0,
    sigma: float = SIGMA,
    download: bool = True,
) -> DatasetBundle:
    """Colored MNIST (LfF protocol): digit = class, colour = bias; ratio = conflicting fraction of train.

    ``protocol="default"`` holds out ``val_fraction`` of MNIST-train (stratified, seeded by ``data_seed``)
    before colouring, as an unbiased validation split; ``protocol="paper"`` colours all 60 000 training images
    and selects on the test split, as LfF / DeNetDM / REST do.
    """
    opts = _check_options(ratio, protocol, val_fraction, data_seed, sigma)
    ratio, protocol, val_fraction, data_seed, sigma = opts
    if not isinstance(download, bool):
        raise ConfigError(f"download {download!r} is not true or false")
    recipe = make_recipe(
        ratio=ratio,
        protocol=protocol,
        val_fraction=val_fraction,
        data_seed=data_seed,
        sigma=sigma,
    )
    recipe_json = json.dumps(recipe, sort_keys=True, separators=(",", ":"))
    key = recipe_hash(recipe)
    path = Path(cache_dir) / NAME / f"{key}.npz"

    def build() -> dict[str, np.ndarray]:
        mnist = load_mnist(data_root, download=download)
        if protocol == "default":
            check_holdout_sizes(mnist.train_y, val_fraction)
        return colorize_mnist(mnist, recipe)

    arrays = cached_arrays(path, recipe_json, split_names(protocol), "Colored MNIST", lambda chw: chw[0] == 3, build)
    splits = {s: _group_dataset(arrays, s) for s in split_names(protocol)}
    return protocol_bundle(
        NAME,
        "Colored MNIST",
        splits,
        protocol,
        {**recipe, "recipe_sha256": key},
        "mlp",
        "the coloured MNIST test split, which is also the reported split (as in LfF, DeNetDM and REST)",
    )


def _group_dataset(arrays: dict[str, np.ndarray], split: str) -> GroupDataset:
    return GroupDataset(
        x=torch.from_numpy(arrays[f"{split}_x"]),
        y=torch.from_numpy(arrays[f"{split}_y"]),
        attr=torch.from_numpy(arrays[f"{split}_attr"]),
        n_classes=N_CLASSES,
        n_attrs=N_CLASSES,
        transform=ToFloat(255.0),
        name=NAME,
        split=split,
    )
