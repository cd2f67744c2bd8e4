"""Corrupted CIFAR-10 (LfF protocol) from a generated CIFAR-10 copy, and the ten severity-5 corruptions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from debiaslab.data import build_dataset
from debiaslab.data import corrupted_cifar10 as cc
from debiaslab.data import corruptions as C
from debiaslab.data.cifar10 import load_cifar10
from debiaslab.data.colored_mnist import bias_attributes, stratified_holdout
from debiaslab.data.derived import STREAMS, seeded_rng
from debiaslab.errors import DataError
from debiaslab.methods.presets import DATASET_PRESETS
from fixture_trees import make_cifar10, write_image

pytestmark = pytest.mark.usefixtures("one_thread")


def images(n: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def rng(seed: int = 1) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------------------------------------- corruptions
def test_helpers_match_scipy_and_matplotlib() -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    colors = pytest.importorskip("matplotlib.colors")
    a = rng(0).normal(size=(2, 32, 32))
    for sigma, truncate, mode, scipy_mode in ((0.5, 4.0, "edge", "nearest"), (0.96, 3.0, "symmetric", "reflect")):
        ref = np.stack([ndimage.gaussian_filter(m, sigma, truncate=truncate, mode=scipy_mode) for m in a])
        assert np.allclose(C.gaussian_filter(a, sigma, truncate=truncate, mode=mode), ref, atol=1e-12)
    img = rng(2).random((1, 32, 32, 3))
    rows, cols = rng(3).uniform(-3, 35, (2, 1, 32, 32))
    for mode, scipy_mode in (("symmetric", "reflect"), ("reflect101", "mirror")):
        ref = np.stack(
            [ndimage.map_coordinates(img[0, ..., c], [rows[0], cols[0]], order=1, mode=scipy_mode) for c in range(3)],
            axis=-1,
        )
        assert np.allclose(C._bilinear(img, rows, cols, mode)[0], ref, atol=1e-12)
    # snow's zoom: crop ceil(32 / 1.25) = 26 central pixels, zoom by 1.25 with scipy's order-1 zoom
    ref = ndimage.zoom(a[0, 3:29, 3:29], 1.25, order=1)
    assert np.allclose(C._clipped_zoom(a, 1.25)[0], ref, atol=1e-12)
    x = rng(4).random((3, 5, 5, 3))
    assert np.allclose(C.rgb_to_hsv(x), colors.rgb_to_hsv(x), atol=1e-12)
    assert np.allclose(C.hsv_to_rgb(C.rgb_to_hsv(x)), x, atol=1e-12)


def test_photometric_corruptions_follow_their_formulas() -> None:
    x = images()
    f = x.astype(np.float64) / 255
    out = C.contrast(x, rng()).astype(np.float64) / 255
    mean = f.mean(axis=(1, 2), keepdims=True)
    assert np.allclose(out, (f - mean) * 0.15 + mean, atol=1 / 255 + 1e-9)
    hsv_in = C.rgb_to_hsv(f)
    hsv = C.rgb_to_hsv(C.brightness(x, rng()).astype(np.float64) / 255)
    assert np.allclose(hsv[..., 2], np.clip(hsv_in[..., 2] + 0.3, 0, 1), atol=1.5 / 255)
    hsv = C.rgb_to_hsv(C.saturate(x, rng()).astype(np.float64) / 255)
    assert np.median(np.abs(hsv[..., 1] - np.clip(hsv_in[..., 1] * 2.5 + 0.2, 0, 1))) < 0.02
    frost = C.Frost([np.full((50, 60, 3), 200, np.uint8)])(x, rng())
    assert np.array_equal(frost, np.clip(0.75 * x + 0.45 * 200, 0, 255).astype(np.uint8))


def test_motion_blur_is_a_one_sided_gaussian_streak() -> None:
    a = np.zeros((1, 32, 32))
    a[0, 16, 20] = 255.0
    out = C.motion_blur(a, radius=3, sigma=2, angles=np.array([0.0]))
    k = np.exp(-(np.arange(7) ** 2) / 8)
    k /= k.sum()
    assert np.allclose(out[0, 16, 14:21][::-1], 255 * k)  # reads i pixels to the right: streak to the left
    assert out[0].sum() == pytest.approx(255.0) and out[0, 15].sum() == 0 and out[0, 16, 21:].sum() == 0


def test_every_corruption_changes_images_deterministically() -> None:
    x = images(16)
    funcs = C.corruption_functions(C.synthetic_frost_textures(rng(5)))
    assert tuple(funcs) == C.CORRUPTIONS
    for name, fn in funcs.items():
        out = fn(x, rng(7))
        assert out.shape == x.shape and out.dtype == np.uint8, name
        assert np.abs(out.astype(int) - x).mean() > 2, name  # severity 5 is visible
        assert np.array_equal(out, fn(x, rng(7))), name
    plasma = C.plasma_fractal(3, 32, 1.75, rng())
    assert plasma.shape == (3, 32, 32) and plasma.min() == 0 and plasma.max() == 1


# ---------------------------------------------------------------------------------------------- the dataset
@pytest.fixture
def cifar_root(tmp_path: Path) -> Path:
    make_cifar10(tmp_path, per_class_per_batch=2, test_per_class=3)  # 100 training images, 30 test
    return tmp_path


def test_default_protocol_holds_out_validation_before_corrupting(cifar_root: Path, tmp_path: Path) -> None:
    b = build_dataset("corrupted_cifar10", cifar_root, tmp_path / "cache", ratio=0.2, frost="synthetic")
    assert (len(b.train), len(b.val), len(b.test)) == (90, 10, 30) and b.selection == "val"
    assert b.train.x.shape == (90, 3, 32, 32) and b.train.x.dtype == torch.uint8
    assert b.default_model == "resnet20" == DATASET_PRESETS["corrupted_cifar10"]["model"].value
    assert any("frost='synthetic'" in n for n in b.notes)
    cifar = load_cifar10(cifar_root / "cifar-10-batches-py")
    held = stratified_holdout(cifar.train_y, 0.1, seeded_rng(0, STREAMS["val_split"]))
    assert torch.equal(b.train.y, torch.from_numpy(cifar.train_y[~held]))
    assert torch.equal(b.train.attr, torch.from_numpy(bias_attributes(cifar.train_y[~held], 0.8)))
    assert torch.equal(b.val.attr, torch.from_numpy(bias_attributes(cifar.train_y[held], 0.1)))
    assert torch.equal(b.test.attr, torch.from_numpy(bias_attributes(cifar.test_y, 0.1)))
    assert b.train.aligned_groups == frozenset(c * 11 for c in range(10))
    assert b.test.batch(torch.arange(4)).x.dtype == torch.float32  # normalised float for the model


def test_corruption_k_is_applied_to_attribute_k(cifar_root: Path, tmp_path: Path) -> None:
    b = build_dataset("corrupted_cifar10", cifar_root, tmp_path / "cache", ratio=0.2, frost="synthetic",
                      protocol="paper")  # fmt: skip
    cifar = load_cifar10(cifar_root / "cifar-10-batches-py")
    x = b.train.x.permute(0, 2, 3, 1).numpy().astype(np.float64)
    clean = cifar.train_x.astype(np.float64)
    k = C.CORRUPTIONS.index("contrast")
    idx = np.flatnonzero(b.train.attr.numpy() == k)
    assert len(idx) > 0
    mean = clean[idx].mean(axis=(1, 2), keepdims=True)
    assert np.allclose(x[idx], (clean[idx] - mean) * 0.15 + mean, atol=1.0)
    assert b.selection == "test" and b.val is b.test and any("protocol='paper'" in n for n in b.notes)


def test_cache_is_reused_and_keyed_by_recipe(cifar_root: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    first = build_dataset("corrupted_cifar10", cifar_root, cache, ratio=0.2, frost="synthetic")
    assert len(list((cache / "corrupted_cifar10").glob("*.npz"))) == 1

    def boom(*args, **kwargs):
        raise AssertionError("rebuilt although the cache holds this recipe")

    monkeypatch.setattr(cc, "corrupt_cifar10", boom)
    again = build_dataset("corrupted_cifar10", cifar_root, cache, ratio=0.2, frost="synthetic")
    assert torch.equal(first.train.x, again.train.x)
    monkeypatch.undo()
    other = build_dataset("corrupted_cifar10", cifar_root, cache, ratio=0.2, frost="synthetic", data_seed=1)
    assert not torch.equal(first.train.x, other.train.x)
    assert len(list((cache / "corrupted_cifar10").glob("*.npz"))) == 2


def test_frost_images_are_required_unless_synthetic(cifar_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"needs the Frost texture images frost1\.png.*frost=synthetic"):
        build_dataset("corrupted_cifar10", cifar_root, tmp_path / "cache", ratio=0.2)
    for i, name in enumerate(C.FROST_FILES):
        write_image(cifar_root / "frost" / name, (200 + 10 * i, 220, 250), size=(300, 260))
    b = build_dataset("corrupted_cifar10", cifar_root, tmp_path / "cache", ratio=0.2)
    assert isinstance(b.recipe["frost"], dict) and set(b.recipe["frost"]) == set(C.FROST_FILES)
    assert not b.notes
    textures = C.load_frost_textures(cifar_root / "frost")
    assert textures[0].shape == (52, 60, 3)  # shrunk to 20 %


def test_missing_cifar_names_the_places_looked(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"CIFAR-10 \(python version\) not found.*cifar-10-batches-py"):
        build_dataset("corrupted_cifar10", tmp_path, tmp_path / "cache", frost="synthetic")
    folder = make_cifar10(tmp_path)
    (folder / "data_batch_3").unlink()
    with pytest.raises(DataError, match=r"data_batch_3 is missing"):
        build_dataset("corrupted_cifar10", tmp_path, tmp_path / "cache", frost="synthetic")
