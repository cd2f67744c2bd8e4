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

import logging
from pathlib import Path
from typing import Any

import numpy as np

from debiaslab.data.catalog import register_dataset
from debiaslab.data.core import DatasetBundle
from debiaslab.data.derived import (
    check_number,
    check_protocol_options,
    derive_splits,
    derived_bundle,
    holdout_sizes,
    recipe_hash,
    seeded_rng,
    stratified_holdout,
)
from debiaslab.data.mnist import MNIST_SHA256, MnistArrays, load_mnist
from debiaslab.data.transforms import ToFloat
from debiaslab.errors import ConfigError

__all__ = ["build_colored_mnist", "colorize_mnist", "holdout_sizes", "recipe_hash", "stratified_holdout"]

log = logging.getLogger(__name__)

NAME = "colored_mnist"
FORMAT_VERSION = 1
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


def colorize_mnist(mnist: MnistArrays, recipe: dict[str, Any]) -> dict[str, np.ndarray]:
    """The split arrays ``{split}_x`` (uint8 N,3,28,28), ``{split}_y``, ``{split}_attr`` (int64) for a recipe.

    ``val_*`` is present only under the default protocol (under ``paper`` the test split doubles as val).
    Deterministic: the same recipe gives byte-identical arrays.
    """
    seed, sigma = recipe["data_seed"], recipe["sigma"]

    def make(split: str, x: np.ndarray, y: np.ndarray, stream: int) -> tuple[np.ndarray, np.ndarray]:
        attr = bias_attributes(y, recipe["train_aligned_ratio" if split == "train" else "eval_aligned_ratio"])
        return colorize(x, attr, seeded_rng(seed, stream), sigma), attr

    return derive_splits((mnist.train_x, mnist.train_y), (mnist.test_x, mnist.test_y), recipe, make)


# ---------------------------------------------------------------------------------------------- options
def _check_options(
    ratio: Any, protocol: Any, val_fraction: Any, data_seed: Any, sigma: Any
) -> tuple[float, str, float, int, float]:
    r = check_number("ratio", ratio, "the fraction of bias-conflicting training examples, e.g. 0.01")
    p, vf, seed = check_protocol_options("Colored MNIST", "MNIST", protocol, val_fraction, data_seed)
    s = check_number("sigma", sigma, "the standard deviation of the per-image colour noise, 0.005 in LfF", bounds="[]")
    return r, p, vf, seed, s


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

    return derived_bundle(
        NAME,
        "Colored MNIST",
        recipe,
        cache_dir,
        load=lambda: load_mnist(data_root, download=download),
        derive=lambda mnist: colorize_mnist(mnist, recipe),
        image_shape_ok=lambda chw: chw[0] == 3,
        n_classes=N_CLASSES,
        transforms=(ToFloat(255.0), ToFloat(255.0)),
        default_model="mlp",
        test_described="the coloured MNIST test split, which is also the reported split (as in LfF, DeNetDM and REST)",
        kind="digit class",
    )
