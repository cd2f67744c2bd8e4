"""Biased MNIST under the ReBias protocol (Bahng et al., ICML 2020): the *background* colour is the bias.

Each digit class c has its own colour (``BACKGROUND_COLOURS[c]``). Every MNIST pixel that is not 0 becomes pure
white and every pixel that is 0 takes the image's colour, so colour and shape occupy different pixels (unlike
Colored MNIST, where the colour is multiplied into the digit's own strokes).

Colours are assigned by fixed counts per class, as in the release (``datasets/colour_mnist.py`` of
clovaai/rebias): the class's images are shuffled; the first ``int(n * rho)`` get the class's own colour; the rest
are cut into chunks of ``ceil((n - int(n * rho)) / 9)`` images, each chunk given one of the other nine colours in
a random order (so at ``rho = 0.999`` a class sees only 6-7 other colours). Evaluation splits use ``rho = 0.1``
(the release's "unbiased" test set, colour independent of the digit).

Protocols: ``paper`` colours all 60 000 training images (the release, which has no validation split and keeps
the best epoch on the unbiased test set); ``default`` first holds out a validation split from MNIST-train
(stratified by digit, seeded), coloured unbiased like the test set, and selects on it. The release seeds nothing;
here every shuffle is drawn from ``data_seed``.

Pixels are stored as uint8 ``(N, 3, 28, 28)`` and fed to the model as ``(x / 255 - 0.5) / 0.5``, the release's
normalisation. Built arrays are cached under ``<cache_dir>/biased_mnist/<recipe hash>.npz``.
"""

from __future__ import annotations

import logging
import math
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
    seeded_rng,
)
from debiaslab.data.mnist import MNIST_SHA256, MnistArrays, load_mnist
from debiaslab.data.transforms import Compose, Normalize, ToFloat
from debiaslab.errors import ConfigError

log = logging.getLogger(__name__)

NAME = "biased_mnist"
FORMAT_VERSION = 1
N_CLASSES = 10
N_CONFUSING = 9  # the release's n_confusing_labels: every other colour can appear
EVAL_RHO = 0.1  # the release's unbiased evaluation setting
#: ReBias's background colour (RGB, 0-255) of each digit class; entries 3 and 4 really are 225, as released.
BACKGROUND_COLOURS = np.array(
    [
        [255, 0, 0],
        [0, 255, 0],
        [0, 0, 255],
        [225, 225, 0],
        [225, 0, 225],
        [0, 255, 255],
        [255, 128, 0],
        [255, 0, 128],
        [128, 0, 255],
        [128, 128, 128],
    ],
    dtype=np.uint8,
)
#: The training correlations of the ReBias paper's Table 1.
PAPER_RHOS: tuple[float, ...] = (0.999, 0.997, 0.995, 0.99)


# ---------------------------------------------------------------------------------------------- the recipe
def background_attributes(y: np.ndarray, rho: float, rng: np.random.Generator) -> np.ndarray:
    """Colour index per example by the release's fixed-count rule (see the module docstring)."""
    y = np.asarray(y)
    attr = np.empty(y.shape, dtype=np.int64)
    for c in range(N_CLASSES):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_own = int(len(idx) * rho)
        attr[idx[:n_own]] = c
        rest = idx[n_own:]
        if len(rest) == 0:
            continue
        chunk = math.ceil(len(rest) / N_CONFUSING)
        others = rng.permutation([(c + j) % N_CLASSES for j in range(1, N_CONFUSING + 1)])
        for j, start in enumerate(range(0, len(rest), chunk)):
            attr[rest[start : start + chunk]] = others[j]
    return attr


def colour_background(grey: np.ndarray, attr: np.ndarray) -> np.ndarray:
    """uint8 ``(N, 3, H, W)``: pixels ≠ 0 of the grey digits become white, pixels = 0 their image's colour."""
    digit = (grey != 0)[:, None, :, :]
    colour = BACKGROUND_COLOURS[attr][:, :, None, None]
    return np.where(digit, np.uint8(255), colour).astype(np.uint8)


def make_recipe(*, rho: float, protocol: str, val_fraction: float, data_seed: int) -> dict[str, Any]:
    """Everything that determines the arrays (and so the cache key). Options must already be validated."""
    return {
        "dataset": NAME,
        "format_version": FORMAT_VERSION,
        "protocol": protocol,
        "rho": rho,
        "eval_rho": EVAL_RHO,
        "n_confusing": N_CONFUSING,
        "val_fraction": val_fraction if protocol == "default" else None,
        "data_seed": data_seed,
        "colours": BACKGROUND_COLOURS.tolist(),
        "mnist_sha256": dict(sorted(MNIST_SHA256.items())),
    }


def colour_mnist(mnist: MnistArrays, recipe: dict[str, Any]) -> dict[str, np.ndarray]:
    """The split arrays ``{split}_x`` (uint8 N,3,28,28), ``{split}_y``, ``{split}_attr`` for a recipe.

    ``val_*`` exists only under the default protocol. The same recipe gives byte-identical arrays.
    """
    seed = recipe["data_seed"]

    def make(split: str, x: np.ndarray, y: np.ndarray, stream: int) -> tuple[np.ndarray, np.ndarray]:
        rho = recipe["rho" if split == "train" else "eval_rho"]
        attr = background_attributes(y, rho, seeded_rng(seed, stream))
        return colour_background(x, attr), attr

    return derive_splits((mnist.train_x, mnist.train_y), (mnist.test_x, mnist.test_y), recipe, make)


# ---------------------------------------------------------------------------------------------- options
def _check_options(rho: Any, protocol: Any, val_fraction: Any, data_seed: Any) -> tuple[float, str, float, int]:
    rho_what = "the share of training images with their class's own background colour, e.g. 0.99 (ReBias: 0.99-0.999)"
    r = check_number("rho", rho, rho_what, bounds="(]")
    return (r, *check_protocol_options("Biased MNIST", "MNIST", protocol, val_fraction, data_seed))


# ---------------------------------------------------------------------------------------------- the builder
@register_dataset(NAME)
def build_biased_mnist(
    data_root: Path,
    cache_dir: Path,
    *,
    rho: float = 0.99,
    protocol: str = "default",
    val_fraction: float = 0.1,
    data_seed: int = 0,
    download: bool = True,
) -> DatasetBundle:
    """Biased MNIST (ReBias protocol): digit = class, background colour = bias, rho = colour-label correlation.

    ``protocol="default"`` holds out ``val_fraction`` of MNIST-train (stratified, seeded) as an unbiased
    validation split; ``protocol="paper"`` colours all 60 000 training images and selects on the unbiased test
    split, as the ReBias release does.
    """
    rho, protocol, val_fraction, data_seed = _check_options(rho, protocol, val_fraction, data_seed)
    if not isinstance(download, bool):
        raise ConfigError(f"download {download!r} is not true or false")
    recipe = make_recipe(rho=rho, protocol=protocol, val_fraction=val_fraction, data_seed=data_seed)

    transform = Compose([ToFloat(255.0), Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    return derived_bundle(
        NAME,
        "Biased MNIST",
        recipe,
        cache_dir,
        load=lambda: load_mnist(data_root, download=download),
        derive=lambda mnist: colour_mnist(mnist, recipe),
        image_shape_ok=lambda chw: chw == (3, 28, 28),
        n_classes=N_CLASSES,
        transforms=(transform, transform),
        default_model="mlp",
        test_described="the unbiased test split, which is also the reported split (as in the ReBias release)",
        kind="digit class",
    )
