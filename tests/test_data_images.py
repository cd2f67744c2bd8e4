"""Image benchmark loaders on tiny generated trees in their published layouts: Waterbirds, CelebA, the DFA folders
(Colored MNIST, Corrupted CIFAR-10, BFFHQ) and the lazy image backend. Never touches the network."""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from debiaslab.data import build_dataset
from debiaslab.data.images import DecodeSpec, ImageFiles
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, DataError
from debiaslab.methods.presets import DATASET_PRESETS
from debiaslab.models import build_model
from fixture_trees import (
    CELEBA_ATTRS,
    CELEBA_COUNTS,
    WATERBIRDS_COUNTS,
    colour,
    make_celeba,
    make_dfa,
    make_waterbirds,
    write_csv,
    write_image,
)

pytestmark = pytest.mark.usefixtures("one_thread")

WB = {"image_size": 8, "resize": 10, "normalize": "none"}
CELEBA = {"image_size": 8, "crop": 20, "normalize": "none"}


def red_green(ds) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean red and green of every image of a split, in 0..255 (the fixtures encode y and attr in them)."""
    x = ds.batch(torch.arange(len(ds))).x.float()
    scale = 255.0 if x.max() <= 1.0 else 1.0
    return x[:, 0].mean((1, 2)) * scale, x[:, 1].mean((1, 2)) * scale


def assert_pixels_match_labels(ds) -> None:
    red, green = red_green(ds)
    expected = [colour(int(y), int(a)) for y, a in zip(ds.y, ds.attr)]
    assert torch.allclose(red, torch.tensor([c[0] for c in expected], dtype=torch.float32), atol=4)
    assert torch.allclose(green, torch.tensor([c[1] for c in expected], dtype=torch.float32), atol=4)


# ---------------------------------------------------------------------------------------------- Waterbirds
@pytest.fixture
def waterbirds_root(tmp_path: Path) -> Path:
    return make_waterbirds(tmp_path / "waterbirds")


def test_waterbirds_groups_splits_and_pixels(waterbirds_root: Path, tmp_path: Path) -> None:
    b = build_dataset("waterbirds", tmp_path, tmp_path / "cache", **WB)
    assert b.name == "waterbirds" and b.default_model == "resnet50" and b.selection == "val"
    for name, sid in (("train", 0), ("val", 1), ("test", 2)):
        ds = b.splits()[name]
        assert ds.group_counts.tolist() == WATERBIRDS_COUNTS[sid], name
        assert (ds.n_classes, ds.n_attrs, ds.input_shape) == (2, 2, (3, 8, 8))
        assert ds.loader is not None and ds.x is None  # lazy
        assert_pixels_match_labels(ds)
    assert b.train.aligned_groups == frozenset({0, 3})  # (landbird, land), (waterbird, water)
    assert b.recipe["class_names"] == ["landbird", "waterbird"]
    assert DATASET_PRESETS["waterbirds"]["model"].value == b.default_model


def test_waterbirds_imagenet_normalisation_and_augment(waterbirds_root: Path, tmp_path: Path) -> None:
    b = build_dataset("waterbirds", tmp_path, tmp_path / "cache", image_size=8, resize=10, augment=True)
    x = b.test.batch(torch.arange(len(b.test))).x
    red = torch.tensor([colour(int(y), 0)[0] for y in b.test.y]) / 255.0
    assert torch.allclose(x[:, 0].mean((1, 2)), (red - 0.485) / 0.229, atol=0.05)
    torch.manual_seed(0)
    assert b.train.batch(torch.arange(4)).x.shape == (4, 3, 8, 8)  # random resized crops, flips


def test_waterbirds_preload_matches_lazy(waterbirds_root: Path, tmp_path: Path) -> None:
    lazy = build_dataset("waterbirds", tmp_path, tmp_path / "cache", **WB)
    eager = build_dataset("waterbirds", tmp_path, tmp_path / "cache", **WB, preload=True, workers=0)
    assert eager.train.x is not None
    idx = torch.tensor([3, 0, 7])
    assert torch.equal(lazy.train.batch(idx).x, eager.train.batch(idx).x)
    assert torch.equal(lazy.train.subset(idx).batch(torch.arange(3)).x, lazy.train.batch(idx).x)


def test_waterbirds_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"waterbirds: metadata\.csv not found.*--data-opt root="):
        build_dataset("waterbirds", tmp_path, tmp_path / "cache")


def test_waterbirds_missing_column(waterbirds_root: Path, tmp_path: Path) -> None:
    write_csv(waterbirds_root / "metadata.csv", ["img_filename", "y", "split"], [["a.jpg", 0, 0]])
    with pytest.raises(DataError, match=r"metadata\.csv has no column 'place'"):
        build_dataset("waterbirds", tmp_path, tmp_path / "cache", **WB)


def _edit_metadata(root: Path, line: int, column: str, value: object) -> None:
    import csv

    with open(root / "metadata.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    rows[line - 1][rows[0].index(column)] = str(value)
    write_csv(root / "metadata.csv", rows[0], rows[1:])


def test_waterbirds_label_outside_classes_names_the_line(waterbirds_root: Path, tmp_path: Path) -> None:
    _edit_metadata(waterbirds_root, 5, "y", 2)
    with pytest.raises(DataError, match=r"metadata\.csv line 5, column 'y': value 2 is not one of 0, 1"):
        build_dataset("waterbirds", tmp_path, tmp_path / "cache", **WB)


def test_waterbirds_missing_image_names_file_and_line(waterbirds_root: Path, tmp_path: Path) -> None:
    (waterbirds_root / "001.Bird" / "s0_g0_1.jpg").unlink()
    with pytest.raises(DataError, match=r"s0_g0_1\.jpg \(.*metadata\.csv line 3\)"):
        build_dataset("waterbirds", tmp_path, tmp_path / "cache", **WB)


def test_waterbirds_undecodable_image_fails_at_load_naming_it(waterbirds_root: Path, tmp_path: Path) -> None:
    (waterbirds_root / "002.Bird" / "s2_g3_1.jpg").write_bytes(b"not a jpeg at all")
    b = build_dataset("waterbirds", tmp_path, tmp_path / "cache", **WB)  # lazy: builds
    b.train.batch(torch.arange(len(b.train)))  # other splits are fine
    with pytest.raises(DataError, match=r"cannot decode image .*s2_g3_1\.jpg \(.*metadata\.csv line \d+\)"):
        b.test.batch(torch.arange(len(b.test)))
    with pytest.raises(DataError, match=r"s2_g3_1\.jpg"):  # verify=true finds it up front
        build_dataset("waterbirds", tmp_path, tmp_path / "cache", **WB, verify=True)


def test_waterbirds_empty_split_is_an_error(tmp_path: Path) -> None:
    make_waterbirds(tmp_path / "waterbirds", counts={0: [1, 1, 1, 1], 2: [1, 1, 1, 1]})
    with pytest.raises(DataError, match=r"metadata\.csv has no val rows"):
        build_dataset("waterbirds", tmp_path, tmp_path / "cache", **WB)


def test_empty_test_group_warns_and_is_nan_in_the_table(tmp_path: Path, caplog) -> None:
    make_waterbirds(tmp_path / "waterbirds", counts={0: [2, 1, 1, 2], 1: [1, 1, 1, 1], 2: [2, 0, 1, 2]})
    with caplog.at_level(logging.WARNING, logger="debiaslab.data"):
        b = build_dataset("waterbirds", tmp_path, tmp_path / "cache", **WB)
    assert any("waterbirds/test: group(s) 1 (y=0, attr=1) have no examples" in r.getMessage() for r in caplog.records)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    report = Trainer(progress=False).evaluate(model, b.test, model, train_group_counts=b.train.group_counts)
    assert report.rows[1].n == 0 and math.isnan(report.rows[1].accuracy)
    assert all(not math.isnan(report.rows[g].accuracy) for g in (0, 2, 3))
    assert not math.isnan(report.metrics["worst_group"]) and not math.isnan(report.metrics["weighted_group"])


def test_pretrained_weights_that_are_not_there(waterbirds_root: Path, tmp_path: Path) -> None:
    b = build_dataset("waterbirds", tmp_path, tmp_path / "cache", **WB)
    missing = tmp_path / "resnet50-imagenet.pth"
    with pytest.raises(ConfigError, match=r"resnet50-imagenet\.pth but no such file"):
        build_model(b.default_model, b.train.input_shape, b.train.n_classes, pretrained=str(missing))


# ---------------------------------------------------------------------------------------------- CelebA
@pytest.mark.parametrize("fmt", ["csv", "txt"])
def test_celeba_groups_and_splits(tmp_path: Path, fmt: str) -> None:
    make_celeba(tmp_path / "celeba", fmt)
    b = build_dataset("celeba", tmp_path, tmp_path / "cache", **CELEBA)
    for name, sid in (("train", 0), ("val", 1), ("test", 2)):
        ds = b.splits()[name]
        assert ds.group_counts.tolist() == CELEBA_COUNTS[sid], name
        assert ds.input_shape == (3, 8, 8)
        assert_pixels_match_labels(ds)  # Blond_Hair in red, Male in green: -1/1 became 0/1
    assert b.train.aligned_groups == frozenset()  # no aligned attribute value in CelebA
    assert b.default_model == "resnet50" and b.recipe["target"] == "Blond_Hair"
    assert DATASET_PRESETS["celeba"]["model"].value == b.default_model


def test_celeba_other_target_and_kaggle_nesting(tmp_path: Path) -> None:
    root = make_celeba(tmp_path / "celeba")
    (root / "img_align_celeba").rename(root / "inner")
    (root / "img_align_celeba").mkdir()
    (root / "inner").rename(root / "img_align_celeba" / "img_align_celeba")
    b = build_dataset("celeba", tmp_path, tmp_path / "cache", target="Smiling", attribute="Male", **CELEBA)
    n = sum(sum(c) for c in CELEBA_COUNTS.values())
    smiling = [i % 2 for i in range(1, n + 1)]
    assert torch.cat([b.train.y, b.val.y, b.test.y]).sum().item() == sum(smiling)


def test_celeba_bad_input(tmp_path: Path) -> None:
    root = make_celeba(tmp_path / "celeba")
    with pytest.raises(DataError, match=r"list_attr_celeba\.csv has no column 'Wavy_Hair'.*Blond_Hair"):
        build_dataset("celeba", tmp_path, tmp_path / "cache", target="Wavy_Hair", **CELEBA)
    text = (root / "list_attr_celeba.csv").read_text().splitlines()
    fields = text[3].split(",")
    fields[1 + CELEBA_ATTRS.index("Male")] = "2"
    text[3] = ",".join(fields)
    (root / "list_attr_celeba.csv").write_text("\n".join(text) + "\n")
    with pytest.raises(DataError, match=r"list_attr_celeba\.csv line 4, column 'Male': value 2 is not one of"):
        build_dataset("celeba", tmp_path, tmp_path / "cache", **CELEBA)


def test_celeba_image_missing_from_partition(tmp_path: Path) -> None:
    root = make_celeba(tmp_path / "celeba")
    lines = (root / "list_eval_partition.csv").read_text().splitlines()
    (root / "list_eval_partition.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DataError, match=r"line \d+: image '0000\d\d\.jpg' is not listed in .*list_eval_partition"):
        build_dataset("celeba", tmp_path, tmp_path / "cache", **CELEBA)


# ---------------------------------------------------------------------------------------------- DFA folders
def _cmnist(tmp_path: Path) -> Path:
    return make_dfa(
        tmp_path / "cmnist", pcts={"1pct": (3, 1), "5pct": (2, 2)}, n_val=2, n_test=4, classes=[0, 1, 2],
        n_attrs=10, valid_in_pct=True, valid_class_folders=False, test_class_folders=True,
    )  # fmt: skip


def test_dfa_cmnist_labels_from_names(tmp_path: Path) -> None:
    _cmnist(tmp_path)
    b = build_dataset("dfa_cmnist", tmp_path, tmp_path / "cache", ratio=0.05)
    assert b.recipe["folder"] == "5pct" and b.default_model == "mlp"
    train = b.train.group_counts.view(10, 10)
    for c in range(3):
        assert train[c, c] == 2  # aligned
        assert train[c].sum() == 4  # + 2 conflicting
    assert len(b.val) == 6 and len(b.test) == 12
    assert b.test.is_aligned.sum() == 6
    assert b.train.x is not None  # small: decoded into memory (preload=auto)
    for ds in b.splits().values():
        assert_pixels_match_labels(ds)
    one = build_dataset("dfa_cmnist", tmp_path, tmp_path / "cache", ratio="1pct")
    assert one.train.group_counts.view(10, 10)[0, 0] == 3 and len(one.train) == 12


def test_dfa_cifar10c_valid_in_class_folders(tmp_path: Path) -> None:
    make_dfa(
        tmp_path / "cifar10c", pcts={"0.5pct": (2, 1)}, n_val=2, n_test=2, classes=list(range(10)), n_attrs=10,
        valid_in_pct=True, valid_class_folders=True, test_class_folders=True,
    )  # fmt: skip
    b = build_dataset("dfa_cifar10c", tmp_path, tmp_path / "cache", ratio=0.005, normalize="none", augment=False)
    assert (len(b.train), len(b.val), len(b.test)) == (30, 20, 20)
    assert b.train.is_aligned.sum() == 20 and b.default_model == "resnet18"
    assert_pixels_match_labels(b.val)


def test_bffhq_layout_and_conflicting_test(tmp_path: Path) -> None:
    make_dfa(
        tmp_path / "bffhq", pcts={"0.5pct": (3, 1)}, n_val=2, n_test=4, classes=[0, 1], n_attrs=2,
        valid_in_pct=False, valid_class_folders=False, test_class_folders=False,
    )  # fmt: skip
    b = build_dataset("bffhq", tmp_path, tmp_path / "cache", image_size=8, normalize="none", augment=False)
    assert b.train.group_counts.tolist() == [3, 1, 1, 3]
    assert b.val.group_counts.tolist() == [1, 1, 1, 1] and b.test.group_counts.tolist() == [2, 2, 2, 2]
    assert b.default_model == "resnet18" == DATASET_PRESETS["bffhq"]["model"].value
    assert b.train.input_shape == (3, 8, 8)
    assert_pixels_match_labels(b.test)
    only = build_dataset("bffhq", tmp_path, tmp_path / "cache", image_size=8, test_conflicting_only=True)
    assert only.test.group_counts.tolist() == [0, 2, 2, 0]


def test_dfa_bad_input(tmp_path: Path) -> None:
    base = _cmnist(tmp_path)
    with pytest.raises(ConfigError, match=r"ratio 0.02: no such folder .*it has: 1pct, 5pct"):
        build_dataset("dfa_cmnist", tmp_path, tmp_path / "cache", ratio=0.02)
    bad = write_image(base / "5pct" / "align" / "1" / "oops.png", (0, 0, 0))
    with pytest.raises(DataError, match=r"oops\.png: file name is not <index>_<class>_<bias>"):
        build_dataset("dfa_cmnist", tmp_path, tmp_path / "cache", ratio=0.05)
    bad.unlink()
    bad = write_image(base / "5pct" / "align" / "1" / "900_1_2.png", (0, 0, 0))
    with pytest.raises(DataError, match=r"900_1_2\.png: class 1 and bias 2 in a 'align' folder"):
        build_dataset("dfa_cmnist", tmp_path, tmp_path / "cache", ratio=0.05)
    bad.unlink()
    bad = write_image(base / "test" / "12" / "901_12_3.png", (0, 0, 0))
    with pytest.raises(DataError, match=r"901_12_3\.png: class 12 outside the declared classes 0\.\.9"):
        build_dataset("dfa_cmnist", tmp_path, tmp_path / "cache", ratio=0.05)
    bad.unlink()
    (base / "test" / "0" / "902_0_0.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match=r"cannot decode image .*902_0_0\.png"):  # preloaded: fails at build
        build_dataset("dfa_cmnist", tmp_path, tmp_path / "cache", ratio=0.05)


# ---------------------------------------------------------------------------------------------- backend
def test_image_files_threads_sizes_and_errors(tmp_path: Path) -> None:
    paths = [write_image(tmp_path / f"{i}.png", (10 * i, 0, 0), size=(6, 4)) for i in range(12)]
    threaded = ImageFiles(paths, DecodeSpec(), workers=4)
    x = threaded(torch.arange(12))
    assert x.shape == (12, 3, 4, 6) and x.dtype == torch.uint8
    assert x[:, 0, 0, 0].tolist() == [10 * i for i in range(12)]
    assert torch.equal(ImageFiles(paths, DecodeSpec(), workers=0)(torch.tensor([5, 2])), x[[5, 2]])
    threaded(torch.arange(3))  # the pool exists now; a pickled copy recreates its own
    assert torch.equal(pickle.loads(pickle.dumps(threaded))(torch.arange(12)), x)
    grey = ImageFiles(paths, DecodeSpec(size=(2, 3), mode="L"))(torch.tensor([1]))
    assert grey.shape == (1, 1, 2, 3)
    write_image(tmp_path / "odd.png", (0, 0, 0), size=(5, 5))
    mixed = ImageFiles([*paths, tmp_path / "odd.png"], DecodeSpec(), workers=2, origin=lambda i: f"row {i}")
    with pytest.raises(DataError, match=r"odd\.png \(row 12\) is 5x5 .*expected 6x4.*image_size"):
        mixed(torch.arange(13))
    with pytest.raises(DataError, match=r"image .*gone\.png \(row 0\) is missing"):
        ImageFiles([tmp_path / "gone.png"], DecodeSpec(size=(2, 2)), origin=lambda i: f"row {i}")(torch.tensor([0]))


def test_cifar_batches_refuse_code(tmp_path: Path) -> None:
    from debiaslab.data.cifar10 import read_batch

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo owned",))

    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(DataError, match=r"refusing to unpickle posix\.system|refusing to unpickle os\.system"):
        read_batch(path)
    good = tmp_path / "good"
    good.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [3, 11]}, protocol=2))
    with pytest.raises(DataError, match=r"label 11 outside the CIFAR-10 classes"):
        read_batch(good)
