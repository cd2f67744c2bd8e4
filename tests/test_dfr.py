"""DFR (Kirichenko et al., ICLR 2023): balancing, C selection, the folded head, base runs, end to end on toy data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler

from debiaslab.data.core import GroupDataset
from debiaslab.engine.checkpoint import save_checkpoint
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, MissingLabelsError
from debiaslab.methods.dfr import (
    C_GRID,
    DFR,
    DFRClass,
    _l1_logreg,
    balanced_subsample,
    fit_linear_head,
    fold_standardisation,
    install_head,
    split_halves,
    tune_c,
    worst_accuracy,
)
from debiaslab.methods.erm import ERM
from debiaslab.methods.registry import get_method
from debiaslab.methods.teachers import MODEL_FILE
from debiaslab.models import build_model
from toys import NoTrainingTrainer, make_split, tiny_mlp, toy_splits

TINY = {**tiny_mlp(), "epochs": 5}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy() -> tuple[GroupDataset, GroupDataset, GroupDataset]:
    return (*toy_splits(512, 256, 0.02), make_split(1024, 2, "test", 0.5))


@pytest.fixture(scope="module")
def erm_run(toy, tmp_path_factory) -> tuple[ERM, Path]:
    """A finished ERM run directory (model.pt written as debiaslab.run.train does), and the fitted ERM."""
    train, val, _ = toy
    erm = ERM(selection="last", **TINY).fit(train, val, trainer=Trainer(progress=False, seed=0))
    run_dir = tmp_path_factory.mktemp("erm-run")
    state = {k: v.cpu() for k, v in erm.model_.state_dict().items()}
    save_checkpoint(run_dir / MODEL_FILE, {"spec": erm.fit_result_.model_spec, "state_dict": state})
    return erm, run_dir


@pytest.fixture(scope="module")
def dfr_trained(toy) -> DFR:
    """DFR with its base ERM stage trained here, with the same seed and settings as ``erm_run``."""
    train, val, _ = toy
    return DFR(**TINY).fit(train, val, trainer=Trainer(progress=False, seed=0))


# ---------------------------------------------------------------------------------------------- building blocks
def test_balanced_subsample_keeps_min_size_per_group_and_per_class() -> None:
    units = np.array([0] * 7 + [1] * 3 + [3] * 5 + [-1] * 4)
    for seed in range(3):
        kept = balanced_subsample(units, np.random.default_rng(seed))
        assert np.bincount(units[kept], minlength=4).tolist() == [3, 3, 0, 3]
        assert np.all(np.diff(kept) > 0)
    val = make_split(300, 5, "val", 0.2)
    by_group = balanced_subsample(val.group.numpy(), np.random.default_rng(0))
    counts = np.bincount(val.group.numpy()[by_group], minlength=4)
    assert set(counts.tolist()) == {int(val.group_counts.min())}
    by_class = balanced_subsample(val.y.numpy(), np.random.default_rng(0))
    assert set(np.bincount(val.y.numpy()[by_class]).tolist()) == {int(val.class_counts.min())}


def test_split_halves_is_stratified_and_disjoint() -> None:
    units = np.array([0] * 9 + [1] * 4 + [2])
    fit, score = split_halves(units, np.random.default_rng(0))
    assert np.intersect1d(fit, score).size == 0 and fit.size + score.size == units.size
    assert np.bincount(units[score], minlength=3).tolist() == [4, 2, 0]
    assert np.bincount(units[fit], minlength=3).tolist() == [5, 2, 1]


def test_worst_accuracy_is_the_lowest_group() -> None:
    y = np.array([0, 0, 0, 0, 1, 1])
    units = np.array([0, 0, 0, 1, 2, 2])
    pred = np.array([0, 0, 0, 1, 1, 0])
    assert worst_accuracy(pred, y, units) == 0.0
    assert worst_accuracy(y, y, units) == 1.0


def test_c_choice_picks_the_best_worst_group_c() -> None:
    """Separable core feature: any moderate C is perfect; a C so small that L1 zeroes every weight predicts one
    class (worst group 0). The best is chosen whatever the grid order; ties go to the first in the grid."""
    rng = np.random.default_rng(0)
    units = np.repeat(np.arange(4), [60, 20, 20, 60])
    y = units // 2
    z = rng.normal(size=(160, 3))
    z[:, 0] += 6.0 * (2 * y - 1)
    for grid in ((1e-4, 1.0), (1.0, 1e-4)):
        best, scores, per_unit = tune_c(z, y, units, 2, grid, np.random.default_rng(1))
        assert best == 1.0 and scores[1.0] == 1.0 and scores[1e-4] == 0.0
        assert per_unit == 10  # the 20-example groups put 10 in the fit half
    best, scores, _ = tune_c(z, y, units, 2, (0.5, 1.0), np.random.default_rng(1), symmetric=True)
    assert scores == {0.5: 1.0, 1.0: 1.0} and best == 0.5


@pytest.mark.parametrize("n_classes", [2, 3])
def test_folded_head_reproduces_sklearn_decision_function(n_classes: int) -> None:
    rng = np.random.default_rng(n_classes)
    train = rng.normal(loc=[3.0, -1.0, 0.0, 5.0, 2.0], scale=[2.0, 0.5, 1.0, 3.0, 1.0], size=(300, 5))
    train[:, 2] = 7.0  # zero variance: the scaler keeps scale 1
    val = rng.normal(loc=[3.0, -1.0, 0.0, 5.0, 2.0], scale=[2.0, 0.5, 1.0, 3.0, 1.0], size=(90, 5))
    y = np.arange(90) % n_classes
    val[:, 0] += 2.0 * y
    val[:, 2] = 7.0
    scaler = StandardScaler().fit(train)
    z = scaler.transform(val)
    fits = [fit_linear_head(z, y, n_classes, c, seed) for c, seed in ((1.0, 0), (0.3, 1), (0.1, 2))]
    weight, bias = fold_standardisation(
        np.mean([f[0] for f in fits], axis=0), np.mean([f[1] for f in fits], axis=0), scaler.mean_, scaler.scale_
    )
    model = build_model("mlp", (5,), n_classes, depth=0)  # features(x) = x
    install_head(model, weight, bias)
    with torch.no_grad():
        logits = model(torch.as_tensor(val, dtype=torch.float32)).double().numpy()

    def sklearn_scores(c: float, seed: int) -> np.ndarray:
        if n_classes == 2:
            return _l1_logreg(c, seed, 100).fit(z, y).decision_function(z)
        return OneVsRestClassifier(_l1_logreg(c, seed, 100)).fit(z, y).decision_function(z)

    reference = np.mean([sklearn_scores(c, seed) for c, seed in ((1.0, 0), (0.3, 1), (0.1, 2))], axis=0)
    got = logits[:, 1] - logits[:, 0] if n_classes == 2 else logits
    np.testing.assert_allclose(got, reference, atol=1e-4)
    if n_classes == 2:
        np.testing.assert_allclose(logits.sum(1), 0.0, atol=1e-4)  # softmax(logits) = predict_proba


# ---------------------------------------------------------------------------------------------- the method
def test_registered_names_requirements_and_hparam_table() -> None:
    assert get_method("dfr") is DFR and get_method("dfr_class") is DFRClass
    assert DFR.requires.val_attrs and not DFR.requires.train_attrs
    assert not DFRClass.requires.val_attrs
    m = DFR(dataset="colored_mnist")
    assert m.hparams.c_grid == C_GRID and m.hparams.n_fits == 20 and m.hparams.variant == "group"
    assert m.hparams.lr == 1e-3 and m.hparam_sources["lr"].startswith("LfF paper")
    assert "DFR official code" in m.hparam_sources["n_fits"] and m.hparams.selection == "last"
    assert DFRClass().hparams.variant == "class"
    assert DFR(c_grid="[1, 0.1]").hparams.c_grid == (1.0, 0.1)
    for bad in ({"variant": "nope"}, {"c_grid": []}, {"c_grid": [0.0]}, {"n_fits": 0}):
        with pytest.raises(ConfigError):
            DFR(**bad)


def test_dfr_improves_worst_group_over_its_base_erm(toy, erm_run, dfr_trained) -> None:
    _, val, test = toy
    erm, _ = erm_run
    dfr = dfr_trained
    result = dfr.fit_result_
    with torch.no_grad():  # same seed, same base stage: DFR's backbone is the ERM model
        assert torch.equal(dfr.model_.features(test.x), erm.model_.features(test.x))
    base, ours = erm.evaluate(test).metrics, dfr.evaluate(test).metrics
    assert ours["worst_group"] > base["worst_group"] + 0.3, (base, ours)
    assert [s.name for s in result.stages] == ["erm"]
    assert result.selection == "dfr_val_half" and result.model_spec == erm.fit_result_.model_spec
    assert result.selected == {
        "stage": "dfr",
        "C": result.extras["C"],
        "rule": "worst_group on half of validation",
        "score": result.extras["tune_scores"][str(result.extras["C"])],
    }
    extras = result.extras
    assert extras["variant"] == "group" and set(extras["tune_scores"]) == {str(c) for c in C_GRID}
    assert extras["balanced_per_unit"] == int(val.group_counts.min())
    assert extras["balanced_size"] == 4 * extras["balanced_per_unit"]
    # the saved model is a plain registry model: rebuilt from model_spec, it gives the same logits
    spec = result.model_spec
    rebuilt = build_model(spec["name"], spec["input_shape"], spec["n_classes"], **spec["kwargs"])
    rebuilt.load_state_dict(dfr.model_.state_dict())
    with torch.no_grad():
        assert torch.allclose(rebuilt(test.x), dfr.predict_logits(test.x))


def test_base_run_is_loaded_checked_and_reproducible(toy, erm_run, dfr_trained) -> None:
    from debiaslab.run.train import MODEL, load_run_model

    train, val, test = toy
    _, run_dir = erm_run
    assert MODEL == MODEL_FILE
    fits = [  # the second fits in two processes: the same head
        DFR(base_run=str(run_dir), n_jobs=jobs).fit(train, val, trainer=NoTrainingTrainer(progress=False, seed=0))
        for jobs in (1, 2)
    ]
    assert fits[0].fit_result_.stages == [] and fits[0].fit_result_.extras["base"].startswith("run ")
    for a, b in zip(fits[0].model_.state_dict().values(), fits[1].model_.state_dict().values()):
        assert torch.equal(a, b)
    loaded = load_run_model(run_dir)
    with torch.no_grad():
        assert torch.equal(fits[0].model_.features(test.x), loaded.features(test.x))
        assert not torch.equal(fits[0].model_.head.weight, loaded.head.weight)
    # same seed: the head fitted on a loaded base equals the one fitted after training the base here
    assert torch.allclose(dfr_trained.model_.head.weight, fits[0].model_.head.weight, atol=1e-6)

    wrong = make_split(64, 3, "train", 0.1, n_features=6)
    with pytest.raises(ConfigError, match=r"inputs \(8,\) with 2 classes.*inputs \(6,\)"):
        DFR(base_run=str(run_dir)).fit(wrong, make_split(64, 4, "val", 0.5, n_features=6))
    with pytest.raises(ConfigError, match=r"no model\.pt"):
        DFR(base_run=str(run_dir / "missing")).fit(train, val)


def test_val_without_attributes(toy, erm_run) -> None:
    train, val, _ = toy
    _, run_dir = erm_run
    unlabelled = GroupDataset(x=val.x, y=val.y, n_classes=2, n_attrs=2, name="toy", split="val")
    with pytest.raises(MissingLabelsError, match="dfr"):
        DFR(**TINY).fit(train, unlabelled, trainer=NoTrainingTrainer(progress=False))
    with pytest.raises(MissingLabelsError, match="variant='group'"):
        DFRClass(variant="group", **TINY).fit(train, unlabelled, trainer=NoTrainingTrainer(progress=False))
    method = DFRClass(base_run=str(run_dir)).fit(train, unlabelled, trainer=Trainer(progress=False))
    extras = method.fit_result_.extras
    assert extras["variant"] == "class" and extras["tune_metric"] == "worst_class"
    assert extras["balanced_per_unit"] == int(val.class_counts.min())
    assert method.fit_result_.selected["rule"] == "worst_class on half of validation"
    auto = DFRClass(variant="auto", base_run=str(run_dir)).fit(train, val, trainer=Trainer(progress=False))
    assert auto.fit_result_.extras["variant"] == "group"


def test_multiclass_dfr_runs_one_vs_rest() -> None:
    g = torch.Generator().manual_seed(0)
    n = 270
    y = torch.arange(n) % 3
    attr = torch.where(torch.rand(n, generator=g) < 0.3, torch.randint(0, 3, (n,), generator=g), y)
    x = torch.randn(n, 6, generator=g) * 0.5
    x[torch.arange(n), y] += 1.0
    x[torch.arange(n), 3 + attr] += 2.0
    data = GroupDataset(x=x, y=y, attr=attr, n_classes=3, n_attrs=3, name="toy3", split="val")
    method = DFR(c_grid=[1.0, 0.1], n_fits=2, **{**TINY, "epochs": 1}).fit(data, data, trainer=Trainer(progress=False))
    assert method.model_.head.weight.shape == (3, 16)
    present = data.group_counts[data.group_counts > 0]
    assert method.fit_result_.extras["balanced_size"] == int(present.min()) * present.numel()
