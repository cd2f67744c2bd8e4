"""SSA: the balanced pseudo-label selection against a hand example, the folds (each labelled by a predictor that
never trained on it), the attribute quality it reports, GroupDRO on the predicted groups, presets pinned to SpuCo,
and the labels it needs (validation attributes; none on training; never the test split)."""

from __future__ import annotations

import pytest
import torch

from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, MissingLabelsError
from debiaslab.methods import get_method
from debiaslab.methods.ssa import pseudo_label_selection, rarest_value, with_attributes
from toys import RecordingTrainer, make_split, tiny_mlp, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = {**tiny_mlp(8), "epochs": 2, "eta": 0.1, "ssa_iters": 20, "ssa_eval_every": 5, "ssa_lr": 0.2}


def test_pseudo_labels_keep_confident_rare_predictions_and_level_the_others() -> None:
    probs = torch.tensor(
        [
            [0.02, 0.98],  # rare value 1, confident: kept
            [0.10, 0.90],  # rare value 1, below τ = 0.95: dropped
            [0.90, 0.10],
            [0.60, 0.40],
            [0.99, 0.01],
        ]
    )
    labeled = torch.tensor([0, 0, 1])  # the labelled batch: two of value 0, one of value 1
    chosen = pseudo_label_selection(probs, labeled, rarest=1, tau=0.95)
    # value 1 reaches 1 + 1 = 2; value 0 has 2 labelled already: none of its predictions is needed
    assert chosen.tolist() == [0]
    chosen = pseudo_label_selection(probs, torch.tensor([0, 1, 1]), rarest=1, tau=0.95)
    # value 1: 2 labelled + 1 pseudo = 3; value 0: 1 labelled, so its 2 most confident predictions (rows 4, 2)
    assert chosen.tolist() == [0, 4, 2]
    assert rarest_value(torch.tensor([0, 0, 2, 2, 2]), 3) == 0  # value 1 is absent: the rarest present one


def test_ssa_predicts_the_attributes_fold_by_fold_then_runs_groupdro() -> None:
    train, val = toy_splits(240, 120, 0.1, n_features=6)
    unlabeled = with_attributes(train, torch.full((len(train),), -1))  # the training attributes are never read
    assert not unlabeled.has_attrs
    trainer = RecordingTrainer(seed=0)
    ssa = get_method("ssa")(**FAST).fit(unlabeled, val, trainer=trainer)
    assert list(trainer.stages) == ["ssa_fold0", "ssa_fold1", "ssa_fold2", "groupdro"]
    assert all(len(trainer.stages[f"ssa_fold{k}"].sampler) == 5 * 64 for k in range(3))
    assert trainer.stages["ssa_fold0"].selection == "val_accuracy"
    assert sum(ssa.fit_result_.extras["pseudo_group_counts"]) == len(train)
    assert [s.name for s in ssa.fit_result_.stages][-1] == "groupdro"
    # with the true attributes at hand the prediction quality is reported (never used): the toy's attribute is easy
    scored = get_method("ssa")(**FAST).fit(train, val, trainer=Trainer(progress=False, seed=0))
    assert scored.fit_result_.extras["attribute_accuracy"] > 0.9


def test_ssa_needs_validation_attributes_and_refuses_the_test_split() -> None:
    train, _ = toy_splits(64, 32, 0.1, n_features=6)
    no_attrs = make_split(32, 5, "val", 0.5, n_features=6, attrs=False)
    with pytest.raises(MissingLabelsError, match="ssa"):
        get_method("ssa")(**FAST).fit(train, no_attrs)
    test = make_split(32, 6, "test", 0.5, n_features=6)
    with pytest.raises(ConfigError, match="would train on the test set"):
        get_method("ssa")(**FAST).fit(train, test)


def test_presets_follow_spuco() -> None:
    ssa = get_method("ssa")()
    hp = ssa.hparams
    assert (hp.ssa_folds, hp.ssa_labeled_fraction, hp.ssa_iters, hp.ssa_batch_size, hp.tau) == (3, 0.5, 1000, 64, 0.95)
    assert (hp.ssa_lr, hp.ssa_weight_decay) == (1e-3, 1e-4)
    assert "ssa.py" in ssa.hparam_sources["ssa_folds"] and "waterbirds_ssa.py" in ssa.hparam_sources["tau"]
    assert hp.eta == 0.01 and "group_DRO" in ssa.hparam_sources["eta"]  # GroupDRO's own settings
    cmnist = get_method("ssa")(dataset="colored_mnist")
    assert cmnist.hparams.ssa_iters == 500 and "spuco_mnist_ssa.py" in cmnist.hparam_sources["ssa_iters"]
    assert cmnist.hparams.ssa_lr == 0.1 and cmnist.hparam_sources["ssa_lr"].startswith("ours:")
    assert not ssa.requires.train_attrs and ssa.requires.val_attrs
    with pytest.raises(ConfigError, match="ssa_folds"):
        get_method("ssa")(ssa_folds=1)


def test_the_premise_check_fails_when_a_fold_predictor_stays_at_chance() -> None:
    train, val = toy_splits(240, 120, 0.1, n_features=6)
    learned = get_method("ssa")(**FAST).fit(train, val, trainer=Trainer(progress=False, seed=0))
    check = {c.name: c for c in learned.health(train, val)}["ssa_predictors_learned"]
    assert check.status == "ok" and check.uses_labels and len(check.value["val_attribute_accuracy"]) == 3
    stuck = get_method("ssa")(**{**FAST, "ssa_lr": 1e-9}).fit(train, val, trainer=Trainer(progress=False, seed=0))
    check = {c.name: c for c in stuck.health(train, val)}["ssa_predictors_learned"]
    assert check.status == "fail" and "at chance on the selecting half of validation" in check.message


def test_the_search_space_holds_the_predictor_step_of_every_preset_the_tuned_suites_train() -> None:
    space = get_method("ssa").search_space["ssa_lr"]
    for dataset in (None, "colored_mnist", "biased_mnist"):
        lr = get_method("ssa")(dataset=dataset).hparams.ssa_lr
        assert space.low <= lr <= space.high, (dataset, lr, str(space))


def test_a_run_reporting_a_second_rule_keeps_it_on_groupdro_not_on_the_predictors() -> None:
    """A tuning suite's shared final run deploys one rule and reports another; the fold predictors select by
    attribute accuracy on relabelled validation examples (no groups there), so only GroupDRO reports it."""
    train, val = toy_splits(240, 120, 0.1, n_features=6)
    trainer = Trainer(progress=False, seed=0, report_rules=["val_unbiased"])
    ssa = get_method("ssa")(**FAST, selection="val_worst_class").fit(train, val, trainer=trainer)
    stages = {s.name: s for s in ssa.fit_result_.stages}
    assert "val_unbiased" in stages["groupdro"].alternatives
    assert not stages["ssa_fold0"].alternatives
