"""Benchmark runner: suite files and their errors, the plan (skip / mismatch / resume / retry), isolated failures
(exception, non-finite loss, a crashed worker process), resume of an interrupted run, the Ray error path, CLI."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

import bench_plugin  # noqa: F401  (registers toy_bench, bench_raise, bench_crash in this process too)
from debiaslab.bench.runner import RunState, dependency_waves, inspect_run, run_suite
from debiaslab.bench.suite import load_suite, shipped_suites
from debiaslab.cli.main import main
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.methods.registry import get_method
from debiaslab.run.train import comparable_identity, train_run
from toys import comparable

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"model_kwargs": {"width": 16, "depth": 1}, "batch_size": 64, "lr": 0.01}
QUICK_METHODS = ["erm", "reweight_group", "resample_group", "groupdro", "jtt", "lff", "dfr", "bam", "ule"]


def write_suite(tmp_path: Path, doc: dict | str, name: str = "toy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
    return path


def toy_suite(methods: list, **extra) -> dict:
    return {
        "name": "toy",
        "imports": ["bench_plugin"],
        "seeds": [0],
        "epochs": 2,
        "datasets": [{"name": "toy_bench", "ratios": [0.1]}],
        "methods": methods,
        **extra,
    }


def erm(label: str = "erm", **hp) -> dict:
    return {"method": "erm", "label": label, "hparams": {**TINY, **hp}}


# ---------------------------------------------------------------------------------------------- suites
def test_shipped_suites_parse_with_the_expected_grids() -> None:
    assert {"quick", "cmnist", "selection"} <= set(shipped_suites())
    quick = load_suite("quick")
    assert [m.label for m in quick.methods][: len(QUICK_METHODS)] == QUICK_METHODS
    runs = quick.plan()
    assert len(runs) == len(quick.methods)  # one ratio, one seed
    first = runs[0]
    assert first.run_dir == Path("runs/bench/quick/colored_mnist/erm/r0.01/seed0")
    assert first.config.dataset_options == {"ratio": 0.01} and first.config.hparams["epochs"] == 5
    assert first.config.num_threads == 1 and first.config.resume and not first.config.progress

    cmnist = load_suite("cmnist")
    runs = cmnist.plan("runs")
    assert len(runs) == len(cmnist.methods) * (3 * 3 + 5)  # seeds 0-4 at 1 %, 0-2 elsewhere
    # the layout of the runs already trained under runs/cmnist/<method>/r<ratio>/seed<seed>, default budgets
    assert runs[0].run_dir == Path("runs/cmnist/erm/r0.005/seed0") and runs[0].config.hparams == {}
    assert sorted({r.ratio for r in runs}) == [0.005, 0.01, 0.02, 0.05]
    assert sorted({r.config.seed for r in runs if r.ratio == 0.01}) == [0, 1, 2, 3, 4]
    assert sorted({r.config.seed for r in runs if r.ratio == 0.02}) == [0, 1, 2]
    assert Path("runs/cmnist/erm/r0.01/seed4") in {r.run_dir for r in runs}
    assert {r.config.seed for r in load_suite("bmnist").plan()} == {0, 1, 2, 3, 4}
    # the seeds added later, alone: only the 1 % slice has them; DFR's base run is the ERM run of the same seed
    added = cmnist.plan("runs", seeds=[3, 4])
    assert {(r.ratio, r.config.seed) for r in added} == {(0.01, 3), (0.01, 4)} and len(added) == len(cmnist.methods) * 2
    dfr = next(r for r in added if r.label == "dfr" and r.config.seed == 4)
    assert dfr.depends_on == ("runs/cmnist/erm/r0.01/seed4",)
    with pytest.raises(ConfigError, match="--seeds 7: not a seed of suite 'cmnist'"):
        cmnist.plan(seeds=[7])

    selection = load_suite("selection")
    hp = selection.plan()[0].config.hparams
    assert hp["selection"] == "val_worst_group"
    assert hp["report_rules"] == ["val_unbiased", "val_worst_class", "val_classdiff"]
    assert "dfr" not in {m.method for m in selection.methods}


def test_plan_layout_labels_options_and_only(tmp_path: Path) -> None:
    doc = toy_suite(
        [erm(), erm("erm-wide", model_kwargs={"width": 32, "depth": 1}), "bench_raise"],
        seeds=[0, 3],
        datasets=[{"name": "toy_bench", "ratios": [0.1, 0.2], "options": {"n": 96}}],
        selection="val_unbiased",
    )
    suite = load_suite(write_suite(tmp_path, doc))
    runs = suite.plan(tmp_path / "out")
    assert len(runs) == 2 * 3 * 2
    dirs = {str(r.run_dir.relative_to(tmp_path / "out")) for r in runs}
    assert "toy_bench-n96/erm-wide/r0.2/seed3" in dirs and "toy_bench-n96/bench_raise/r0.1/seed0" in dirs
    wide = next(r for r in runs if r.label == "erm-wide")
    assert wide.config.hparams == {
        "epochs": 2,
        "selection": "val_unbiased",
        **TINY,
        "model_kwargs": {"width": 32, "depth": 1},
    }
    assert wide.config.dataset_options in ({"n": 96, "ratio": 0.1}, {"n": 96, "ratio": 0.2})
    assert {r.label for r in suite.plan(only=["erm"])} == {"erm", "erm-wide"}  # a method name keeps every label
    assert {r.label for r in suite.plan(only=["erm-wide"])} == {"erm-wide"}
    with pytest.raises(ConfigError, match="--only nope: not a method of suite 'toy'"):
        suite.plan(only=["nope"])


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"bogus": 1}, "unknown key 'bogus'"),
        ({"seeds": [0, "1"]}, "key 'seeds[1]' = '1'; expected an integer >= 0"),
        ({"seeds": [0, 0]}, "key 'seeds' = [0, 0]; expected distinct values"),
        ({"epochs": 0}, "key 'epochs' = 0; expected an integer >= 1"),
        ({"selection": "val_best"}, "key 'selection' = 'val_best'; expected a selection rule"),
        ({"report_rules": ["val_unbiased", "worst"]}, "key 'report_rules[1]' = 'worst'"),
        ({"methods": []}, "key 'methods' = []; expected a non-empty list"),
        ({"methods": ["ermm"]}, "key 'methods[0].method' = 'ermm'; expected a registered method"),
        ({"methods": [{"method": "erm", "lr": 1}]}, "unknown key 'methods[0].lr'"),
        ({"methods": ["erm", "erm"]}, "key 'methods[1].label' = 'erm'; expected a label not used"),
        ({"methods": [{"method": "erm", "label": "a/b"}]}, "key 'methods[0].label' = 'a/b'"),
        ({"methods": [{"method": "erm", "hparams": {"lrr": 1}}]}, "methods[0] (erm) on toy_bench: method 'erm' has no"),
        ({"methods": [{"method": "erm", "hparams": {"epochs": -1}}]}, "epochs -1 must be >= 1"),
        ({"datasets": [{"name": "mnist_typo"}]}, "key 'datasets[0].name' = 'mnist_typo'; expected a registered"),
        ({"datasets": [{"name": "toy_bench", "ratios": ["5e-3"]}]}, "'datasets[0].ratios[0]' = '5e-3'"),
        ({"datasets": [{"name": "toy_bench", "ratios": [1.5]}]}, "expected a number in (0, 1)"),
        ({"datasets": [{"name": "toy_bench", "options": {"size": 3}}]}, "key 'datasets[0].options.size' = 3"),
        ({"datasets": [{"name": "toy_bench", "seeds": [1, 1]}]}, "key 'datasets[0].seeds' = [1, 1]; expected distinct"),
        (
            {"datasets": [{"name": "toy_bench", "ratios": [0.1, 0.2]}, {"name": "toy_bench", "ratios": [0.2]}]},
            "key 'datasets[1]' = 'toy_bench'; expected datasets with distinct folders",
        ),
        ({"imports": ["no_such_plugin_module"]}, "key 'imports[0]' = 'no_such_plugin_module'"),
    ],
)
def test_suite_errors_name_file_key_and_value(tmp_path: Path, change: dict, expected: str) -> None:
    path = write_suite(tmp_path, {**toy_suite([erm()]), **change}, name="bad.yaml")
    with pytest.raises(ConfigError) as info:
        load_suite(path)
    message = str(info.value)
    assert str(path) in message and expected in message


def test_unknown_suite_and_broken_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown suite 'nope'.*one of: .*quick"):
        load_suite("nope")
    with pytest.raises(ConfigError, match=r"missing\.yaml does not exist"):
        load_suite(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_suite(write_suite(tmp_path, "methods: [erm\n", name="broken.yaml"))
    with pytest.raises(ConfigError, match="top level = \\[1, 2\\]; expected a mapping"):
        load_suite(write_suite(tmp_path, "[1, 2]\n", name="list.yaml"))


# ---------------------------------------------------------------------------------------------- plan states
def _fake_run(run, identity: dict | None = None, final: bool = False, error: str | None = None) -> None:
    d = run.run_dir
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.yaml").write_text(yaml.safe_dump({"run": identity or json.loads(json.dumps(run.config.identity()))}))
    if final:
        metrics = {"unbiased": 0.5, "accuracy": 0.6}
        cfg = run.config
        doc = {"method": cfg.method, "dataset": cfg.dataset, "dataset_options": cfg.dataset_options}
        doc.update(hparams=cfg.hparams, seed=cfg.seed, selection="val_worst_group", metrics={"test": metrics})
        (d / "final.json").write_text(json.dumps(doc))
    if error:
        (d / "error.txt").write_text(error + "\n\ntraceback\n")


def test_plan_skips_finished_reports_mismatch_and_resumes(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, toy_suite([erm("a"), erm("b"), erm("c"), erm("d"), erm("e")])))
    out = tmp_path / "out"
    a, b, c, d, e = suite.plan(out)
    _fake_run(a, final=True)
    other = {**json.loads(json.dumps(b.config.identity())), "hparams": {"lr": 0.5}}
    _fake_run(b, identity=other, final=True)
    _fake_run(c)  # interrupted: config, no final
    _fake_run(d, error="RuntimeError: boom")
    assert inspect_run(a) == ("finished", "")
    status, detail = inspect_run(b)
    assert status == "mismatch" and "describes another run" in detail and "hparams: found {'lr': 0.5}" in detail
    assert inspect_run(c) == ("resume", "") and inspect_run(d) == ("failed", "RuntimeError: boom")
    assert inspect_run(e) == ("todo", "")

    plan = run_suite(suite, out, dry_run=True)
    assert [s.status for s in plan.states] == ["finished", "mismatch", "resume", "failed", "todo"]
    assert not (out / "report.md").exists()  # a dry run writes nothing

    before = (b.run_dir / "config.yaml").read_text()
    result = run_suite(suite, out, report_only=True, progress=False)
    assert [s.status for s in result.states] == ["skipped", "mismatch", "resume", "failed", "todo"]
    assert (b.run_dir / "config.yaml").read_text() == before and not (e.run_dir / "config.yaml").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["skipped", "mismatch", "resume", "failed", "todo"]
    report = (out / "report.md").read_text()
    assert "**mismatch** `b toy_bench r0.1 seed0`" in report and "describes another run" in report
    assert "**failed** `d toy_bench r0.1 seed0`" in report and "(toy_bench/d/r0.1/seed0/error.txt)" in report
    assert "| a | toy_bench | 0.1 | val_worst_group | train: none · select: val groups | 1 | 50.0 (n=1) |" in report


def test_finished_run_with_other_resolved_defaults_is_not_reused(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, toy_suite([erm("a"), erm("b")])))
    a, b = suite.plan(tmp_path / "out")
    for run, wd in ((a, None), (b, 0.123)):
        _fake_run(run, final=True)
        method = get_method(run.config.method)(dataset=run.config.dataset, **run.config.hparams)
        resolved = json.loads(json.dumps(dataclasses.asdict(method.hparams)))
        resolved["lr"] = 0.5  # set by the suite: part of the identity, not compared again here
        if wd is not None:
            resolved["weight_decay"] = wd  # as if the method's table default had changed since the run was trained
        doc = yaml.safe_load((run.run_dir / "config.yaml").read_text())
        (run.run_dir / "config.yaml").write_text(yaml.safe_dump({**doc, "resolved_hparams": resolved}))
    assert inspect_run(a) == ("finished", "")
    status, detail = inspect_run(b)
    assert status == "mismatch" and "other default hyperparameters (weight_decay: then 0.123, now" in detail


# ---------------------------------------------------------------------------------------------- execution
def test_failing_runs_are_recorded_and_the_others_finish_then_are_skipped(tmp_path: Path) -> None:
    methods = [erm("base"), "bench_raise", "bench_crash", erm("erm-nan", lr=1e30, optimizer="sgd")]
    suite = load_suite(write_suite(tmp_path, toy_suite(methods)))
    out = tmp_path / "out"
    result = run_suite(suite, out, workers=2, progress=False)
    by_label = {s.run.label: s for s in result.states}
    assert by_label["base"].status == "finished" and (by_label["base"].run.run_dir / "final.json").is_file()
    for label, message in (
        ("bench_raise", "RuntimeError: deliberate failure"),
        ("bench_crash", "worker process crashed"),
        ("erm-nan", "TrainingError: non-finite loss"),
    ):
        state = by_label[label]
        assert state.status == "failed" and message in state.detail, (label, state.detail)
        error = (state.run.run_dir / "error.txt").read_text()
        assert error.splitlines()[0].startswith(("RuntimeError", "WorkerCrashed", "TrainingError"))
        assert not (state.run.run_dir / ".bench-running").exists()
    assert "Traceback (most recent call last)" in (by_label["bench_raise"].run.run_dir / "error.txt").read_text()
    assert "_fit" in (by_label["bench_raise"].run.run_dir / "error.txt").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["finished"] == 1 and summary["counts"]["failed"] == 3
    assert "| base | toy_bench | 0.1 |" in result.tables["results"]

    final = by_label["base"].run.run_dir / "final.json"
    stamp = final.stat().st_mtime_ns
    again = run_suite(suite, out, workers=2, only=["base"], progress=False)
    assert [s.status for s in again.states] == ["skipped"] and again.wall_s is None  # nothing trained
    assert final.stat().st_mtime_ns == stamp


class _Interrupt(Exception):
    pass


def test_an_interrupted_run_resumes_to_the_uninterrupted_result(tmp_path: Path, monkeypatch) -> None:
    suite = load_suite(write_suite(tmp_path, toy_suite([erm()], epochs=4)))
    (run,) = suite.plan(tmp_path / "out")
    full_cfg = run.config.__class__(**{**vars(run.config), "out": str(tmp_path / "full"), "resume": False})
    train_run(full_cfg)

    original = Trainer._train_epoch

    def dies_in_epoch_3(self, stage, train, optimizer, flat_params, ctx):
        if ctx.epoch == 2:
            raise _Interrupt
        return original(self, stage, train, optimizer, flat_params, ctx)

    with monkeypatch.context() as mp:
        mp.setattr(Trainer, "_train_epoch", dies_in_epoch_3)
        with pytest.raises(_Interrupt):
            train_run(run.config)
    assert inspect_run(run)[0] == "resume" and (run.run_dir / "checkpoints" / "erm.last.pt").is_file()

    result = run_suite(suite, tmp_path / "out", workers=1, progress=False)
    assert [s.status for s in result.states] == ["finished"]
    lines = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    full = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and comparable(lines) == comparable(full)
    ours, theirs = (json.loads((d / "final.json").read_text()) for d in (run.run_dir, tmp_path / "full"))
    assert ours["metrics"] == theirs["metrics"] and ours["selected"] == theirs["selected"]


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="Ray is installed: the error path is moot")
def test_ray_executor_without_ray_is_a_clear_error(tmp_path: Path) -> None:
    suite = load_suite(write_suite(tmp_path, toy_suite([erm()])))
    with pytest.raises(ConfigError, match=r"--executor ray needs the `ray` package.*pip install 'ray\[default\]'"):
        run_suite(suite, tmp_path / "out", executor="ray", progress=False)
    assert not (tmp_path / "out" / "toy_bench").exists()  # failed before any run started
    assert run_suite(suite, tmp_path / "out", executor="ray", dry_run=True).states[0].status == "todo"


def test_cli_dry_run_and_errors(tmp_path: Path, capsys) -> None:
    path = write_suite(tmp_path, toy_suite([erm(), "bench_raise"]))
    assert main(["bench", str(path), "--out", str(tmp_path / "out"), "--dry-run"]) == 0
    text = capsys.readouterr().out
    assert "bench_raise toy_bench r0.1 seed0" in text and "train" in text
    assert main(["bench", str(tmp_path / "none.yaml")]) == 2
    assert "error:" in capsys.readouterr().err
    assert main(["bench", str(path), "--workers", "0", "--out", str(tmp_path / "out")]) == 2


# ---------------------------------------------------------------------------------------------- run references
def test_run_references_resolve_per_ratio_and_seed_and_train_first(tmp_path: Path) -> None:
    kd = {"method": "kd", "label": "kd", "hparams": {**TINY, "teacher_run": "{run:base}"}}
    broken = {"method": "kd", "label": "kd-broken", "hparams": {**TINY, "teacher_run": "{run:bench_raise}"}}
    dfr = {"method": "dfr", "hparams": {"base_run": "{run:base}", "n_fits": 2}}
    doc = toy_suite([kd, broken, erm("base"), "bench_raise", dfr], seeds=[0, 1])
    suite = load_suite(write_suite(tmp_path, doc))
    out = tmp_path / "out"
    runs = suite.plan(out)
    student = next(r for r in runs if r.label == "kd" and r.config.seed == 1)
    teacher = out / "toy_bench" / "base" / "r0.1" / "seed1"
    assert student.config.hparams["teacher_run"] == str(teacher) and student.depends_on == (str(teacher),)
    waves = dependency_waves([RunState(r, "todo") for r in runs])
    assert [sorted({s.run.label for s in w}) for w in waves] == [["base", "bench_raise"], ["dfr", "kd", "kd-broken"]]

    lone = run_suite(suite, tmp_path / "lone", only=["kd"], dry_run=True)  # the teacher is not part of it
    assert {s.status for s in lone.states} == {"blocked"} and "drop --only" in lone.states[0].detail

    result = run_suite(suite, out, workers=2, progress=False)
    status = {(s.run.label, s.run.config.seed): (s.status, s.detail) for s in result.states}
    assert status["base", 0][0] == status["kd", 0][0] == status["kd", 1][0] == status["dfr", 1][0] == "finished"
    assert status["bench_raise", 0][0] == "failed"
    assert status["kd-broken", 0][0] == "blocked" and "the run it needs did not finish" in status["kd-broken", 0][1]
    assert json.loads((out / "summary.json").read_text())["counts"]["blocked"] == 2
    final = json.loads((student.run_dir / "final.json").read_text())
    assert final["readouts"]["teacher"]["test"]  # the student was distilled from its own seed's teacher
    dfr_final = json.loads((out / "toy_bench" / "dfr" / "r0.1" / "seed1" / "final.json").read_text())
    assert dfr_final["stages"] == [] and dfr_final["train_time_s"] > 0  # no stage: the time of its fit


@pytest.mark.parametrize(
    ("methods", "expected"),
    [
        ([{"method": "kd", "hparams": {"teacher_run": "{run:nope}"}}], "key 'methods[0].hparams.teacher_run'"),
        ([{"method": "kd", "hparams": {"teacher_run": "{run:kd}"}}], "LABEL another method of this suite"),
        (
            [
                {"method": "kd", "label": "a", "hparams": {"teacher_run": "{run:b}"}},
                {"method": "kd", "label": "b", "hparams": {"teacher_run": "{run:a}"}},
            ],
            "form a cycle: a -> b -> a",
        ),
    ],
)
def test_bad_run_references_are_named(tmp_path: Path, methods: list, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_suite(write_suite(tmp_path, toy_suite(methods)))


def test_identity_ignores_speed_settings_and_compares_run_paths_by_target(tmp_path: Path) -> None:
    real = tmp_path / "erm-grid" / "seed0"
    real.mkdir(parents=True)
    (tmp_path / "cmnist").mkdir()
    (tmp_path / "cmnist" / "erm").symlink_to(tmp_path / "erm-grid")
    base = {"method": "dfr", "dataset": "toy", "dataset_options": {}, "seed": 0, "precision": "fp32"}
    trained = {**base, "hparams": {"base_run": str(real), "n_jobs": 2}}
    asked = {**base, "hparams": {"base_run": str(tmp_path / "cmnist" / "erm" / "seed0")}}
    assert comparable_identity(trained) == comparable_identity(asked)
    other = {**base, "hparams": {"base_run": str(tmp_path / "cmnist"), "n_jobs": 2}}
    assert comparable_identity(other) != comparable_identity(asked)
    erm_run = {**base, "method": "erm", "hparams": {"n_jobs": 2}}  # not an execution setting of ERM
    assert comparable_identity(erm_run)["hparams"] == {"n_jobs": 2}
