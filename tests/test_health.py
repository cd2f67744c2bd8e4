"""Premise checks as pure functions: each fires on a constructed failure and stays silent on a healthy signal;
the records they go into (final.json, report.md) and the marks and footnotes tables give them."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from debiaslab.bench.aggregate import find_runs, markdown_table, summarise
from debiaslab.bench.health_marks import HealthNotes, recorded_checks
from debiaslab.evaluation.health import (
    Check,
    at_chance,
    chance_check,
    disagreement_checks,
    effective_sample_size,
    error_set_checks,
    failing,
    gap_check,
    group_weight_check,
    saliency_mass_check,
    selected_epoch_check,
    student_error_check,
    top_share,
    weight_checks,
)
from debiaslab.methods.registry import get_method

REPO = Path(__file__).resolve().parents[1]
BMNIST_DENETDM = REPO / "benchmarks/results/bmnist-2026-12-04/bmnist-rho0.99/denetdm"
CMNIST_DENETDM = REPO / "benchmarks/results/cmnist-2026-11-24/cmnist/denetdm/r0.01"


def status(checks: list[Check], name: str) -> str:
    return next(c.status for c in checks if c.name == name)


# ---------------------------------------------------------------------------------------------- every method
def test_chance_fires_on_a_flat_log_k_run_and_not_on_a_learned_one() -> None:
    log_k = math.log(10)
    dead = chance_check(0.1, 2.30, 10, majority=0.11, loss_history=[log_k] * 5)
    assert dead.status == "fail" and "never left chance" in dead.message and "every epoch" in dead.message
    assert chance_check(0.9, 0.3, 10, majority=0.11, loss_history=[2.3, 0.3]).status == "ok"
    # a 95 % majority class: 96 % accuracy is still chance, 99 % is not
    assert chance_check(0.96, 0.2, 2, majority=0.95).status == "fail"
    assert chance_check(0.99, 0.05, 2, majority=0.95).status == "ok"


def test_at_chance_tells_uniform_outputs_from_a_confident_shortcut() -> None:
    assert at_chance(0.099, 2.3034, 10)  # a dead read-out on a balanced split
    assert not at_chance(0.11, 4.64, 10)  # a colour classifier on the same split: chance accuracy, confident
    assert not at_chance(0.5, 1.6, 10)


def test_gap_fires_when_training_far_exceeds_validation() -> None:
    assert gap_check(0.99, 0.55).status == "warn"
    assert gap_check(0.95, 0.9).status == "ok"


def test_selected_epoch_at_an_edge_and_a_score_that_never_moved() -> None:
    first = {"name": "s", "selected_epoch": 1, "epochs": 5, "selection": "val_worst_group", "scores": [0.0] * 5}
    check = selected_epoch_check([first])
    assert check.status == "warn" and "never changed" in check.message
    last = {"name": "s", "selected_epoch": 5, "epochs": 5, "selection": "val_unbiased"}
    assert "train longer" in selected_epoch_check([last]).message
    inner = {"name": "s", "selected_epoch": 3, "epochs": 5, "selection": "val_unbiased"}
    fixed = {"name": "t", "selected_epoch": 1, "epochs": 1, "selection": "last"}
    assert selected_epoch_check([inner, fixed]).status == "ok"


# ---------------------------------------------------------------------------------------------- error sets
def test_error_set_checks_fire_on_empty_half_and_one_class() -> None:
    y = torch.arange(100) % 4
    conflicting = torch.zeros(100, dtype=torch.bool)
    conflicting[:8] = True
    empty = error_set_checks(torch.tensor([], dtype=torch.long), y, 4)
    assert status(empty, "error_set_size") == "fail" and "empty" in empty[0].message
    half = error_set_checks(torch.arange(60), y, 4)
    assert status(half, "error_set_size") == "warn"
    one_class = error_set_checks(torch.tensor([0, 4, 8, 12, 16, 1]), y, 4)
    assert status(one_class, "error_set_classes") == "warn"
    healthy = error_set_checks(torch.arange(8), y, 4, conflicting)
    assert all(c.passed for c in healthy), failing(healthy)
    scored = next(c for c in healthy if c.name == "error_set_vs_conflicting")
    assert scored.uses_labels and scored.value["precision"] == 1.0 and scored.value["recall"] == 1.0
    missed = error_set_checks(torch.arange(50, 58), y, 4, conflicting)
    assert status(missed, "error_set_vs_conflicting") == "warn"


def test_two_class_error_sets_warn_only_when_nearly_one_class() -> None:
    y = torch.arange(100) % 2
    assert status(error_set_checks(torch.tensor([0, 2, 4, 1]), y, 2), "error_set_classes") == "ok"
    assert status(error_set_checks(torch.arange(0, 40, 2), y, 2), "error_set_classes") == "warn"


# ---------------------------------------------------------------------------------------------- weights
def test_weights_on_one_example_fire_and_uniform_weights_do_not() -> None:
    one = torch.zeros(1000)
    one[3] = 1.0
    assert effective_sample_size(one) == pytest.approx(1.0)
    assert top_share(one) == pytest.approx(1.0)
    assert weight_checks(one)[0].status == "warn"
    uniform = torch.ones(1000)
    assert effective_sample_size(uniform) == pytest.approx(1000.0)
    assert weight_checks(uniform)[0].status == "ok"


def test_weights_against_conflicting_examples_are_a_labelled_check() -> None:
    conflicting = torch.arange(100) < 10
    favour = torch.where(conflicting, 5.0, 1.0)
    checks = weight_checks(favour, conflicting)
    assert checks[1].uses_labels and checks[1].status == "ok"
    assert weight_checks(torch.where(conflicting, 0.5, 1.0), conflicting)[1].status == "warn"


# ---------------------------------------------------------------------------------------------- groups, students
def test_group_weights_collapse_for_the_whole_run() -> None:
    collapsed = group_weight_check([0.95, 0.99, 0.999], [3, 3, 3], [0.0, 0.0, 0.0, 1.0])
    assert collapsed.status == "warn" and "group 3" in collapsed.message
    spread = group_weight_check([0.95, 0.6, 0.4], [3, 3, 1], [0.3, 0.3, 0.2, 0.2])
    assert spread.status == "ok" and spread.value["effective_groups"] == pytest.approx(1 / 0.26)


def test_student_that_stops_erring_early() -> None:
    assert student_error_check([0.2, 0.005, 0.0, 0.0]).status == "warn"
    assert student_error_check([0.3, 0.2, 0.1, 0.005]).status == "ok"  # only at the end


def test_teacher_that_predicts_as_the_student_does() -> None:
    pred = torch.arange(200) % 3
    assert disagreement_checks(pred, pred.clone())[0].status == "warn"
    other = pred.clone()
    other[:20] = (other[:20] + 1) % 3
    conflicting = torch.arange(200) < 20
    checks = disagreement_checks(other, pred, conflicting)
    assert [c.status for c in checks] == ["ok", "ok"] and checks[1].uses_labels
    assert disagreement_checks(other, pred, ~conflicting)[1].status == "warn"


def test_masked_inputs_that_hold_no_more_saliency_than_their_share() -> None:
    flat = torch.ones(4, 100)
    assert saliency_mass_check(flat, 10).status == "warn"
    peaked = torch.ones(4, 100)
    peaked[:, :10] = 50.0
    check = saliency_mass_check(peaked, 10)
    assert check.status == "ok" and check.value["masked_mass"] == pytest.approx(500 / 590)


# ---------------------------------------------------------------------------------------------- records
def test_committed_biased_mnist_denetdm_records_say_which_premise_failed() -> None:
    for seed in range(3):
        final = json.loads((BMNIST_DENETDM / f"seed{seed}" / "final.json").read_text())
        checks = get_method("denetdm").record_health(final)
        assert all(c.source == "record" for c in checks)
        alive = next(c for c in checks if c.name == "denetdm_experts_alive")
        assert alive.status == "fail" and "deep expert is at chance" in alive.message and not alive.uses_labels
        role = next(c for c in checks if c.name == "denetdm_biased_expert")
        assert role.status == "fail" and role.uses_labels and "shallow expert is the biased one" in role.message


def test_committed_colored_mnist_denetdm_record_passes() -> None:
    final = json.loads((CMNIST_DENETDM / "seed0" / "final.json").read_text())
    checks = get_method("denetdm").record_health(final)
    assert {c.name for c in checks} >= {"denetdm_experts_alive", "denetdm_biased_expert", "left_chance"}
    assert all(c.passed for c in checks), failing(checks)


def test_report_marks_rows_and_footnotes_failures(tmp_path: Path) -> None:
    for seed in range(3):
        shutil.copytree(BMNIST_DENETDM / f"seed{seed}", tmp_path / "runs" / f"seed{seed}")
    old = markdown_table(summarise(find_runs([tmp_path / "runs"])))
    assert "health" not in old  # records without checks: nothing shown unless re-scored
    table = markdown_table(summarise(find_runs([tmp_path / "runs"], rescore=True)))
    assert "| ✗ [1] |" in table
    assert "[1] denetdm (biased_mnist, rho=0.99): fail `denetdm_biased_expert` (seeds 0, 1, 2;" in table
    assert "re-scored from the record" in table


def test_a_pivot_table_footnotes_failures_or_links_to_them() -> None:
    """The docs pages list what did not pass under the table; the README's table links there in one line."""
    from debiaslab.bench.results import ratio_pivot_markdown

    rows = summarise(find_runs([REPO / "benchmarks/results/cmnist-2026-12-07/cmnist/bam"]))
    full = ratio_pivot_markdown(rows, "colored_mnist", "unbiased")
    short = ratio_pivot_markdown(rows, "colored_mnist", "unbiased", notes_at="page.md")
    assert "⚠ [1]" in full and "\n[1] bam, ratio 0.005: warn `" in full
    assert "⚠ [1]" in short and "[1] bam" not in short and short.endswith("([which, and why](page.md)).")


def test_marks_need_checks_and_show_warnings_and_passes() -> None:
    notes = HealthNotes()
    ok = Check("x", "ok", None, "fine")
    warn = Check("y", "warn", None, "shaky", uses_labels=True)
    assert notes.mark("a", [(0, None), (1, None)]) == ""
    assert notes.mark("b", [(0, [ok]), (1, [ok])]) == "✓"
    assert notes.mark("c", [(0, [ok, warn]), (1, None)]) == "⚠ [1]"
    assert notes.mark("d", [(0, [ok]), (1, None)]) == "✓ (1/2 runs checked)"
    assert notes.lines() == ["[1] c: warn `y` (seed 0; uses attribute labels): shaky (1/2 runs checked)"]


def test_recorded_checks_round_trip() -> None:
    check = Check("z", "fail", {"a": 1}, "broken", uses_labels=True)
    assert recorded_checks({"health": [check.to_dict()]}) == [check]
    assert recorded_checks({"method": "erm"}) is None
