"""Group inference: every inferrer finds a planted minority without reading an attribute; groups files are
verified; runs train and select on inferred groups and record which labels they used."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from debiaslab.data.core import DatasetBundle, GroupDataset
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, DataError
from debiaslab.evaluation.group_inference import minority_scores, partition_scores
from debiaslab.inference.apply import check_groups_for, with_inferred_groups
from debiaslab.inference.base import Inferrer
from debiaslab.inference.groups_file import read_groups, write_groups
from debiaslab.inference.infer_eiil import infer_environments, irm_gradients
from debiaslab.inference.quality import score_groups
from debiaslab.inference.registry import get_inferrer, list_inferrers
from toys import shortcut_split, tiny_mlp

pytestmark = pytest.mark.usefixtures("one_thread")

#: settings that let each inferrer's reference model learn the toy's shortcut in a few epochs
TOY_SETTINGS: dict[str, dict[str, Any]] = {
    "error_set": {**tiny_mlp(), "identify_epochs": 3},
    "gce": {**tiny_mlp(), "epochs": 3},
    "amplified": {**tiny_mlp(), "optimizer": "sgd", "lr": 0.05, "amplify_epochs": 3, "aux_lambda": 1.0},
    "cluster": {**tiny_mlp(), "identify_epochs": 3, "k_max": 4},
    "eiil": {**tiny_mlp(), "identify_epochs": 3, "steps": 3000, "lr": 0.01},
}


def planted() -> DatasetBundle:
    """Two classes whose shortcut agrees with the label on 95 % of training examples; val and test balanced."""
    train = shortcut_split(2000, 0, "train", 0.95)
    val = shortcut_split(600, 1, "val", 0.5)
    test = shortcut_split(600, 2, "test", 0.5)
    return DatasetBundle(name="shortcut", train=train, val=val, test=test)


def infer(name: str, bundle: DatasetBundle, seed: int = 0) -> Any:
    inferrer = get_inferrer(name)(dataset=None, **TOY_SETTINGS[name])
    return inferrer.infer(bundle.train, bundle.val, Trainer(progress=False, seed=seed))


def test_every_inferrer_has_toy_settings_and_a_source() -> None:
    names = {cls.name for cls in list_inferrers()}
    assert names == {"error_set", "gce", "amplified", "cluster", "eiil"}
    for cls in list_inferrers():
        assert cls.summary and cls.source


@pytest.mark.parametrize("name", sorted(TOY_SETTINGS))
def test_each_inferrer_recovers_a_planted_minority(name: str) -> None:
    bundle = planted()
    groups = infer(name, bundle)
    conflicting = ~bundle.train.is_aligned
    scores = minority_scores(groups.splits["train"].minority, conflicting)
    assert scores["recall"] >= 0.7, scores
    assert scores["precision"] >= 0.5, scores
    assert groups.splits["val"].pseudo.numel() == len(bundle.val)
    val_scores = minority_scores(groups.splits["val"].minority, ~bundle.val.is_aligned)
    assert val_scores["f1"] >= 0.6, val_scores


@pytest.mark.parametrize("name", sorted(TOY_SETTINGS))
def test_inference_reads_no_attribute(name: str) -> None:
    """The same data with scrambled attributes gives the same groups, and the inferrer only ever sees -1."""
    bundle = planted()
    seen: list[torch.Tensor] = []
    cls = get_inferrer(name)
    original_assign = cls.assign

    def spying_assign(self: Inferrer, reference: Any, splits: dict[str, GroupDataset], trainer: Trainer) -> Any:
        seen.extend(ds.attr for ds in splits.values())
        return original_assign(self, reference, splits, trainer)

    scrambled = DatasetBundle(
        name="shortcut",
        train=_with_attr(bundle.train, torch.randint(0, 2, (len(bundle.train),), generator=torch.Generator())),
        val=_with_attr(bundle.val, 1 - bundle.val.attr),
        test=bundle.test,
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cls, "assign", spying_assign)
        a, b = infer(name, bundle), infer(name, scrambled)
    assert seen and all(bool((attr == -1).all()) for attr in seen)
    for split in ("train", "val"):
        assert torch.equal(a.splits[split].pseudo, b.splits[split].pseudo)


def _with_attr(ds: GroupDataset, attr: torch.Tensor) -> GroupDataset:
    return GroupDataset(
        x=ds.x, y=ds.y, attr=attr, n_classes=ds.n_classes, n_attrs=ds.n_attrs, name=ds.name, split=ds.split
    )


def test_inferrer_settings_are_checked_by_name_and_type() -> None:
    with pytest.raises(ConfigError, match="no hyperparameter 'nope'"):
        get_inferrer("error_set")(dataset=None, nope=1)
    with pytest.raises(ConfigError, match="k_max"):
        get_inferrer("cluster")(dataset=None, k_max=1)
    with pytest.raises(ConfigError, match="representation"):
        get_inferrer("cluster")(dataset=None, representation="pixels")


def test_presets_name_their_sources() -> None:
    """The settings that come from papers or official code say so (pinned values)."""
    gce = get_inferrer("gce")(dataset="colored_mnist")
    assert gce.hparams.q == 0.7 and "LfF paper" in gce.hparam_sources["q"]
    eiil = get_inferrer("eiil")(dataset="colored_mnist")
    assert (eiil.hparams.steps, eiil.hparams.lr) == (10000, 0.001)
    assert "ecreager/eiil" in eiil.hparam_sources["steps"]
    error_set = get_inferrer("error_set")(dataset="colored_mnist")
    # JTT's Colored MNIST identification: one epoch at lr 3e-4
    assert (error_set.method.hparams.identify_epochs, error_set.method.hparams.identify_lr) == (1, 3e-4)
    amplified = get_inferrer("amplified")(dataset="waterbirds")
    assert (amplified.method.hparams.aux_lambda, amplified.method.hparams.amplify_epochs) == (50.0, 21)
    cluster = get_inferrer("cluster")(dataset=None)
    assert cluster.hparams.representation == "outputs" and "SPARE" in cluster.hparam_sources["representation"]


def test_eiil_gradient_is_the_irm_derivative_and_the_split_separates_its_signs() -> None:
    logits = torch.randn(50, 3)
    y = torch.randint(0, 3, (50,))
    w = torch.tensor(1.0, requires_grad=True)
    losses = torch.nn.functional.cross_entropy(logits * w, y, reduction="none")
    autograd = torch.stack([torch.autograd.grad(loss, w, retain_graph=True)[0] for loss in losses])
    assert torch.allclose(irm_gradients(logits, y), autograd, atol=1e-5)
    env, _ = infer_environments(logits, y, steps=3000, lr=0.05)
    g = irm_gradients(logits, y)
    # the penalty is largest when one environment holds the positive gradients and the other the negative ones
    assert bool((g[env] > 0).all()) or bool((g[env] < 0).all())


def test_scores_against_known_answers() -> None:
    minority = torch.tensor([1, 1, 0, 0, 1], dtype=torch.bool)
    conflicting = torch.tensor([1, 0, 0, 0, 1], dtype=torch.bool)
    s = minority_scores(minority, conflicting)
    assert (s["precision"], s["recall"], s["hits"]) == (2 / 3, 1.0, 2)
    assert s["f1"] == pytest.approx(0.8)
    same = partition_scores(torch.tensor([0, 0, 1, 1]), torch.tensor([5, 5, 7, 7]))
    assert same == {"ari": 1.0, "nmi": 1.0}


# ---------------------------------------------------------------------------------------------- groups files
@pytest.fixture(scope="module")
def groups_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DatasetBundle]:
    bundle = planted()
    groups = infer("error_set", bundle)
    path = tmp_path_factory.mktemp("groups") / "g.npz"
    meta = {"dataset": "shortcut", "dataset_options": {}, "quality": score_groups(bundle, groups)}
    write_groups(path, groups, meta)
    return path, bundle


def test_groups_file_round_trip_and_quality(groups_file: tuple[Path, DatasetBundle]) -> None:
    path, bundle = groups_file
    read = read_groups(path)
    assert read.n_per_class == 2 and read.splits["train"].pseudo.numel() == len(bundle.train)
    assert read.meta["quality"]["train"]["recall"] >= 0.7
    assert read.source().startswith("inferred:g.npz sha256:")


def test_a_changed_groups_file_is_refused(groups_file: tuple[Path, DatasetBundle], tmp_path: Path) -> None:
    path, _ = groups_file
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["train_pseudo"] = 1 - arrays["train_pseudo"]
    changed = tmp_path / "changed.npz"
    np.savez(changed, **arrays)
    with pytest.raises(DataError, match=r"content hash \w+ does not match"):
        read_groups(changed)
    text = tmp_path / "text.npz"
    text.write_text("not a zip")
    with pytest.raises(DataError, match=r"not a readable \.npz groups file"):
        read_groups(text)
    with zipfile.ZipFile(tmp_path / "empty.npz", "w"):
        pass
    with pytest.raises(DataError, match="no 'meta' entry"):
        read_groups(tmp_path / "empty.npz")
    with pytest.raises(DataError, match="does not exist"):
        read_groups(tmp_path / "missing.npz")


def test_a_groups_file_of_another_dataset_or_size_is_refused(groups_file: tuple[Path, DatasetBundle]) -> None:
    path, bundle = groups_file
    groups = read_groups(path)
    check_groups_for(groups, "shortcut", {}, bundle)
    with pytest.raises(DataError, match="inferred on dataset 'shortcut', not 'colored_mnist'"):
        check_groups_for(groups, "colored_mnist", {}, bundle)
    with pytest.raises(DataError, match="dataset options"):
        check_groups_for(groups, "shortcut", {"ratio": 0.01}, bundle)
    smaller = DatasetBundle(
        name="shortcut", train=bundle.train.subset(torch.arange(100)), val=bundle.val, test=bundle.test
    )
    with pytest.raises(DataError, match="has 2000 train examples; the train split of shortcut has 100"):
        check_groups_for(groups, "shortcut", {}, smaller)


def test_inferred_groups_replace_train_and_val_groups_only(groups_file: tuple[Path, DatasetBundle]) -> None:
    path, bundle = groups_file
    groups = read_groups(path)
    view = with_inferred_groups(bundle, groups)
    assert torch.equal(view.train.attr, groups.splits["train"].pseudo)
    assert view.train.group_source == groups.source() == view.val.group_source
    assert view.test is bundle.test and view.test.group_source == "attributes"
    assert view.train.aligned_groups == frozenset({0, 2})  # pseudo-group 0 of each class
    assert view.train.subset(torch.arange(10)).group_source == groups.source()


# ---------------------------------------------------------------------------------------------- command line
def test_infer_groups_then_train_a_group_method_on_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The whole path on Colored MNIST: infer, score, write; GroupDRO trains and selects on the file; the run
    records which labels it used; a method that reads no groups and a file of another ratio are one line each."""
    from debiaslab.cli.main import main

    groups = tmp_path / "groups.npz"
    args = ["infer-groups", "--method", "error_set", "--dataset", "colored_mnist", "--ratio", "0.01"]
    assert main([*args, "--out", str(groups), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "recall" in out and "groups file:" in out
    meta = read_groups(groups).meta
    assert meta["quality"]["train"]["recall"] > 0.5  # one identification epoch finds most conflicting images

    run = tmp_path / "gdro"
    train = ["train", "--method", "groupdro", "--dataset", "colored_mnist", "--ratio", "0.01", "--epochs", "1"]
    assert main([*train, "--groups", str(groups), "--out", str(run), "--no-progress", "--threads", "1"]) == 0
    final = json.loads((run / "final.json").read_text())
    assert final["labels"]["train"] == "inferred" and final["labels"]["select"] == "inferred"
    assert final["groups"]["sha256"] == meta["sha256"]
    assert final["test_report"]["n_attrs"] == 10  # tested on the true groups

    capsys.readouterr()
    erm = [
        "train",
        "--method",
        "erm",
        "--dataset",
        "colored_mnist",
        "--ratio",
        "0.01",
        "--selection",
        "val_worst_class",
    ]
    assert main([*erm, "--groups", str(groups), "--out", str(tmp_path / "erm")]) == 2
    err = capsys.readouterr().err
    assert "reads no groups" in err and len(err.strip().splitlines()) == 1
    other = ["train", "--method", "groupdro", "--dataset", "colored_mnist", "--ratio", "0.02"]
    assert main([*other, "--groups", str(groups), "--out", str(tmp_path / "other")]) == 2
    assert "inferred with dataset options {'ratio': 0.01}" in capsys.readouterr().err
    assert not (tmp_path / "erm").exists() and not (tmp_path / "other").exists()


def test_labelled_runs_record_their_labels(tmp_path: Path) -> None:
    from debiaslab.cli.main import main

    run = tmp_path / "erm"
    args = ["train", "--method", "erm", "--dataset", "colored_mnist", "--ratio", "0.01", "--epochs", "1"]
    assert main([*args, "--selection", "val_worst_class", "--out", str(run), "--no-progress", "--threads", "1"]) == 0
    labels = json.loads((run / "final.json").read_text())["labels"]
    assert labels == {"train": "none", "select": "none", "train_source": None, "select_source": None}
