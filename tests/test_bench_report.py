"""Benchmark report: several selection rules from one training (engine, resume, final.json), aggregation by rule
against hand values with the papers' numbers, and the report files (Markdown, CSV, PNG figures)."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

import bench_plugin  # noqa: F401  (registers the toy_bench dataset)
from debiaslab.bench import plots
from debiaslab.bench.aggregate import read_run, summarise
from debiaslab.bench.results import results_csv, results_markdown
from debiaslab.bench.runner import run_suite
from debiaslab.bench.suite import load_suite
from debiaslab.engine.rule_keeper import RuleKeeper
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, MissingLabelsError
from debiaslab.evaluation.selection import select_best
from debiaslab.methods import get_method
from debiaslab.run.train import train_run
from toys import Interrupt, InterruptingTrainer, assert_same_weights, tiny_mlp, toy_splits

pytestmark = pytest.mark.usefixtures("one_thread")

PNG = b"\x89PNG\r\n\x1a\n"
RULES = ("val_unbiased", "val_worst_class", "val_classdiff")


# ---------------------------------------------------------------------------------------------- rule keeper
def _epoch_module(epoch: int) -> nn.Module:
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(float(epoch))
    return m


# a validation history where the rules disagree: worst-group peaks at epoch 2, unbiased at 3, worst-class at 4,
# ClassDiff (smaller is better) at 1; epoch 5 ties worst-group's best (the earlier epoch is kept)
HISTORY = [
    {"worst_group": 0.10, "unbiased": 0.50, "worst_class": 0.40, "class_diff": 0.05},
    {"worst_group": 0.40, "unbiased": 0.60, "worst_class": 0.45, "class_diff": 0.20},
    {"worst_group": 0.30, "unbiased": 0.70, "worst_class": 0.50, "class_diff": 0.10},
    {"worst_group": 0.20, "unbiased": 0.65, "worst_class": 0.60, "class_diff": 0.30},
    {"worst_group": 0.40, "unbiased": 0.55, "worst_class": 0.30, "class_diff": 0.50},
]
EXPECTED = {"val_worst_group": 2, "val_unbiased": 3, "val_worst_class": 4, "val_classdiff": 1}


def test_rule_keeper_keeps_each_rules_epoch_and_survives_resume(tmp_path: Path) -> None:
    rules = list(EXPECTED)
    full = RuleKeeper(rules)
    for epoch, metrics in enumerate(HISTORY, 1):
        full.update(epoch, metrics, _epoch_module(epoch))
    assert {r: k["epoch"] for r, k in full.best.items()} == EXPECTED
    assert {r: float(k["state"]["weight"]) for r, k in full.best.items()} == {r: float(e) for r, e in EXPECTED.items()}
    assert full.summary()["val_classdiff"] == {"epoch": 1, "score": 0.05}
    for rule, epoch in EXPECTED.items():  # the same epochs as the selection rules pick from the history
        assert select_best(HISTORY, rule) + 1 == epoch

    path = tmp_path / "stage.rules.pt"
    first = RuleKeeper(rules, path)
    for epoch, metrics in enumerate(HISTORY[:3], 1):  # "killed" after epoch 3
        first.update(epoch, metrics, _epoch_module(epoch))
    resumed = RuleKeeper(rules, path, resume=True)
    after_3 = {"val_worst_group": 2, "val_unbiased": 3, "val_worst_class": 3, "val_classdiff": 1}
    assert {r: k["epoch"] for r, k in resumed.best.items()} == after_3
    for epoch, metrics in enumerate(HISTORY[3:], 4):
        resumed.update(epoch, metrics, _epoch_module(epoch))
    assert {r: (k["epoch"], float(k["state"]["weight"])) for r, k in resumed.best.items()} == {
        r: (e, float(e)) for r, e in EXPECTED.items()
    }
    assert RuleKeeper(rules, path, resume=False).best == {}  # a fresh (non-resumed) stage ignores the file


def test_trainer_keeps_report_rules_and_resume_reproduces_them(tmp_path: Path) -> None:
    train, val = toy_splits(n_classes=3, one_hot=True)  # with trainer seed 0 the rules pick epochs 1, 2, 5, 4
    hp = {**tiny_mlp(lr=0.01), "epochs": 6, "selection": "val_worst_group"}
    erm = get_method("erm")

    def fit(trainer: Trainer):
        return erm(**hp).fit(train, val, trainer=trainer).fit_result_.stages[-1]

    full = fit(Trainer(progress=False, seed=0, run_dir=tmp_path / "full", report_rules=RULES))
    history = [h["val"] for h in full.history]
    assert set(full.alternatives) == set(RULES)
    epochs = {r: k["epoch"] for r, k in full.alternatives.items()}
    for rule, epoch in epochs.items():
        assert epoch == select_best(history, rule) + 1
    assert len({*epochs.values(), full.selected_epoch}) > 1, "choose a seed where the rules disagree"
    # each kept state is that epoch's model: re-evaluated, it reproduces the logged validation metrics
    metric = {"val_unbiased": "unbiased", "val_worst_class": "worst_class", "val_classdiff": "class_diff"}
    for rule, kept in full.alternatives.items():
        model = _model(erm, hp, train, kept["state"])
        metrics = Trainer(progress=False).evaluate(model, val, model).metrics
        logged = history[kept["epoch"] - 1]
        assert metrics["class_diff"] == pytest.approx(logged["class_diff"])
        assert kept["score"] == pytest.approx(logged[metric[rule]])
    assert not (tmp_path / "full" / "checkpoints" / "erm.rules.pt").exists()  # folded into the done checkpoint

    cut = tmp_path / "cut"
    dying = InterruptingTrainer(4, progress=False, seed=0, run_dir=cut, report_rules=RULES)
    with pytest.raises(Interrupt):
        erm(**hp).fit(train, val, trainer=dying)
    assert (cut / "checkpoints" / "erm.rules.pt").exists()
    resumed = fit(Trainer(progress=False, seed=0, run_dir=cut, resume=True, report_rules=RULES))
    assert {r: k["epoch"] for r, k in resumed.alternatives.items()} == epochs
    for rule in RULES:
        assert_same_weights(
            _model(erm, hp, train, full.alternatives[rule]["state"]),
            _model(erm, hp, train, resumed.alternatives[rule]["state"]),
        )
    # a finished stage restored from its done checkpoint still has its kept states
    restored = fit(Trainer(progress=False, seed=0, run_dir=tmp_path / "full", resume=True, report_rules=RULES))
    assert restored.resumed and {r: k["epoch"] for r, k in restored.alternatives.items()} == epochs


def _model(method, hp, train, state) -> nn.Module:
    model = method(**hp).build_model(train)
    model.load_state_dict(state)
    return model


def test_report_rules_need_the_labels_they_score() -> None:
    train, val = toy_splits(attrs=False)
    with pytest.raises(MissingLabelsError, match="val_unbiased"):
        get_method("erm")(**tiny_mlp(), epochs=1, selection="val_worst_class").fit(
            train, val, trainer=Trainer(progress=False, report_rules=["val_unbiased"])
        )
    with pytest.raises(ConfigError, match="unknown selection rule 'val_best'"):
        get_method("erm")(report_rules=["val_best"])
    assert get_method("erm")(report_rules="val_unbiased").hparams.report_rules == ("val_unbiased",)


# ---------------------------------------------------------------------------------------------- real runs
@pytest.fixture(scope="module")
def suite_runs(tmp_path_factory: pytest.TempPathFactory):
    """A two-method suite on toy data (ERM, and two-stage BAM), trained in this process, with report rules."""
    root = tmp_path_factory.mktemp("bench-report")
    doc = {
        "name": "toy-report",
        "imports": ["bench_plugin"],
        "seeds": [0],
        "epochs": 4,
        "selection": "val_worst_group",
        "report_rules": list(RULES),
        "datasets": [{"name": "toy_bench", "ratios": [0.05, 0.2]}],
        "methods": [
            {"method": "erm", "hparams": tiny_mlp(lr=0.05)},
            {"method": "bam", "hparams": {**tiny_mlp(lr=0.05), "amplify_epochs": 2, "mu": 5, "aux_lambda": 5.0}},
        ],
    }
    path = root / "suite.yaml"
    path.write_text(yaml.safe_dump(doc))
    suite = load_suite(path)
    out = root / "out"
    for run in suite.plan(out):
        train_run(run.config)
    return suite, out


def test_final_json_has_every_rules_epoch_val_and_test(suite_runs) -> None:
    suite, out = suite_runs
    for run in suite.plan(out):
        final = json.loads((run.run_dir / "final.json").read_text())
        sel = final["selections"]
        assert set(sel) == {"val_worst_group", *RULES}
        deployed = sel["val_worst_group"]
        assert deployed["deployed"] and deployed["epoch"] == final["selected"]["epoch"]
        assert deployed["test"] == final["metrics"]["test"] and deployed["val"] == final["metrics"]["val"]
        lines = [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
        last_stage = [x["val"] for x in lines if x["stage"] == final["selected"]["stage"]]
        for rule in RULES:
            entry = sel[rule]
            assert not entry["deployed"] and entry["epoch"] == select_best(last_stage, rule) + 1
            logged = last_stage[entry["epoch"] - 1]  # the kept weights, evaluated again, give the logged metrics
            for key in ("unbiased", "worst_class", "class_diff", "accuracy"):
                assert entry["val"][key] == pytest.approx(logged[key], abs=1e-9), (run.label, rule, key)
            assert set(entry["test"]) == set(final["metrics"]["test"])
    bam = read_run(suite.plan(out)[1].run_dir)
    assert (
        bam.method == "bam"
        and "val_classdiff" in json.loads((bam.path / "final.json").read_text())["extras"]["selections"]
    )


def test_report_tables_and_png_figures(suite_runs, monkeypatch) -> None:
    suite, out = suite_runs
    result = run_suite(suite, out, report_only=True, progress=False)
    assert [s.status for s in result.states] == ["skipped"] * 4
    report = (out / "report.md").read_text()
    assert "## Results (test split" in report and "## Selection rules side by side" in report
    assert "| erm | toy_bench | 0.05 | val_worst_group | train: none · select: val groups | 1 |" in report
    assert "| erm | toy_bench | 0.05 | val_classdiff* | train: none · select: none | 1 |" in report
    assert "95 % CI = mean ± √((t·SE_seeds)² + (1.96·SE_test)²)" in report
    pngs = sorted(p for p in result.files if p.endswith(".png"))
    assert pngs == sorted(
        [
            "plots/toy_bench-worst_group-vs-ratio.png",
            "plots/groups-erm-toy_bench-r0.05-seed0.png",
            "plots/curves-erm-toy_bench-r0.05-seed0.png",
            "plots/groups-bam-toy_bench-r0.05-seed0.png",
            "plots/curves-bam-toy_bench-r0.05-seed0.png",
        ]
    )
    for name in pngs:
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, name
        assert f"]({name})" in report
    rows = list(csv.DictReader(io.StringIO((out / "results.csv").read_text())))
    assert len(rows) == 2 * 2 * 4  # methods x ratios x rules
    assert (out / "results.md").read_text().startswith("| method | dataset | ratio | rule |")

    monkeypatch.setattr(plots, "matplotlib_available", lambda: False)
    result = run_suite(suite, out, report_only=True, progress=False)
    assert not [p for p in result.files if p.endswith(".png")]
    assert (
        "No figures: plots need matplotlib, which is not installed: pip install 'debiaslab[plots]'"
        in (out / "report.md").read_text()
    )
    with pytest.raises(ConfigError, match="debiaslab\\[plots\\]"):
        plots.plot_group_heatmap(suite.plan(out)[0].run_dir, out / "x.png", "erm")

    assert "| paper % | ours − paper |" in (out / "results.md").read_text()
    suite.paper_budget = False  # a shortened budget: the report's table and note carry no published numbers
    run_suite(suite, out, report_only=True, progress=False)
    assert "paper" not in (out / "results.md").read_text()
    assert "shortened budget (`paper_budget: false`)" in (out / "report.md").read_text()


# ---------------------------------------------------------------------------------------------- aggregation
def _final(root: Path, seed: int, unbiased: float, worst: float, alt: dict | None = None, **over) -> Path:
    run = root / f"seed{seed}"
    run.mkdir(parents=True)
    test = {
        "unbiased": unbiased,
        "worst_group": worst,
        "conflicting": unbiased - 0.1,
        "aligned": 0.99,
        "accuracy": unbiased + 0.01,
    }
    doc = {
        "method": "erm",
        "dataset": "colored_mnist",
        "dataset_options": {"ratio": 0.01},
        "hparams": {"selection": "val_worst_group", "report_rules": ["val_unbiased"]},
        "seed": seed,
        "selection": "val_worst_group",
        "metrics": {"test": test, "val": test},
        "train_time_s": 10.0 * (seed + 1),
        "peak_memory_mb": 500.0,
        "selections": {
            "val_worst_group": {"epoch": 3, "deployed": True, "test": test, "val": test},
            **({"val_unbiased": {"epoch": 7, "deployed": False, "test": alt, "val": alt}} if alt else {}),
        },
        **over,
    }
    (run / "final.json").write_text(json.dumps(doc))
    return run


def test_aggregation_mean_std_by_rule_against_hand_values(tmp_path: Path) -> None:
    values = [(0.60, 0.20, 0.64), (0.70, 0.30, 0.72), (0.80, 0.40, 0.80)]  # (unbiased, worst, alt unbiased)
    records = []
    for seed, (u, w, alt) in enumerate(values):
        run = _final(tmp_path, seed, u, w, alt={"unbiased": alt, "worst_group": 0.1})
        records.append(read_run(run, label="erm"))
    rows = summarise(records)
    assert [(r["method"], r["selection"], r["deployed"]) for r in rows] == [
        ("erm", "val_unbiased", False),
        ("erm", "val_worst_group", True),
    ]
    deployed, alt = rows[1], rows[0]
    assert deployed["seeds"] == [0, 1, 2]
    assert deployed["unbiased"].mean == pytest.approx(0.70) and deployed["unbiased"].std == pytest.approx(0.10)
    assert deployed["worst_group"].mean == pytest.approx(0.30) and deployed["worst_group"].std == pytest.approx(0.10)
    # alternative rule: mean of 0.64, 0.72, 0.80 = 0.72; sample std = 0.08
    assert alt["unbiased"].mean == pytest.approx(0.72) and alt["unbiased"].std == pytest.approx(0.08)
    assert math.isnan(alt["aligned"].mean)  # not in the reported metrics: n/a, not 0
    assert deployed["train_time_s"].mean == pytest.approx(20.0) and deployed["peak_memory_mb"].mean == 500.0

    table = results_markdown(rows)
    # the DeNetDM paper's ERM at 1 %: 50.34; ours 70.0 -> +19.7; the reported rule: 72.0 -> +21.7. No per-group
    # counts in these records: 95 % intervals by Student's t over the 3 seeds (4.303 x 10 / sqrt(3) = 24.8), marked †
    labels = "train: none · select: val groups"
    assert (
        f"| erm | colored_mnist | 0.01 | val_worst_group | {labels} | 3 | 70.0 [45.2, 94.8]† | 60.0 [35.2, 84.8]† "
        "| 99.0 ± 0.0 | 30.0 [5.2, 54.8]†" in table
    )
    assert "| unbiased 50.3 | +19.7 | 20 ± 10 | 500 ± 0 |" in table
    assert f"| erm | colored_mnist | 0.01 | val_unbiased* | {labels} | 3 | 72.0 [52.1, 91.9]† |" in table
    assert "| +21.7 |" in table
    line = next(r for r in csv.DictReader(io.StringIO(results_csv(rows))) if r["rule"] == "val_worst_group")
    assert (line["unbiased_mean"], line["unbiased_std"], line["paper_unbiased"], line["diff_unbiased"]) == (
        "70.00",
        "10.00",
        "50.34",
        "19.66",
    )
    assert line["deployed"] == "True" and line["n_seeds"] == "3" and line["paper_worst_group"] == ""
    assert (line["unbiased_ci_low"], line["unbiased_ci_high"], line["aligned_ci_low"]) == ("45.16", "94.84", "")
    assert line["labels"] == labels

    # a run that deployed val_unbiased and one that reported it, for the same seed: counted once (the deployed)
    other = _final(tmp_path / "other", 0, 0.99, 0.5, selection="val_unbiased")
    rows = summarise([*records, read_run(other, label="erm")])
    alt = next(r for r in rows if r["selection"] == "val_unbiased")
    assert alt["seeds"] == [0, 1, 2] and alt["deployed"]
    assert alt["unbiased"].mean == pytest.approx((0.99 + 0.72 + 0.80) / 3)


def test_shortened_budget_suite_puts_no_paper_number_beside_ours(tmp_path: Path) -> None:
    """A smoke-budget number beside the paper's full-budget one is no comparison: ``paper_budget: false`` (the
    shipped quick suite) drops the paper columns from the table, the CSV and the by-ratio pivot."""
    from debiaslab.bench.results import ratio_pivot_markdown
    from debiaslab.bench.suite import parse_suite

    assert load_suite("quick").paper_budget is False and load_suite("cmnist").paper_budget is True
    rows = summarise([read_run(_final(tmp_path, s, 0.7, 0.3), label="erm") for s in range(2)])
    full, smoke = results_markdown(rows), results_markdown(rows, compare_paper=False)
    assert "| paper % | ours − paper |" in full and "unbiased 50.3" in full
    assert "paper" not in smoke and "50.3" not in smoke and "| 70.0 [70.0, 70.0]† |" in smoke
    assert "[paper 50.3" in ratio_pivot_markdown(rows, "colored_mnist")
    assert "paper" not in ratio_pivot_markdown(rows, "colored_mnist", compare_paper=False)
    line = next(csv.DictReader(io.StringIO(results_csv(rows, compare_paper=False))))
    assert line["paper_unbiased"] == "" and line["diff_unbiased"] == "" and line["unbiased_mean"] == "70.00"
    doc = {"datasets": [{"name": "colored_mnist"}], "methods": ["erm"], "paper_budget": "no"}
    with pytest.raises(ConfigError, match="key 'paper_budget' = 'no'; expected true or false"):
        parse_suite(doc, "s.yaml")
