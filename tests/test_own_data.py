"""A user's own data measured right: the aligned pairing is the user's to declare (a mapping, a list, ``identity``
or ``none``) in every user format and is said at run start; non-finite inputs, class ids without examples and
non-image files in a class folder are named, not silently trained on."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from debiaslab.cli.main import main
from debiaslab.data import build_dataset
from debiaslab.errors import ConfigError, DataError
from fixture_trees import make_class_folders, write_csv

pytestmark = pytest.mark.usefixtures("one_thread")


def arrays(path: Path, *, y: np.ndarray | None = None, attr: np.ndarray | None = None, n: int = 60) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 2 if y is None else y
    attr = (np.arange(n) // 2) % 2 if attr is None else attr
    np.savez(path, x=rng.normal(size=(len(y), 3)).astype(np.float32), y=y, attr=attr)
    return path


def aligned_of(bundle) -> set[int]:
    assert bundle.train.aligned_groups == bundle.val.aligned_groups == bundle.test.aligned_groups
    return set(bundle.train.aligned_groups)


@pytest.mark.parametrize(
    ("aligned", "groups", "pairing"),
    [
        ("auto", {0, 3}, "attribute id == class id"),
        ("identity", {0, 3}, "attribute id == class id"),
        ("none", set(), "none declared"),
        ({0: 1, 1: 0}, {1, 2}, "declared (class->attribute: 0->1, 1->0)"),
        ("[1, 0]", {1, 2}, "declared (class->attribute: 0->1, 1->0)"),
        ("{0: 1}", {1}, "declared (class->attribute: 0->1)"),
    ],
)
def test_arrays_aligned_pairing_is_declared(tmp_path: Path, aligned: object, groups: set[int], pairing: str) -> None:
    b = build_dataset("arrays", tmp_path, tmp_path / "c", path=str(arrays(tmp_path / "d.npz")), aligned=aligned)
    assert aligned_of(b) == groups and b.recipe["aligned"].startswith(pairing)
    assert any("attribute id c as the aligned attribute" in n for n in b.notes) == (aligned == "auto")


def test_no_pairing_reports_group_metrics_without_aligned_ones(tmp_path: Path) -> None:
    b = build_dataset("arrays", tmp_path, tmp_path / "c", path=str(arrays(tmp_path / "d.npz")), aligned="none")
    from debiaslab.engine.trainer import Trainer
    from debiaslab.methods import get_method

    method = get_method("erm")(epochs=1, model_kwargs={"width": 4, "depth": 1}).fit(b.train, b.val)
    report = method.evaluate(b.test, Trainer(progress=False))
    assert np.isnan(report.metrics["aligned"]) and np.isnan(report.metrics["conflicting"])
    assert not np.isnan(report.metrics["worst_group"])
    line = report.summary_line()
    assert "worst-group" in line and "aligned" not in line and "conflicting" not in line


@pytest.mark.parametrize(
    ("aligned", "expected"),
    [
        ("diagonal", "aligned 'diagonal'; expected auto, identity, none"),
        ("[1]", r"aligned \[1\]: 1 entries; expected 2, one per class"),
        ("{0: 5}", "attribute 5 of class 0 is not an attribute id 0..1"),
        ("{7: 0}", "class 7 is not a class id 0..1"),
    ],
)
def test_a_bad_pairing_is_a_config_error(tmp_path: Path, aligned: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        build_dataset("arrays", tmp_path, tmp_path / "c", path=str(arrays(tmp_path / "d.npz")), aligned=aligned)


def test_identity_needs_as_many_attributes_as_classes(tmp_path: Path) -> None:
    data = arrays(tmp_path / "d.npz", attr=np.arange(60) % 3)
    assert aligned_of(build_dataset("arrays", tmp_path, tmp_path / "c", path=str(data))) == set()  # auto: none
    with pytest.raises(ConfigError, match="2 classes and 3 attribute values"):
        build_dataset("arrays", tmp_path, tmp_path / "c", path=str(data), aligned="identity")


def test_class_folders_pairing_by_class_name(tmp_path: Path) -> None:
    rows = make_class_folders(tmp_path / "pets")
    table = write_csv(tmp_path / "attrs.csv", ["path", "attribute"], rows)
    b = build_dataset(
        "class_folders", tmp_path, tmp_path / "c", root="pets", attributes=str(table), aligned="{cat: 1, dog: 0}"
    )
    assert aligned_of(b) == {1, 2} and "cat->1, dog->0" in b.recipe["aligned"]


def test_the_run_says_which_pairing_it_uses(tmp_path: Path, capsys) -> None:
    data = arrays(tmp_path / "d.npz")
    args = ["train", "--method", "erm", "--dataset", "arrays", "--data-opt", f"path={data}", "--data-opt",
            "aligned={0: 1, 1: 0}", "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert "arrays: aligned pairing declared (class->attribute: 0->1, 1->0)" in capsys.readouterr().err
    assert "declared (class->attribute: 0->1, 1->0)" in (tmp_path / "run" / "config.yaml").read_text()


def test_nan_inputs_are_refused_with_the_first_index(tmp_path: Path) -> None:
    x = np.zeros((60, 3), dtype=np.float32)
    x[[11, 40], 1] = np.nan
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(60) % 2)
    with pytest.raises(DataError, match=r"d\.npz x\[11\] holds NaN or infinite values \(2 example\(s\) do\)"):
        build_dataset("arrays", tmp_path, tmp_path / "c", path=str(tmp_path / "d.npz"))


def test_a_stray_label_warns_that_classes_have_no_examples(tmp_path: Path, caplog) -> None:
    y = np.r_[np.arange(59) % 2, 7]
    data = arrays(tmp_path / "d.npz", y=y, attr=np.zeros(60, dtype=np.int64))
    with caplog.at_level(logging.WARNING, logger="debiaslab.data"):
        b = build_dataset("arrays", tmp_path, tmp_path / "c", path=str(data), test_fraction=0.3)
    assert b.train.n_classes == 8
    assert "class id(s) 2, 3, 4, 5, 6 have no examples, yet the model gets 8 outputs" in caplog.text
    assert "the largest label, 7, has 1 example(s)" in caplog.text


def test_class_folders_say_how_many_non_image_files_they_skipped(tmp_path: Path, caplog) -> None:
    make_class_folders(tmp_path / "pets")
    (tmp_path / "pets" / "cat" / "notes.txt").write_text("not an image")
    (tmp_path / "pets" / "cat" / "labels.csv").write_text("a,b\n")
    (tmp_path / "pets" / "cat" / ".DS_Store").write_bytes(b"\0")
    with caplog.at_level(logging.WARNING, logger="debiaslab.data"):
        b = build_dataset("class_folders", tmp_path, tmp_path / "c", root="pets")
    assert len(b.train) + len(b.val) + len(b.test) == 32
    assert "skipped 2 non-image file(s) (labels.csv, notes.txt)" in caplog.text
