"""Colored MNIST (LfF protocol) on real MNIST: split sizes, colours, protocols, determinism, cache, errors."""

from __future__ import annotations

import logging
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from debiaslab.data import DatasetBundle, build_dataset
from debiaslab.data.colored_mnist import (
    EVAL_ALIGNED_RATIO,
    MEAN_COLOURS,
    SIGMA,
    bias_attributes,
    colorize_mnist,
    make_recipe,
    stratified_holdout,
)
from debiaslab.data.mnist import MnistArrays, load_mnist
from debiaslab.errors import ConfigError, DataError

TRAIN_COUNTS = np.array([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
TEST_COUNTS = np.array([980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
# (aligned, conflicting) training images on all 60 000 (paper protocol), from the spec.
LFF_SIZES = {0.005: (59700, 300), 0.01: (59402, 598), 0.02: (58801, 1199), 0.05: (57000, 3000)}

Factory = Callable[..., DatasetBundle]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests never download: any attempt to reach a host fails the test."""

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a test tried to reach {urllib.parse.urlsplit(str(url)).hostname}")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


@pytest.fixture(scope="session")
def mnist(data_root: Path) -> MnistArrays:
    return load_mnist(data_root, download=False)


@pytest.fixture(scope="session")
def cmnist(data_root: Path, cache_dir: Path) -> Factory:
    """``cmnist(ratio, protocol)``: each recipe is built at most once per session."""
    built: dict[tuple[float, str], DatasetBundle] = {}

    def get(ratio: float = 0.01, protocol: str = "default") -> DatasetBundle:
        if (ratio, protocol) not in built:
            built[ratio, protocol] = build_dataset(
                "colored_mnist", data_root, cache_dir, ratio=ratio, protocol=protocol, download=False
            )
        return built[ratio, protocol]

    return get


def cells(split) -> np.ndarray:
    """(digit, colour) counts as a 10 x 10 array."""
    return split.group_counts.view(10, 10).numpy()


def recovered_colours(x: np.ndarray, grey: np.ndarray) -> np.ndarray:
    """Each image's colour, read at its brightest grey pixel: (N, 3) in [0, 1]."""
    flat_grey = grey.reshape(len(grey), -1)
    pix = flat_grey.argmax(1)
    rows = np.arange(len(grey))
    g = flat_grey[rows, pix].astype(np.float64)
    return x.reshape(len(x), 3, -1)[rows, :, pix] / g[:, None]


# ---------------------------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("ratio", sorted(LFF_SIZES))
def test_paper_protocol_lff_split_sizes(cmnist: Factory, ratio: float) -> None:
    b = cmnist(ratio, "paper")
    aligned = int(b.train.is_aligned.sum())
    assert (aligned, len(b.train) - aligned) == LFF_SIZES[ratio]
    assert len(b.train) == 60000 and len(b.test) == 10000
    assert b.train.class_counts.tolist() == TRAIN_COUNTS.tolist()


def test_paper_protocol_selects_on_test_and_says_so(cmnist: Factory) -> None:
    b = cmnist(0.01, "paper")
    assert b.protocol == "paper" and b.selection == "test"
    assert b.val is b.test and b.selection_split is b.test
    assert any("test" in n and "select" in n for n in b.notes)
    assert b.recipe["protocol"] == "paper" and b.recipe["ratio"] == 0.01 and b.default_model == "mlp"


def test_default_protocol_holds_out_stratified_val(cmnist: Factory) -> None:
    b = cmnist(0.01, "default")
    assert b.protocol == "default" and b.selection == "val" and b.notes == []
    assert len(b.val) == 6000 and len(b.train) == 54000 and len(b.test) == 10000
    val_counts = b.val.class_counts.numpy()
    assert np.all(np.abs(val_counts - 0.1 * TRAIN_COUNTS) < 1)  # stratified by digit
    assert (val_counts + b.train.class_counts.numpy()).tolist() == TRAIN_COUNTS.tolist()
    conflicting = len(b.train) - int(b.train.is_aligned.sum())
    assert abs(conflicting - 0.01 * 54000) <= 10  # milestone rounding: at most one per class
    assert b.recipe["val_fraction"] == 0.1 and b.recipe["data_seed"] == 0


@pytest.mark.parametrize("protocol", ["default", "paper"])
def test_eval_colours_are_independent_of_the_digit(cmnist: Factory, protocol: str) -> None:
    b = cmnist(0.01, protocol)
    for split in dict.fromkeys([b.val, b.test]):
        c = cells(split)
        n = c.sum(1, keepdims=True)
        assert np.all(np.abs(c - n / 10) < 1), split  # each digit x colour cell holds n_c / 10 images
        assert c.min() > 0


@pytest.mark.parametrize("protocol", ["default", "paper"])
def test_assignment_is_blockwise_in_dataset_order(cmnist: Factory, protocol: str) -> None:
    """The milestone rule gives each class contiguous runs of colours 0, 1, ..., 9 in dataset order."""
    b = cmnist(0.01, protocol)
    for split in (b.train, b.val, b.test):
        for c in range(10):
            attr = split.attr[split.y == c].numpy()
            assert np.all(np.diff(attr) >= 0)


def test_milestone_rule_on_small_classes() -> None:
    y = np.array([0] * 10 + [1] * 10)
    np.testing.assert_array_equal(bias_attributes(y, EVAL_ALIGNED_RATIO), np.concatenate([np.arange(10)] * 2))
    y = np.repeat(np.arange(10), 100)
    attr = bias_attributes(y, 0.91)  # 91 aligned, 1 of each other colour
    cell_counts = np.bincount(y * 10 + attr, minlength=100).reshape(10, 10)
    assert cell_counts.tolist() == (np.eye(10, dtype=int) * 90 + 1).tolist()


def test_stratified_holdout_sizes_and_seed() -> None:
    y = np.repeat(np.arange(3), [5, 7, 9])
    mask = stratified_holdout(y, 0.5, np.random.default_rng(0))
    assert mask.sum() == round(21 * 0.5)
    assert np.bincount(y[mask]).tolist() in ([2, 4, 4], [3, 3, 4], [3, 4, 3])
    again = stratified_holdout(y, 0.5, np.random.default_rng(0))
    np.testing.assert_array_equal(mask, again)


# ---------------------------------------------------------------------------------------------- colours
def test_every_image_has_its_attribute_colour(cmnist: Factory, mnist: MnistArrays) -> None:
    b = cmnist(0.01, "paper")  # train order = MNIST order, so the grey digits are known
    x, y, attr = b.train.x.numpy(), b.train.y.numpy(), b.train.attr.numpy()
    np.testing.assert_array_equal(y, mnist.train_y)
    col = recovered_colours(x, mnist.train_x)
    g = mnist.train_x.reshape(60000, -1).max(1)[:, None]
    err = col - MEAN_COLOURS[attr]
    assert np.all(np.abs(err) <= 6 * SIGMA + 1 / g)  # truncation loses at most one grey level
    nearest = np.argmin(((col[:, None, :] - MEAN_COLOURS[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(nearest, attr)
    aligned = b.train.is_aligned.numpy()
    np.testing.assert_array_equal(nearest[aligned], y[aligned])  # aligned: dominant colour = digit's colour
    # the noise is there (per-image colours differ) and has about the spec's sigma
    inner = (MEAN_COLOURS[attr] > 0.05) & (MEAN_COLOURS[attr] < 0.95)
    assert 0.6 * SIGMA < err[inner].std() < 1.5 * SIGMA


def test_pixels_are_colour_times_grey_truncated(cmnist: Factory, mnist: MnistArrays) -> None:
    """With the colour bracketed by the brightest pixel, every pixel is floor(colour * grey)."""
    b = cmnist(0.01, "paper")
    n = 3000
    x = b.train.x[:n].numpy().reshape(n, 3, -1).astype(np.float64)
    grey = mnist.train_x[:n].reshape(n, -1).astype(np.float64)
    pix = grey.argmax(1)
    rows = np.arange(n)
    gmax, xmax = grey[rows, pix][:, None], x[rows, :, pix]
    lo, hi = xmax / gmax, (xmax + 1) / gmax  # truncation: floor(c * gmax) = xmax
    lower = np.floor(lo[:, :, None] * grey[:, None, :] + 1e-9)  # c * g >= lo * g
    upper = np.maximum(np.ceil(hi[:, :, None] * grey[:, None, :] - 1e-9) - 1, 0)  # c * g < hi * g
    assert np.all(x >= lower) and np.all(x <= upper)
    assert np.all(x[np.broadcast_to(grey[:, None, :] == 0, x.shape)] == 0)  # black stays black


def test_inputs_are_float_chw_in_unit_range(cmnist: Factory) -> None:
    b = cmnist(0.01, "default")
    assert b.train.x.dtype == torch.uint8 and b.train.x.shape[1:] == (3, 28, 28)
    batch = b.train.batch(torch.arange(5))
    assert batch.x.dtype == torch.float32 and batch.x.shape == (5, 3, 28, 28)
    torch.testing.assert_close(batch.x, b.train.x[:5].float() / 255)
    assert b.train.input_shape == (3, 28, 28)
    assert b.train.n_classes == b.train.n_attrs == 10
    assert b.train.aligned_groups == {11 * c for c in range(10)}


# ---------------------------------------------------------------------------------------------- determinism
def test_same_recipe_gives_byte_identical_arrays(cmnist: Factory, mnist: MnistArrays) -> None:
    recipe = make_recipe(ratio=0.01, protocol="default", val_fraction=0.1, data_seed=0, sigma=SIGMA)
    first, second = colorize_mnist(mnist, recipe), colorize_mnist(mnist, recipe)
    assert first.keys() == second.keys()
    for k in first:
        assert first[k].dtype == second[k].dtype and first[k].tobytes() == second[k].tobytes(), k
    b = cmnist(0.01, "default")  # built (or cached) by the registry path: the same bytes
    for split in ("train", "val", "test"):
        ds = getattr(b, split)
        assert ds.x.numpy().tobytes() == first[f"{split}_x"].tobytes()
        np.testing.assert_array_equal(ds.attr.numpy(), first[f"{split}_attr"])


def test_data_seed_changes_noise_not_assignment() -> None:
    rng = np.random.default_rng(1)
    tiny = MnistArrays(
        train_x=rng.integers(0, 256, (200, 28, 28), dtype=np.uint8),
        train_y=np.repeat(np.arange(10), 20),
        test_x=rng.integers(0, 256, (50, 28, 28), dtype=np.uint8),
        test_y=np.repeat(np.arange(10), 5),
    )
    common = {"ratio": 0.1, "val_fraction": 0.1, "sigma": SIGMA}
    r0, r1 = (make_recipe(protocol="paper", data_seed=s, **common) for s in (0, 1))
    a, b = colorize_mnist(tiny, r0), colorize_mnist(tiny, r1)
    np.testing.assert_array_equal(a["train_attr"], b["train_attr"])
    assert not np.array_equal(a["train_x"], b["train_x"])
    # the test split does not depend on the protocol (its own random stream)
    d = colorize_mnist(tiny, make_recipe(protocol="default", data_seed=0, **common))
    assert a["test_x"].tobytes() == d["test_x"].tobytes()
    assert len(d["val_y"]) == 20 and np.bincount(d["val_y"]).tolist() == [2] * 10


# ---------------------------------------------------------------------------------------------- cache
def test_cache_is_hit_and_a_corrupt_cache_is_rebuilt(
    data_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    opts = {"ratio": 0.05, "protocol": "paper", "data_seed": 3}
    first = build_dataset("colored_mnist", data_root, cache, **opts)
    files = list((cache / "colored_mnist").glob("*.npz"))
    assert len(files) == 1 and files[0].stem == first.recipe["recipe_sha256"]
    # a second build needs no MNIST at all: it comes from the cache
    again = build_dataset("colored_mnist", tmp_path / "no-data", cache, download=False, **opts)
    assert torch.equal(again.train.x, first.train.x) and torch.equal(again.test.attr, first.test.attr)
    # a different recipe is a different file
    with pytest.raises(DataError, match="not found"):
        other = {**opts, "data_seed": 4}
        build_dataset("colored_mnist", tmp_path / "no-data", cache, download=False, **other)
    # corrupt the cache: rebuilt from MNIST with a warning, and the file is good again
    raw = files[0].read_bytes()
    files[0].write_bytes(raw[: len(raw) // 3])
    with caplog.at_level(logging.WARNING, logger="debiaslab.data.colored_mnist"):
        rebuilt = build_dataset("colored_mnist", data_root, cache, **opts)
    assert any("unreadable" in r.getMessage() and str(files[0]) in r.getMessage() for r in caplog.records)
    assert torch.equal(rebuilt.train.x, first.train.x)
    assert files[0].stat().st_size == len(raw)
    # one flipped byte inside an array: caught by the zip CRC, not silently loaded
    flipped = bytearray(raw)
    flipped[len(raw) // 2] ^= 0xFF
    files[0].write_bytes(bytes(flipped))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="debiaslab.data.colored_mnist"):
        assert torch.equal(build_dataset("colored_mnist", data_root, cache, **opts).train.x, first.train.x)
    assert any("unreadable" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    ("opts", "expected"),
    [
        ({"ratio": 1.5}, r"ratio 1\.5 is outside \(0, 1\); the fraction of bias-conflicting .* e\.g\. 0\.01"),
        ({"ratio": 0}, r"ratio 0\.0 is outside \(0, 1\)"),
        ({"ratio": 1.0}, r"ratio 1\.0 is outside \(0, 1\)"),
        ({"ratio": "abc"}, r"option ratio='abc': expected float"),
        ({"ratio": True}, r"option ratio=True: expected float \(got a true/false value\)"),
        ({"protocol": "lff"}, r"protocol 'lff'; expected one of: default, paper"),
        ({"val_fraction": 0.0}, r"val_fraction 0\.0 is outside \(0, 1\)"),
        ({"val_fraction": 1}, r"val_fraction 1\.0 is outside \(0, 1\)"),
        ({"val_fraction": 1e-5}, r"val_fraction 1e-05 leaves a digit class without validation"),
        ({"data_seed": -1}, r"data_seed -1 is not a non-negative integer"),
        ({"sigma": -0.1}, r"sigma -0\.1 is outside \[0, 1\]"),
        ({"foo": 1}, r"dataset 'colored_mnist' has no option 'foo'; expected some of: ratio, protocol"),
    ],
)
def test_bad_options_are_config_errors(opts: dict, expected: str, data_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=expected):
        build_dataset("colored_mnist", data_root, tmp_path, **opts)
    assert not (tmp_path / "colored_mnist").exists()


def test_ratio_given_as_string_is_accepted(cmnist: Factory, data_root: Path, cache_dir: Path) -> None:
    """YAML parses ``ratio=1e-2`` from ``--data-opt`` as a string."""
    b = build_dataset("colored_mnist", data_root, cache_dir, ratio="1e-2", download=False)
    assert b.recipe["recipe_sha256"] == cmnist(0.01, "default").recipe["recipe_sha256"]
