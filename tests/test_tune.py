"""`debiaslab tune`: search spaces, space files, studies in a storage, resume after a kill, two workers sharing a
study, pruning, and the rule that no trial ever evaluates the test split."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("optuna")

import optuna
from optuna.trial import TrialState

import bench_plugin  # noqa: F401  (registers the toy_bench dataset here and in spawned workers)
from debiaslab.cli.main import main
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.methods.registry import get_method, list_methods
from debiaslab.methods.search_space import Distribution, categorical, intrange, loguniform, parse_distribution
from debiaslab.tune.report import search_markdown
from debiaslab.tune.search import _stop_at_budget, counted_trials, run_search
from debiaslab.tune.space import resolve_space
from debiaslab.tune.study import SearchResult, SearchSpec, open_study
from debiaslab.tune.suite import load_tune_suite, shipped_tune_suites
from debiaslab.tune.suite_runner import rule_records

TESTS = Path(__file__).resolve().parent
SMALL = {"model_kwargs": {"width": 8, "depth": 1}, "batch_size": 64}


def spec_for(tmp_path: Path, **kw) -> SearchSpec:
    values = {
        "method": "erm",
        "dataset": "toy_bench",
        "space": resolve_space(get_method("erm"))[0],
        "fixed": dict(SMALL),
        "rule": "val_worst_group",
        "trials": 4,
        "epochs": 2,
        "sampler": "random",
        "pruner": "none",
        "out": str(tmp_path / "search"),
        "imports": ("bench_plugin",),
        "device": "cpu",
    }
    values.update(kw)
    return SearchSpec(**values)


# ---------------------------------------------------------------------------------------------- spaces
def test_every_method_declares_a_valid_space_with_lr_and_weight_decay() -> None:
    for cls in list_methods():
        names = set(cls.Hparams.__dataclass_fields__)
        assert {"lr", "weight_decay"} <= set(cls.search_space), cls.name
        assert set(cls.search_space) <= names, (cls.name, set(cls.search_space) - names)
        for dist in cls.search_space.values():
            assert dist.problem() == ""


def test_ule_search_keeps_the_student_plain_erm() -> None:
    space = get_method("ule").search_space
    assert not {"student_weight_decay", "student_loss", "student_lr"} & set(space)  # the paper's unconstrained student
    assert set(space["omega"].choices) == {"align", "perturb", "mask"}  # gradient readings only


def test_each_declared_space_draws_configurations_its_method_accepts() -> None:
    from debiaslab.tune.space import as_hparams, suggest

    for cls in list_methods():
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        for _ in range(5):
            trial = study.ask()
            params = {name: suggest(trial, name, dist) for name, dist in cls.search_space.items()}
            cls(dataset="colored_mnist", **as_hparams(cls, params))  # raises on an invalid combination


def test_distribution_text_forms_and_their_errors() -> None:
    assert parse_distribution("loguniform(1e-4, 1e-2)") == loguniform(1e-4, 1e-2)
    assert parse_distribution("int(5, 200, log)") == intrange(5, 200, log=True)
    assert parse_distribution("categorical(reweight, mask)") == categorical("reweight", "mask")
    assert parse_distribution({"uniform": [0, 1]}) == Distribution("uniform", 0.0, 1.0)
    for text, expected in (
        ("loguniform(1e-2, 1e-4)", "empty range"),
        ("uniform(1, 1)", "empty range"),
        ("loguniform(0, 1)", "log scale needs low > 0"),
        ("categorical()", "empty list of choices"),
        ("normal(0, 1)", "unknown distribution 'normal'"),
        ("uniform(a, 1)", "not a number"),
        ("int(1.5, 3)", "integer bounds"),
    ):
        with pytest.raises(ConfigError, match=expected):
            parse_distribution(text)


def test_space_overrides_fixed_values_and_user_hparams() -> None:
    space, fixed = resolve_space(
        get_method("jtt"), {"lambda_up": "int(10, 20)", "identify_epochs": 2}, {"lr": 0.01}, source="s.yaml"
    )
    assert space["lambda_up"] == intrange(10, 20)
    assert "identify_epochs" not in space and fixed == {"lr": 0.01, "identify_epochs": 2}
    assert set(space) == {"weight_decay", "lambda_up"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("lrr: loguniform(1e-4, 1e-2)\n", "has no hyperparameter 'lrr'"),
        ("lr: loguniform(1e-2, 1e-4)\n", "lr: .*empty range"),
        ("weight_decay: loguniform(0, 0.1)\n", "weight_decay: .*log scale"),
        ("lr: categorical()\n", "lr: .*empty list of choices"),
        ("- lr\n", "expected a mapping"),
    ],
)
def test_space_file_errors_are_one_line_naming_the_entry(tmp_path: Path, capsys, text: str, expected: str) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(text)
    out = tmp_path / "search"
    code = main(["tune", "--method", "erm", "--dataset", "toy_bench", "--space", str(space), "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error:") and len(err.splitlines()) == 1, err
    assert str(space) in err
    import re

    assert re.search(expected, err), err
    assert not out.exists()  # nothing started, nothing written


def test_unreachable_storage_and_a_directory_holding_another_search(tmp_path: Path, capsys) -> None:
    base = ["tune", "--dataset", "toy_bench", "--trials", "1", "--epochs-cap", "1", "--no-final", "--no-progress"]
    code = main([*base, "--method", "erm", "--storage", f"sqlite:///{tmp_path}/missing/dir/x.db"])
    err = capsys.readouterr().err
    assert code == 2 and "missing/dir" in err and len(err.strip().splitlines()) == 1
    code = main([*base, "--method", "erm", "--storage", "postgresql://someone:secret@127.0.0.1:9/db"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot be opened" in err and "secret" not in err
    out = tmp_path / "s"
    assert main([*base, "--method", "erm", "--out", str(out), "--hp", "batch_size=64"]) == 0
    before = (out / "study.db").read_bytes()
    code = main([*base, "--method", "groupdro", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "holds another search" in err and "groupdro" in err
    assert (out / "study.db").read_bytes() == before  # nothing lost


# ---------------------------------------------------------------------------------------------- searching
def test_a_search_never_evaluates_test_and_records_every_rule(tmp_path: Path, monkeypatch) -> None:
    seen: list[str] = []
    original = Trainer.evaluate

    def spy(self, predict_fn, dataset, modules=None, **kw):
        seen.append(dataset.split)
        return original(self, predict_fn, dataset, modules, **kw)

    monkeypatch.setattr(Trainer, "evaluate", spy)
    result = run_search(spec_for(tmp_path, trials=3))
    assert seen and set(seen) == {"val"}
    assert result.counts["done"] == 3
    for trial in (tmp_path / "search" / "trials").iterdir():
        final = json.loads((trial / "final.json").read_text())
        assert set(final["metrics"]) == {"val"} and "test_report" not in final and "selections" not in final
        assert set(final["scores"]) == {
            "val_worst_group",
            "val_unbiased",
            "val_worst_class",
            "val_classdiff",
            "val_accuracy",
        }
        assert not (trial / "test_groups.csv").exists() and not (trial / "checkpoints").exists()
    study = open_study(spec_for(tmp_path, trials=3))
    assert all("val_classdiff" in t.user_attrs["scores"] for t in study.trials)
    best = json.loads((tmp_path / "search" / "best.json").read_text())["best"]
    assert set(best) >= {"val_worst_group", "val_worst_class"}
    chosen = best["val_worst_class"]  # the trial's folder, relative to the search directory
    assert chosen["run_dir"] == f"trials/trial{chosen['trial']:04d}"
    assert (tmp_path / "search" / chosen["run_dir"] / "final.json").is_file()
    assert (tmp_path / "search" / "search.md").read_text().count("| val_") >= 2
    assert (tmp_path / "search" / "search-history.png").stat().st_size > 0


def test_chosen_configuration_is_trained_on_seeds_and_only_those_runs_see_test(tmp_path: Path, capsys) -> None:
    out = tmp_path / "t"
    args = ["tune", "--method", "erm", "--dataset", "toy_bench", "--trials", "2", "--epochs-cap", "2", "--no-progress"]
    more = ["--sampler", "random", "--out", str(out), "--seeds", "0", "--hp", "batch_size=64"]
    assert main([*args, *more, "--imports", "bench_plugin"]) == 0
    finals = sorted((out / "final" / "val_worst_group").rglob("final.json"))
    assert len(finals) == 1
    best = json.loads((out / "best.json").read_text())["best"]["val_worst_group"]
    for path in finals:
        final = json.loads(path.read_text())
        assert "test" in final["metrics"] and final["selection"] == "val_worst_group"
        assert final["hparams"]["lr"] == best["params"]["lr"] and final["hparams"]["epochs"] == 2
    assert "erm" in capsys.readouterr().out


def test_a_search_on_inferred_groups_trains_and_selects_every_trial_and_final_run_on_them(tmp_path: Path) -> None:
    """``tune --groups INFERRER``: inferred once for the search, every trial's labels are the inferred groups, and
    the final runs infer their own groups and are tested on the true ones."""
    from debiaslab.inference.groups_file import read_groups

    out = tmp_path / "t"
    args = ["tune", "--method", "groupdro", "--dataset", "toy_bench", "--trials", "2", "--epochs-cap", "2"]
    more = ["--sampler", "random", "--out", str(out), "--seeds", "0", "--hp", "batch_size=64", "--no-progress"]
    groups = ["--groups", "error_set", "--groups-hp", "identify_epochs=2", "--imports", "bench_plugin"]
    assert main([*args, *more, *groups]) == 0
    meta = read_groups(out / "groups" / "error_set" / "seed0.npz").meta
    trials = sorted((out / "trials").iterdir())
    assert len(trials) == 2
    for trial in trials:
        final = json.loads((trial / "final.json").read_text())
        assert final["labels"]["train"] == "inferred" and final["labels"]["select"] == "inferred"
        assert final["groups"]["sha256"] == meta["sha256"] and set(final["metrics"]) == {"val"}
    (final_path,) = (out / "final" / "val_worst_group").rglob("final.json")
    final = json.loads(final_path.read_text())
    assert final["labels"]["train"] == "inferred" and "test" in final["metrics"]
    assert final["groups"]["inferrer"] == "error_set"


def test_a_search_on_inferred_groups_selects_on_them_by_default() -> None:
    from debiaslab.tune.command import default_rule

    assert default_rule("no_such_dataset", {}, None, None, inferred=True) == "val_worst_group"  # nothing is built


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["--groups", "nope"], "--groups 'nope': expected a registered inferrer"),
        (["--groups-hp", "identify_epochs=2"], "--groups-hp sets an inferrer's settings"),
        (["--groups", "error_set", "--groups-hp", "nope=1"], "nope"),
    ],
)
def test_tune_groups_errors_are_one_line_before_any_trial(tmp_path: Path, capsys, extra: list, expected: str) -> None:
    args = ["tune", "--method", "groupdro", "--dataset", "toy_bench", "--trials", "1", "--out", str(tmp_path / "t")]
    assert main([*args, "--imports", "bench_plugin", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1
    assert not (tmp_path / "t").exists()


def test_journal_file_storage_holds_the_study(tmp_path: Path) -> None:
    journal = tmp_path / "shared" / "study.journal"
    journal.parent.mkdir()
    spec = spec_for(tmp_path, trials=2, epochs=1, storage=f"journal:{journal}")
    assert run_search(spec).counts["done"] == 2
    assert journal.stat().st_size > 0 and not (Path(spec.out) / "study.db").exists()
    assert len(counted_trials(open_study(spec))) == 2


def test_pruned_trials_stop_early_and_are_marked_pruned(tmp_path: Path, monkeypatch) -> None:
    import debiaslab.tune.study as study_module

    monkeypatch.setattr(study_module, "MEDIAN_STARTUP_TRIALS", 1)
    monkeypatch.setattr(study_module, "MEDIAN_WARMUP_STEPS", 0)
    # trial 0 (lr 1e-2) learns; the later ones (lr 1e-5) cannot beat its per-epoch scores and are pruned
    spec = spec_for(
        tmp_path,
        trials=3,
        epochs=4,
        pruner="median",
        space={"lr": loguniform(1e-5, 1.1e-5)},
        fixed={**SMALL, "weight_decay": 0.0},
        rule="val_accuracy",
    )
    study = open_study(spec)
    storage_trial = optuna.trial.create_trial(
        params={"lr": 1.05e-5},
        distributions={"lr": optuna.distributions.FloatDistribution(1e-5, 1.1e-5, log=True)},
        value=0.99,
        intermediate_values={1: 0.99, 2: 0.99, 3: 0.99, 4: 0.99},
        user_attrs={"scores": {"val_accuracy": 0.99}},
    )
    study.add_trial(storage_trial)
    result = run_search(spec)
    states = [r["state"] for r in result.trials]
    assert states[0] == "complete" and states.count("pruned") == 2, states
    pruned = [r for r in result.trials if r["state"] == "pruned"]
    assert all(r["last_step"] == 1 for r in pruned)
    for r in pruned:  # stopped right after the judged epoch
        assert (
            len((Path(spec.out) / "trials" / f"trial{r['number']:04d}" / "metrics.jsonl").read_text().splitlines()) == 1
        )


def test_two_worker_processes_share_one_study(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, trials=6, epochs=3, fixed={**SMALL, "batch_size": 16})
    result = run_search(spec, workers=2)
    study = open_study(spec)
    counted = counted_trials(study)
    assert 6 <= len(counted) <= 7 and result.counts["done"] == len(counted)
    workers = {t.user_attrs["worker"] for t in counted}
    assert len(workers) == 2, workers
    assert len({t.number for t in counted}) == len(counted)


class _StopSpy:
    """A study's trial lists, with ``stop`` recorded instead of raised outside ``optimize``."""

    def __init__(self, study) -> None:
        self.study, self.stopped = study, False

    def get_trials(self, **kw):
        return self.study.get_trials(**kw)

    def stop(self) -> None:
        self.stopped = True


def test_a_worker_starts_no_trial_past_the_budget_another_worker_is_filling(tmp_path: Path) -> None:
    spec = spec_for(tmp_path, trials=3)
    study = optuna.create_study(direction="maximize")
    for value in (0.5, 0.6):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"scores": {}}))
    other = study.ask()  # the third trial, still running in a live worker
    other.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    spy = _StopSpy(study)
    _stop_at_budget(spec)(spy, study.trials[1])
    assert spy.stopped  # two finished + one in flight fill a budget of three

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # the worker of a killed search being resumed: its trial will never finish
    other.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")
    spy = _StopSpy(study)
    _stop_at_budget(spec)(spy, study.trials[1])
    assert not spy.stopped


def test_a_search_report_says_trials_past_the_budget_are_not_chosen_from(tmp_path: Path) -> None:
    counts = {"done": 5, "complete": 5, "pruned": 0, "failed": 0, "running": 0}
    text = search_markdown(SearchResult(spec_for(tmp_path, trials=4), counts))
    assert "first 4 trials by number (the budget); 1 more started" in text
    counts = {**counts, "done": 4, "complete": 4}
    assert "first 4 trials" not in search_markdown(SearchResult(spec_for(tmp_path, trials=4), counts))


def test_a_killed_search_resumes_and_continues_the_trial_count(tmp_path: Path, capsys) -> None:
    out = tmp_path / "search"
    command = [
        sys.executable, "-c", "import bench_plugin; from debiaslab.cli.main import run; run()",
        "-q", "tune", "--method", "erm", "--dataset", "toy_bench", "--data-opt", "n=1500", "--trials", "6",
        "--epochs-cap", "8", "--sampler", "random", "--pruner", "none", "--no-final", "--no-progress",
        "--hp", "batch_size=32", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = out / "study.db"
    deadline = time.monotonic() + 300  # generous: a loaded machine starts the process slowly
    complete = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=10) as con:  # waits out the writer's lock
                    complete = con.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
            except sqlite3.OperationalError:
                complete = 0
        if complete >= 1:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    study = optuna.load_study(study_name="erm-toy_bench-n1500", storage=f"sqlite:///{db}")
    before = {t.number: t.params for t in study.trials if t.state == TrialState.COMPLETE}
    assert 1 <= len(before) < 6
    assert main(command[3:]) == 0  # the same command again, here (bench_plugin is imported in this process)
    study = optuna.load_study(study_name="erm-toy_bench-n1500", storage=f"sqlite:///{db}")
    done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(done) == 6
    assert {t.number: t.params for t in done if t.number in before} == before  # the first trials were kept
    new = [t.number for t in done if t.number not in before]
    assert min(new) > max(before)  # numbering continues after the killed trial
    assert "6/6 trials done" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- suites
def test_shipped_tuning_suite_gives_every_method_the_same_budget() -> None:
    assert "cmnist-tune" in shipped_tune_suites()
    suite = load_tune_suite("cmnist-tune")
    assert suite.trials == 20 and suite.ratio == 0.01 and suite.final_ratios == (0.005, 0.01, 0.02, 0.05)
    assert suite.final_seeds == (0, 1, 2) and len(suite.methods) >= 8
    assert any(get_method_rule_needs_groups(r) for r in suite.rules)
    assert any(not get_method_rule_needs_groups(r) for r in suite.rules)
    for entry in suite.methods:
        assert "epochs" not in entry.fixed and {"lr", "weight_decay"} & set(entry.space)


def test_biased_mnist_tuning_suite_has_the_colored_mnist_budget_and_methods() -> None:
    cmnist, bmnist = load_tune_suite("cmnist-tune"), load_tune_suite("bmnist-tune")
    same = ("trials", "epochs", "sampler", "pruner", "objective", "rules", "final_seeds")
    assert {k: getattr(bmnist, k) for k in same} == {k: getattr(cmnist, k) for k in same}
    assert [e.label for e in bmnist.methods] == [e.label for e in cmnist.methods]
    assert bmnist.search_options == {"rho": 0.99} and bmnist.final_ratios is None


def test_label_free_tuning_suite_has_the_colored_mnist_budget_and_searches_on_inferred_groups() -> None:
    cmnist, labelfree = load_tune_suite("cmnist-tune"), load_tune_suite("labelfree-tune")
    same = ("trials", "epochs", "sampler", "pruner", "objective", "rules", "final_seeds", "final_ratios")
    assert {k: getattr(labelfree, k) for k in same} == {k: getattr(cmnist, k) for k in same}
    assert labelfree.search_options == cmnist.search_options
    inferrers = {e.groups["inferrer"] for e in labelfree.methods}
    assert inferrers == {"error_set", "gce", "amplified", "cluster", "eiil"}
    assert {e.method for e in labelfree.methods} == {"reweight_group", "groupdro"} <= {e.label for e in cmnist.methods}


def test_biased_mnist_tuning_trains_the_recipe_of_the_preset_rows_it_is_compared_with() -> None:
    """Each tuned row sits beside its `bmnist` bench row: the same model and optimiser, and that row's values of
    every setting the search does not cover (not the dataset preset's SimpleConvNet)."""
    from debiaslab.bench.suite import load_suite

    bench = {m.method: m.hparams for m in load_suite("bmnist").methods}
    for entry in load_tune_suite("bmnist-tune").methods:
        row = bench[entry.method]
        kept = {k: v for k, v in row.items() if k not in entry.space and k not in ("epochs", "selection")}
        assert {k: entry.fixed.get(k) for k in kept} == kept, entry.label
        assert entry.fixed["model"] == "mlp"


def get_method_rule_needs_groups(rule: str) -> bool:
    from debiaslab.evaluation.selection import get_rule

    return get_rule(rule).needs_groups


def test_tuning_suite_runs_searches_and_one_table_per_rule(tmp_path: Path) -> None:
    from debiaslab.tune.suite import parse_tune_suite
    from debiaslab.tune.suite_runner import run_tune_suite

    doc = {
        "imports": ["bench_plugin"],
        "trials": 2,
        "epochs": 1,
        "sampler": "random",
        "pruner": "none",
        "objective": "val_unbiased",
        "rules": ["val_unbiased", "val_worst_class"],
        "dataset": {"name": "toy_bench", "ratio": 0.05},
        "final": {"ratios": [0.05], "seeds": [0]},
        "methods": [{"method": "erm", "hparams": SMALL}],
    }
    suite = parse_tune_suite(doc, "t.yaml", "t")
    lines = run_tune_suite(suite, tmp_path / "t", progress=False)
    report = (tmp_path / "t" / "report.md").read_text()
    assert "2 trials per method" in report and "## Tuned by val_worst_class" in report
    best = json.loads((tmp_path / "t" / "search" / "erm" / "best.json").read_text())["best"]
    same = best["val_unbiased"]["trial"] == best["val_worst_class"]["trial"]
    finals = list((tmp_path / "t").glob("final-*/**/final.json"))
    assert len(finals) == (1 if same else 2)  # 1 method x 1 ratio x 1 seed, trained once when both rules agree
    for rule in suite.rules:
        assert len(rule_records(tmp_path / "t", rule)) == 1
        assert report.split(f"## Tuned by {rule}")[1].count("| erm |") >= 1
    assert any("tuned by val_unbiased" in line for line in lines)


def _best(trial: int) -> dict:
    return {"trial": trial, "score": 0.5, "params": {"lr": 1e-3}, "hparams": {"lr": 1e-3}}


def test_a_trial_chosen_by_two_rules_is_trained_once_when_training_never_reads_the_rule() -> None:
    from debiaslab.tune.suite import parse_tune_suite
    from debiaslab.tune.suite_runner import plan_finals

    doc = {
        "trials": 2,
        "epochs": 1,
        "objective": "val_worst_class",
        "rules": ["val_unbiased", "val_worst_class"],
        "dataset": {"name": "colored_mnist", "ratio": 0.01},
        "methods": ["erm", "denetdm", "jtt", {"method": "rest", "hparams": {"scheduler": "plateau"}}],
    }
    suite = parse_tune_suite(doc, "t.yaml", "t")
    agree = {"val_unbiased": _best(3), "val_worst_class": _best(3)}
    searches = {e.label: SearchResult(None, {}, dict(agree)) for e in suite.methods}
    searches["jtt"] = SearchResult(None, {}, {"val_unbiased": _best(1), "val_worst_class": _best(2)})
    plan = plan_finals(suite, suite.methods, searches)
    label_free = {c.label: c.hparams for c in plan["val_worst_class"]}  # the objective deploys shared runs
    with_groups = {c.label: c.hparams for c in plan["val_unbiased"]}
    assert label_free["erm"]["selection"] == "val_worst_class" and label_free["erm"]["report_rules"] == ["val_unbiased"]
    assert "erm" not in with_groups
    # DeNetDM's experts select their epoch by the rule, a plateau schedule steps on it: trained once per rule
    assert "report_rules" not in label_free["denetdm"] and with_groups["denetdm"]["selection"] == "val_unbiased"
    assert "report_rules" not in label_free["rest"] and "rest" in with_groups
    assert "report_rules" not in label_free["jtt"] and "jtt" in with_groups  # different trials


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"trials": 0}, "'trials' = 0"),
        ({"pruner": "asha"}, "'pruner' = 'asha'"),
        ({"rules": ["last"]}, "'rules\\[0\\]' = 'last'"),
        ({"methods": [{"method": "erm", "space": {"lr": "loguniform(1, 0.1)"}}]}, "methods\\[0\\].space: lr: .*empty"),
        ({"methods": [{"method": "erm", "hparams": {"epochs": 3}}]}, "methods\\[0\\].hparams.epochs"),
        ({"dataset": {"name": "nope"}}, "dataset.name"),
        ({"methods": [{"method": "groupdro", "groups": "nope"}]}, "methods\\[0\\].groups.inferrer' = 'nope'"),
    ],
)
def test_tuning_suite_errors_name_the_key(change: dict, expected: str) -> None:
    from debiaslab.tune.suite import parse_tune_suite

    doc = {"dataset": {"name": "toy_bench"}, "methods": ["erm"], **change}
    with pytest.raises(ConfigError, match=expected):
        parse_tune_suite(doc, "t.yaml")


def test_pruning_benchmark_merges_separate_runs_relative_to_the_unpruned_one(tmp_path: Path) -> None:
    from toys import load_benchmark_script

    bench = load_benchmark_script("tune_pruning")
    setup = {"method": "erm", "trials": 20, "epochs": 8, "rule": "val_unbiased"}
    counts = {"done": 20, "pruned": 0}
    for name, wall, epochs in (("none", 100.0, 160), ("median", 40.0, 60)):
        doc = {
            "command": name,
            "setup": {**setup, "pruners": [name]},
            "machine": "cpu",
            "results": [
                {"pruner": name, "wall_s": wall, "validated_epochs": epochs, "trials": counts, "best_score": 0.5}
            ],
        }
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    out = tmp_path / "all.json"
    bench.merge([str(tmp_path / "none.json"), str(tmp_path / "median.json")], out)
    results = {r["pruner"]: r for r in json.loads(out.read_text())["results"]}
    assert results["median"]["time_vs_unpruned"] == 0.4 and results["median"]["epochs_vs_unpruned"] == 0.375
    other = json.loads((tmp_path / "median.json").read_text())
    other["setup"]["epochs"] = 4
    (tmp_path / "median.json").write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="settings differ"):
        bench.merge([str(tmp_path / "none.json"), str(tmp_path / "median.json")], out)


def test_a_running_trial_whose_worker_never_named_itself_stops_counting_after_a_grace(
    tmp_path: Path, monkeypatch
) -> None:
    from debiaslab.tune import search as search_module

    spec = spec_for(tmp_path, trials=3)
    study = optuna.create_study(direction="maximize")
    for value in (0.5, 0.6):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"scores": {}}))
    study.ask()  # created, then its worker was killed before it wrote its name
    spy = _StopSpy(study)
    _stop_at_budget(spec)(spy, study.trials[1])
    assert spy.stopped  # just created: its worker may be about to name itself
    monkeypatch.setattr(search_module, "UNNAMED_GRACE_S", -1.0)
    spy = _StopSpy(study)
    _stop_at_budget(spec)(spy, study.trials[1])
    assert not spy.stopped  # past the grace it is not in flight, and the budget has room for one more


def test_a_search_alone_on_its_directory_fails_a_dead_search_s_unnamed_trial_at_once(tmp_path: Path) -> None:
    """A search killed between creating a trial and naming its worker on it: the resumed search, the only one of
    its directory on this machine (its lock), fails that trial at once and runs the whole budget."""
    import fcntl

    from debiaslab.tune.presence import LOCK

    spec = spec_for(tmp_path, trials=3)
    study = open_study(spec, heartbeat_s=None)  # trials asked by hand, as a killed search left them
    orphan = study.ask()  # just created by a search that died at once: no worker named, well within the grace
    result = run_search(spec)
    assert result.counts["done"] == 3 and result.counts["running"] == 0
    trials = open_study(spec).trials
    assert trials[orphan.number].state == TrialState.FAIL
    assert "not yet named" in trials[orphan.number].user_attrs["killed"]

    other = study.ask()  # another search of the directory holds its lock: its fresh trial is left alone
    with open(Path(spec.out) / LOCK, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        run_search(spec)
    assert open_study(spec).trials[other.number].state == TrialState.RUNNING


def test_every_shipped_suite_searches_around_each_method_s_own_preset() -> None:
    """A space that leaves out the preset's value can miss the region where the method works at all (SSA's
    predictors stay at chance below their Colored MNIST step). Allowed: a weight decay of 0 (a log scale cannot
    hold it; its low end stands for it), an unset value (None: the method's default rule), and epoch counts above
    the search's epoch cap."""
    for name in shipped_tune_suites():
        suite = load_tune_suite(name)
        for entry in suite.methods:
            hparams = get_method(entry.method)(dataset=suite.dataset, **entry.fixed).hparams
            for field, dist in entry.space.items():
                value = getattr(hparams, field)
                if dist.kind == "categorical":
                    assert value in dist.choices, (name, entry.label, field, value)
                elif value is None or (value == 0 and dist.kind == "loguniform"):
                    continue
                elif "epochs" in field:
                    assert dist.low <= min(value, suite.epochs) <= dist.high, (name, entry.label, field, value)
                else:
                    assert dist.low <= value <= dist.high, (name, entry.label, field, value, str(dist))
