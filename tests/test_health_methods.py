"""Each method's premise checks (``Method.health``) on toy runs: silent on a healthy run, firing on a constructed
failure; a run records them in ``final.json`` and ``report.md`` and logs one warning line per failing check."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from torch import nn

from debiaslab.evaluation.health import failing
from debiaslab.methods.registry import get_method
from debiaslab.run.fit import fit_and_save
from toys import make_split, tiny_mlp, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {**tiny_mlp(), "epochs": 3}


@pytest.fixture(scope="module")
def toy():
    return toy_splits()


def by_name(checks) -> dict:
    return {c.name: c for c in checks}


def fit(name: str, train, val, **hparams):
    return get_method(name)(**{**TINY, **hparams}).fit(train, val)


# ---------------------------------------------------------------------------------------------- every method
def test_erm_that_learned_passes_and_one_that_did_not_fails() -> None:
    train, val = make_split(512, 0, "train", 0.05), make_split(256, 1, "val", 0.05)  # one distribution
    healthy = by_name(fit("erm", train, val, selection="val_accuracy").health(train, val))
    assert healthy["left_chance"].status == "ok" and healthy["train_val_gap"].status == "ok"
    frozen = by_name(fit("erm", train, val, optimizer="sgd", lr=1e-9).health(train, val))
    assert frozen["left_chance"].status == "fail"


def test_a_run_records_its_checks_and_logs_the_failing_ones(toy, tmp_path, caplog) -> None:
    train, val = toy
    method = get_method("erm")(**{**TINY, "optimizer": "sgd", "lr": 1e-9})
    with caplog.at_level(logging.WARNING, logger="debiaslab.run.train"):
        final = fit_and_save(method, train, val, val, run_dir=tmp_path / "run")
    names = [c["name"] for c in final["health"]]
    assert names[:3] == ["left_chance", "train_val_gap", "selected_epoch_at_edge"]
    written = json.loads((tmp_path / "run" / "final.json").read_text())["health"]
    assert written == json.loads(json.dumps(final["health"]))
    lines = [r.getMessage() for r in caplog.records if "premise check" in r.getMessage()]
    assert any(line.startswith("erm premise check fail: left_chance: ") for line in lines)
    assert "\n" not in "".join(lines)
    assert "`left_chance`" in (tmp_path / "run" / "report.md").read_text()


# ---------------------------------------------------------------------------------------------- error sets
def test_jtt_error_set_is_checked_and_an_unlearned_identification_fires(toy) -> None:
    train, val = toy
    healthy = by_name(fit("jtt", train, val, identify_epochs=2, lambda_up=5).health(train, val))
    assert healthy["error_set_size"].status == "ok" and healthy["error_set_vs_conflicting"].uses_labels
    unlearned = fit("jtt", train, val, identify_epochs=1, identify_lr=1e-9, optimizer="sgd", lambda_up=5)
    checks = by_name(unlearned.health(train, val))
    assert checks["error_set_size"].status in ("warn", "fail")  # half the data or more, or (all right) empty


def test_empty_error_set_fails(toy) -> None:
    train, val = toy
    method = fit("bam", train, val, amplify_epochs=1, mu=2)
    method.error_set_ = torch.tensor([], dtype=torch.long)
    assert by_name(method.health(train, val))["error_set_size"].status == "fail"


def test_rest_without_conflicting_examples_has_an_empty_upweighted_set() -> None:
    train, val = make_split(256, 0, "train", 0.0), make_split(128, 1, "val", 0.5)
    checks = by_name(fit("rest", train, val, density=0.5).health(train, val))
    assert checks["upweighted_set_size"].status == "fail"
    assert "upweighted_set_vs_conflicting" not in checks  # the set is the attributes themselves
    healthy_train, _ = toy_splits()
    assert (
        by_name(fit("rest", healthy_train, val, density=0.5).health(healthy_train, val))["upweighted_set_size"].status
        == "ok"
    )


# ---------------------------------------------------------------------------------------------- weights
def test_lff_weights_on_one_example_fire(toy) -> None:
    train, val = toy
    method = fit("lff", train, val)
    healthy = by_name(method.health(train, val))
    assert healthy["LfF_weights_ess"].status == "ok", healthy["LfF_weights_ess"].message
    assert "LfF_weights_on_conflicting" in healthy
    method.weights_ = torch.zeros(len(train))
    method.weights_[7] = 1.0
    assert by_name(method.health(train, val))["LfF_weights_ess"].status == "warn"


def test_group_subsampling_of_a_tiny_group_fires(toy) -> None:
    train, val = toy
    checks = by_name(fit("subsample_group", train, val).health(train, val))
    assert checks["subsample_weights_ess"].value["ess"] == pytest.approx(4 * int(train.group_counts.min()))
    assert by_name(fit("reweight_class", train, val).health(train, val))["reweight_weights_ess"].status == "ok"


# ---------------------------------------------------------------------------------------------- groups
def test_groupdro_weights_that_collapse_fire(toy) -> None:
    train, val = toy
    method = fit("groupdro", train, val)
    check = by_name(method.health(train, val))["group_weights_collapse"]
    assert check.status == "ok" and len(check.value["q_max_per_epoch"]) == TINY["epochs"]
    for line in method.fit_result_.history:  # the adversary sat on group 1 at the end of every epoch
        line["q_max_end"], line["q_max_group"] = 0.97, 1
    assert by_name(method.health(train, val))["group_weights_collapse"].status == "warn"


@pytest.mark.filterwarnings("ignore:Liblinear failed to converge")
def test_dfr_on_a_small_validation_split_fires(toy) -> None:
    train, val = toy
    checks = by_name(fit("dfr", train, val, n_fits=2).health(train, val))
    assert checks["dfr_examples_per_group"].status == "ok" and checks["dfr_examples_per_group"].uses_labels
    assert checks["dfr_solver_converged"].status == "ok"
    small = make_split(40, 5, "val", 0.5)
    few = by_name(fit("dfr", train, small, n_fits=2, max_iter=1).health(train, small))
    assert few["dfr_examples_per_group"].status == "warn"
    assert few["dfr_solver_converged"].status == "warn"


# ---------------------------------------------------------------------------------------------- students
def test_ule_checks_its_student_teacher_and_saliency(toy) -> None:
    train, val = toy
    method = fit("ule", train, val)
    checks = by_name(method.health(train, val))
    assert {"student_keeps_erring", "teacher_student_disagreement", "saliency_mass_masked"} <= set(checks)
    assert checks["teacher_student_disagreement_on_conflicting"].uses_labels
    method.student_ = method.model_  # a teacher that is its own student agrees with it everywhere
    assert by_name(method.health(train, val))["teacher_student_disagreement"].status == "warn"


def test_mistake_reweight_checks_the_students_mistakes(toy) -> None:
    train, val = toy
    method = fit("mistake_reweight", train, val)
    checks = by_name(method.health(train, val))
    assert "student_errors_size" in checks and "saliency_mass_masked" not in checks
    perfect = nn.Linear(8, 2)
    with torch.no_grad():  # reads the label's own feature: right wherever x[0] has the label's sign
        perfect.weight.copy_(torch.tensor([[-10.0] + [0.0] * 7, [10.0] + [0.0] * 7]))
        perfect.bias.zero_()
    clean = make_split(256, 3, "train", 0.05)
    clean.x[:, 0] = 4.0 * clean.y.float() - 2.0
    method.student_ = perfect
    assert by_name(method.health(clean, None))["student_errors_size"].status == "fail"


# ---------------------------------------------------------------------------------------------- DeNetDM
def reader(feature: int) -> nn.Module:
    """A linear read-out of one toy feature (0: the label's core feature, 1: the spurious attribute)."""
    model = nn.Linear(8, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.weight[0, feature], model.weight[1, feature] = -3.0, 3.0
        model.bias.zero_()
    return model


DENETDM = {"deep_kwargs": {"width": 16, "depth": 2}, "shallow_kwargs": {"width": 16, "depth": 1}, "epochs": 2}


def test_denetdm_experts_swapped_fire_and_in_place_pass(toy) -> None:
    train, val = toy
    method = fit("denetdm", train, val, expert_epochs=2, **DENETDM)
    names = set(by_name(method.health(train, val)))
    assert {"denetdm_experts_alive", "denetdm_expert_split", "denetdm_target_beyond_biased"} <= names
    assert {"denetdm_biased_expert", "denetdm_target_vs_biased"} <= names
    method.readout_models_ = {"deep_expert": reader(1), "shallow_expert": reader(0)}
    in_place = by_name(method.health(train, val))
    assert in_place["denetdm_biased_expert"].status == "ok" and in_place["denetdm_experts_alive"].status == "ok"
    method.readout_models_ = {"deep_expert": reader(0), "shallow_expert": reader(1)}
    swapped = by_name(method.health(train, val))["denetdm_biased_expert"]
    assert swapped.status == "fail" and swapped.uses_labels and "shallow expert is the biased one" in swapped.message


def test_denetdm_dead_deep_expert_fails_without_labels(toy) -> None:
    train, val = toy
    method = fit("denetdm", train, val, expert_epochs=1, **DENETDM)
    dead = nn.Linear(8, 2)
    with torch.no_grad():
        dead.weight.zero_()
        dead.bias.copy_(torch.tensor([0.0, 1.0]))  # always class 1
    method.readout_models_ = {"deep_expert": dead, "shallow_expert": reader(0)}
    train_one = make_split(256, 0, "train", 0.05)
    train_one.y[:] = torch.arange(256) % 2
    checks = by_name(method.health(train_one, None))
    assert checks["denetdm_experts_alive"].status == "fail" and not checks["denetdm_experts_alive"].uses_labels
    assert not failing([checks["denetdm_expert_split"]])
