"""The results pages and the README's generated blocks are what the committed run records give, and a section
whose records are absent (Biased MNIST today) is left out rather than filled with placeholders."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def make_docs():
    spec = importlib.util.spec_from_file_location("make_docs", REPO / "benchmarks" / "make_docs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_docs"] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated(make_docs) -> dict[str, str]:
    return make_docs.pages(REPO)


def test_committed_pages_match_the_run_records(make_docs, generated) -> None:
    stale = make_docs.stale(REPO, generated)
    assert stale == [], f"stale generated files {stale}: run `python benchmarks/make_docs.py` and commit"


def test_readme_headline_rows_come_from_the_records(generated) -> None:
    readme = generated["README.md"]
    block = readme.split("<!-- generated:cmnist:start -->")[1].split("<!-- generated:cmnist:end -->")[0]
    # three seeds' final.json: the mean ± the half-width of its 95 % interval, the labels the runs read
    assert "| erm | val_unbiased | train: none · select: val groups | 44.8 ± 3.3 (n=3) [paper 35.3, +9.4]" in block
    # paired with ERM of the same seeds, and a premise-check mark pointing at the full notes; five seeds at 1 %
    assert (
        "| ule | val_unbiased | train: none · select: val groups | 62.8 ± 8.9 (n=3) ▲ ⚠ [9] | 67.5 ± 2.5 (n=5)" in block
    )
    assert "seeds 0–2 (0–4 at 1 %)" in readme.split("<!-- generated:cmnist:start -->")[0]  # the intro says so
    assert "worst-group" in block and "{{" not in block and "docs/results/statistics.md" in block
    page = generated["docs/results/colored-mnist.md"]
    assert "| erm | val_unbiased | train: none · select: val groups | 44.8 [41.5, 48.1] (n=3) [paper 35.3" in page
    stats = generated["docs/results/statistics.md"]
    assert "| ule | +18.0 [+11.0, +25.0] ▲ 3/3 | +8.9 [+6.1, +11.8] ▲ 5/5 |" in stats  # paired with ERM, per setting
    assert "Friedman χ² = " in stats and "critical-difference.png" in stats
    assert re.search(r"Every row is above ERM|Below ERM: ", block)  # one line on the rows below ERM


def test_a_section_without_records_is_dropped_and_named_rows_follow_the_records(make_docs, tmp_path: Path) -> None:
    template = "# T\n\nintro\n\n<!-- section -->\n## Optional\n\n{{absent}}\n\n<!-- section -->\n## Kept\n\n{{there}}\n"
    text = make_docs.render(template, {"absent": lambda: None, "there": lambda: "| a |"}, "t.md")
    assert "Optional" not in text and "## Kept\n\n| a |" in text and "intro" in text
    with pytest.raises(SystemExit, match="unknown placeholder"):
        make_docs.render("{{nope}}\n", {}, "t.md")
    # a placeholder inside a sentence: filled in place, or its section dropped when it has nothing to say
    inline = "<!-- section -->\nA differs by {{d}}.\n<!-- section -->\nB by {{none}}.\n"
    assert make_docs.render(inline, {"d": lambda: "+1.0 [+0.2, +1.8] ▲ 3/3", "none": lambda: None}, "t.md") == (
        "A differs by +1.0 [+0.2, +1.8] ▲ 3/3.\n"
    )

    records = make_docs.Records(tmp_path)
    assert make_docs.bmnist_table(records) is None  # no Biased MNIST records: no section, no invented numbers
    for seed, unbiased in enumerate((0.60, 0.70)):
        run = tmp_path / "bmnist-2026-12-04" / "bmnist-rho0.99" / "anything" / f"seed{seed}"
        run.mkdir(parents=True)
        metrics = {"unbiased": unbiased, "worst_group": 0.2, "conflicting": 0.5, "aligned": 0.9, "accuracy": 0.6}
        final = {
            "method": "mistake_reweight",
            "dataset": "biased_mnist",
            "dataset_options": {"rho": 0.99},
            "seed": seed,
        }
        final.update(hparams={}, selection="val_unbiased", metrics={"test": metrics, "val": metrics})
        (run / "final.json").write_text(json.dumps(final))
    table = make_docs.Records(tmp_path)
    text = make_docs.bmnist_table(table)
    # named by the recorded method; no per-group counts in these records: Student's t over the two seeds only (†)
    assert (
        "| mistake_reweight | train: none · select: val groups | 65.0 [1.5, 100.0]† / 20.0 [20.0, 20.0]† (n=2) |"
        in text
    )


def test_tuned_tables_come_from_the_search_and_final_records(make_docs, tmp_path: Path) -> None:
    records = make_docs.Records(tmp_path)
    assert make_docs.tuned_budget(records, "cmnist-tune") is None  # no tuning records: the README block stays empty
    assert make_docs.tuned(records, "cmnist-tune", "val_unbiased", ("unbiased",)) is None
    root = tmp_path / "cmnist-tune-2026-12-04"
    search = root / "search" / "erm"
    search.mkdir(parents=True)
    budget = {"trials": 20, "epochs": 20, "sampler": "random", "pruner": "hyperband"}
    best = {"trial": 7, "score": 0.61, "params": {"lr": 0.00123, "weight_decay": 0.01}, "hparams": {}}
    doc = {"budget": budget, "rule": "val_worst_class", "counts": {"done": 20, "pruned": 13}, "trial_time_s": 600.0}
    (search / "best.json").write_text(json.dumps({**doc, "best": {"val_unbiased": best}}))
    (search / "search.yaml").write_text("identity:\n  dataset_options: {ratio: 0.01}\n")
    for seed, unbiased in enumerate((0.50, 0.60, 0.70)):
        run = root / "final-val_unbiased" / "cmnist" / "erm" / "r0.01" / f"seed{seed}"
        run.mkdir(parents=True)
        metrics = {"unbiased": unbiased, "worst_group": 0.1}
        final = {"method": "erm", "dataset": "colored_mnist", "dataset_options": {"ratio": 0.01}, "seed": seed,
                 "metrics": {"val": metrics, "test": metrics}}  # fmt: skip
        (run / "final.json").write_text(json.dumps(final))
    shared = root / "final-val_worst_class" / "cmnist" / "lff" / "r0.01" / "seed0"  # chosen by both rules
    shared.mkdir(parents=True)
    reported = {"val": {"unbiased": 0.9, "worst_group": 0.5}, "test": {"unbiased": 0.8, "worst_group": 0.4}}
    final = {"method": "lff", "dataset": "colored_mnist", "dataset_options": {"ratio": 0.01}, "seed": 0,
             "hparams": {"selection": "val_worst_class", "report_rules": ["val_unbiased"]},
             "stages": [{"name": "lff", "selection": "val_worst_class"}],
             "metrics": {"val": {"unbiased": 0.1, "worst_group": 0.0}, "test": {"unbiased": 0.1, "worst_group": 0.0}},
             "selections": {"val_unbiased": reported}}  # fmt: skip
    (shared / "final.json").write_text(json.dumps(final))
    line = make_docs.tuned_budget(records, "cmnist-tune")
    assert "20 trials at 1 % conflicting, an epoch cap of 20, random sampler, Hyperband pruner" in line
    assert "`val_worst_class`" in line
    table = make_docs.tuned(records, "cmnist-tune", "val_unbiased", ("unbiased", "worst_group"))
    assert "| erm | tuned | train: none · select: none | – | 60.0 [35.2, 84.8]† / 10.0 [10.0, 10.0]† | – | – |" in table
    assert "Methods of the suite with no val_unbiased runs recorded: reweight_group," in table
    # the reported rule's metrics, and the labels of that rule's selection (validation groups)
    assert "| lff | tuned | train: none · select: val groups | – | 80.0 (n=1) / 40.0 (n=1) | – | – |" in table
    assert "| lff | tuned | train: none · select: none | – | 10.0 (n=1) | – | – |" in make_docs.tuned(
        records, "cmnist-tune", "val_worst_class", ("unbiased",)
    )
    choices = make_docs.tuned_choices(records, "cmnist-tune")
    assert "| erm | 20 (13) | 10 min | val_unbiased | 7 | 61.0 | lr=0.00123, weight_decay=0.01 |" in choices
    # a trial that failed by its own error counts against the budget, and the table says so
    (search / "best.json").write_text(json.dumps({**doc, "counts": {"done": 20, "pruned": 13, "failed": 2},
                                                  "best": {"val_unbiased": best}}))  # fmt: skip
    assert "| erm | 20 (13; 2 failed) | 10 min |" in make_docs.tuned_choices(records, "cmnist-tune")


def _final(run: Path, method: str, dataset: str, options: dict, seed: int, unbiased: float) -> None:
    run.mkdir(parents=True)
    metrics = {"unbiased": unbiased, "worst_group": 0.1, "conflicting": 0.5, "aligned": 0.9, "accuracy": 0.6}
    final = {"method": method, "dataset": dataset, "dataset_options": options, "seed": seed, "hparams": {},
             "selection": "val_unbiased", "metrics": {"val": metrics, "test": metrics}}  # fmt: skip
    (run / "final.json").write_text(json.dumps(final))


def test_biased_mnist_tuned_table_has_a_column_per_rho_and_stays_out_of_the_preset_table(
    make_docs, tmp_path: Path
) -> None:
    root = tmp_path / "bmnist-tune-2026-12-05"
    search = root / "search" / "erm"
    search.mkdir(parents=True)
    budget = {"trials": 20, "epochs": 20, "sampler": "random", "pruner": "hyperband"}
    best = {"trial": 3, "score": 0.7, "params": {"lr": 0.001}, "hparams": {}}
    doc = {"budget": budget, "rule": "val_worst_class", "best": {"val_unbiased": best}}
    (search / "best.json").write_text(json.dumps(doc))
    (search / "search.yaml").write_text("identity:\n  dataset_options: {rho: 0.99}\n")
    for seed in range(2):
        _final(root / "final-val_unbiased" / "erm" / f"seed{seed}", "erm", "biased_mnist", {"rho": 0.99}, seed, 0.8)
    preset = tmp_path / "bmnist-2026-12-04" / "bmnist-rho0.99" / "erm" / "seed0"
    _final(preset, "erm", "biased_mnist", {"rho": 0.99}, 0, 0.6)
    records = make_docs.Records(tmp_path)
    assert "20 trials at ρ 0.99, an epoch cap of 20" in make_docs.tuned_budget(records, "bmnist-tune")
    table = make_docs.tuned(records, "bmnist-tune", "val_unbiased", ("unbiased",))
    assert "| method | settings | labels | ρ 0.99 |" in table
    assert "| erm | tuned | train: none · select: val groups | 80.0 [80.0, 80.0]† |" in table
    assert "|  | preset | train: none · select: val groups | 60.0 (n=1) |" in table
    chosen = root / "final-val_worst_class" / "erm" / "seed0"
    _final(chosen, "erm", "biased_mnist", {"rho": 0.99}, 0, 0.7)
    doc = json.loads((chosen / "final.json").read_text())
    (chosen / "final.json").write_text(json.dumps({**doc, "selection": "val_worst_class"}))
    rules = make_docs.tuned_rules(make_docs.Records(tmp_path), "bmnist-tune", ("unbiased",))
    assert "| preset | tuned, val unbiased | tuned, val worst-class |" in rules
    # the labels each column's runs read: the training's once, then each column's selection
    assert "| erm | train: none · select: val groups / val groups / none | 60.0 (n=1) | 80.0 [80.0, 80.0]† |" in rules
    assert make_docs.tuned(records, "cmnist-tune", "val_unbiased", ("unbiased",)) is None  # another suite's
    assert "(n=1)" in make_docs.bmnist_table(records)  # the preset table reads the preset run only

    # methods added later with `--only` land in a second folder of the suite: the tables read both as one
    part = tmp_path / "bmnist-tune-2026-12-09"
    (part / "search" / "irm").mkdir(parents=True)
    (part / "search" / "irm" / "best.json").write_text(json.dumps({**doc, "best": {"val_unbiased": best}}))
    _final(part / "final-val_unbiased" / "irm" / "seed0", "irm", "biased_mnist", {"rho": 0.99}, 0, 0.75)
    records = make_docs.Records(tmp_path)
    table = make_docs.tuned(records, "bmnist-tune", "val_unbiased", ("unbiased",))
    assert (
        "| erm | tuned |" in table
        and "| irm | tuned | train: train groups · select: val groups | 75.0 (n=1) |" in table
    )
    assert "| irm | ? (?) | – | val_unbiased | 3 | 70.0 | lr=0.001 |" in make_docs.tuned_choices(records, "bmnist-tune")
    (part / "search" / "erm").mkdir()
    (part / "search" / "erm" / "best.json").write_text(json.dumps(doc))
    with pytest.raises(SystemExit, match="erm is searched in two folders"):
        make_docs.tuned_budget(make_docs.Records(tmp_path), "bmnist-tune")


def test_relative_links_in_readme_and_docs_resolve() -> None:
    import re

    broken = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        for match in re.finditer(r"\]\(([^)#\s]+)(#[^)]*)?\)", page.read_text()):
            target = match.group(1)
            if not target.startswith(("http://", "https://", "mailto:")) and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(REPO)} -> {target}")
    assert broken == []


def test_labelfree_tuned_rows_are_keyed_by_method_and_inferrer(make_docs, tmp_path: Path) -> None:
    records = make_docs.Records(tmp_path)
    assert make_docs.labelfree_tuned(records, "val_unbiased") is None  # nothing tuned yet: the section is dropped
    groups = {"inferrer": "gce", "file": "g.npz", "sha256": "0" * 64}
    labels = {"train": "inferred", "select": "inferred", "train_source": "inferred:g.npz sha256:0",
              "select_source": "inferred:g.npz sha256:0"}  # fmt: skip
    for seed, unbiased in enumerate((0.70, 0.72, 0.74)):
        for root, method in (("labelfree-tune-2026-12-07/final-val_unbiased", "reweight_group"),
                             ("labelfree-tune-2026-12-07/final-val_unbiased", "groupdro"),
                             ("labelfree-2026-12-07/labelfree", "reweight_group")):  # fmt: skip
            run = tmp_path / root / "cmnist" / f"{method}+gce" / "r0.01" / f"seed{seed}"
            run.mkdir(parents=True)
            metrics = {"unbiased": unbiased - (0.1 if "labelfree/" in str(run) else 0.0), "worst_group": 0.1}
            final = {"method": method, "dataset": "colored_mnist", "dataset_options": {"ratio": 0.01}, "seed": seed,
                     "groups": groups, "labels": labels, "metrics": {"val": metrics, "test": metrics}}  # fmt: skip
            (run / "final.json").write_text(json.dumps(final))
    table = make_docs.labelfree_tuned(records, "val_unbiased")
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    # one row per pipeline (method + inferrer), the same pipeline's preset under it; groupdro has no preset here
    assert [r.split(" | ")[:2] for r in rows[1:]] == [
        ["| reweight_group + gce", "tuned"], ["| ", "preset"], ["| groupdro + gce", "tuned"]
    ]  # fmt: skip
    assert "72.0 [" in rows[1] and "62.0 [" in rows[2]
    assert make_docs.labelfree_tuned(records, "val_worst_class") is None


def test_dett_projector_choice_reads_validation_and_keeps_simkd_within_half_a_point() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import dett_projector_table as dpt

    def runs(simkd: float, ours: float) -> dict:
        def final(style: str | None, val: float) -> dict:
            hp = {} if style is None else {"map_projector": style}
            return {"method": "groupdro" if style is None else "dett", "hparams": hp,
                    "metrics": {"val": {"unbiased": val}, "test": {"unbiased": 1.0 - val}}}  # fmt: skip

        both = ("cmnist", "bmnist-rho0.99")
        return {"groupdro": {d: final(None, 0.9) for d in both}, "dett-simkd": {d: final("simkd", simkd) for d in both},
                "dett-ours": {d: final("ours", ours) for d in both}}  # fmt: skip

    assert dpt.choose(runs(0.800, 0.804)) == "simkd"  # 0.4 point: within the tie margin
    assert dpt.choose(runs(0.800, 0.810)) == "ours"  # a point above on validation (its test score is lower)
    assert dpt.choose(runs(0.810, 0.800)) == "simkd"
    partial = runs(0.8, 0.9)
    del partial["dett-ours"]
    assert dpt.choose(partial) is None


def test_dett_default_projector_is_the_one_the_committed_validation_runs_choose() -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import dett_projector_table as dpt
    import make_docs

    from debiaslab.methods.dett import DeTTHparams

    runs = dpt._load(REPO / "benchmarks" / "results" / make_docs.DETT_PROJECTOR)
    assert set(runs) == {"groupdro", "dett-simkd", "dett-ours"}
    assert dpt.choose(runs) == DeTTHparams().map_projector == "simkd"


#: an absolute path in a record: ``/a/b/...`` not inside a relative path, a number or a home-relative path
ABSOLUTE_PATH = re.compile(r"(?<![\w.\-/~])/(?:[\w.+-]+/){2,}")


def test_committed_run_records_name_no_absolute_path() -> None:
    """Records name the runs they read (teachers, base runs, groups files) by the bench's relative run paths, so they
    read the same on every machine; a record copied with the path of the machine it ran on fails here."""
    import sqlite3

    found = [
        f"{path.relative_to(REPO)}: {match.group(0)}"
        for path in sorted((REPO / "benchmarks" / "results").rglob("*"))
        if path.suffix in {".json", ".jsonl", ".yaml", ".md"}
        for match in ABSOLUTE_PATH.finditer(path.read_text())
    ]
    for db in sorted((REPO / "benchmarks" / "results").rglob("study.db")):
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            values = [v for (v,) in con.execute("select value_json from trial_user_attributes")]
        found += [f"{db.relative_to(REPO)}: {m.group(0)}" for v in values for m in ABSOLUTE_PATH.finditer(v)]
    assert not found, found[:5]
    assert ABSOLUTE_PATH.search('teacher_run: "/srv/runs/cmnist/groupdro/seed0"')
    assert not ABSOLUTE_PATH.search("base_run: runs/bench/cmnist/erm/r0.01/seed0 (1/n_g weights, ~/data/x/y)")


def test_family_table_sorts_each_familys_tuned_methods_by_their_paired_mark_against_tuned_erm(
    make_docs, tmp_path: Path
) -> None:
    root = tmp_path / "cmnist-tune-2026-12-04"
    scores = {"erm": (0.50, 0.52, 0.51), "reweight_group": (0.70, 0.71, 0.73), "resample_group": (0.50, 0.53, 0.50),
              "lff": (0.40, 0.41, 0.43), "focal": (0.60, 0.62, 0.61)}  # fmt: skip
    for method, values in scores.items():
        for seed, unbiased in enumerate(values):
            run = root / "final-val_unbiased" / "cmnist" / method / "r0.01" / f"seed{seed}"
            _final(run, method, "colored_mnist", {"ratio": 0.01}, seed, unbiased)
    _final(root / "final-val_unbiased" / "cmnist" / "focal" / "r0.05" / "seed0", "focal", "colored_mnist",
           {"ratio": 0.05}, 0, 0.9)  # fmt: skip
    records = make_docs.Records(tmp_path)
    table = make_docs.tuned_families(records, "cmnist-tune", "val_unbiased")
    lines = table.splitlines()
    assert lines[0] == "| family | methods | 0.5 % | 1 % | 2 % | 5 % |"
    # families in `debiaslab methods` order; ERM is the reference, not a row; a run ERM has no pair for: –
    assert lines[2] == "| balancing | 2 | – | ▲ reweight_group · ○ resample_group | – | – |"
    assert lines[3] == "| class-imbalance losses | 1 | – | ▲ focal | – | – focal |"
    assert lines[4] == "| inferred minority | 1 | – | ▼ lff | – | – |"
    assert make_docs.tuned_families(records, "cmnist-tune", "val_worst_class") is None  # no runs of that rule
    for seed in range(3):  # no tuned ERM under the rule: no reference, no table
        path = root / "final-val_unbiased" / "cmnist" / "erm" / "r0.01" / f"seed{seed}" / "final.json"
        path.unlink()
    assert make_docs.tuned_families(make_docs.Records(tmp_path), "cmnist-tune", "val_unbiased") is None


def test_seed_phrases_name_the_seeds_most_ratios_have_then_the_exceptions(make_docs, tmp_path: Path) -> None:
    root = tmp_path / "cmnist-2026-11-23" / "cmnist"
    for ratio, seeds in ((0.005, range(3)), (0.01, range(5)), (0.05, range(3))):
        for seed in seeds:
            _final(root / "erm" / f"r{ratio}" / f"seed{seed}", "erm", "colored_mnist", {"ratio": ratio}, seed, 0.5)
    _final(root / "jtt" / "r0.01" / "seed0", "jtt", "colored_mnist", {"ratio": 0.01}, 0, 0.5)
    records = make_docs.Records(tmp_path)
    assert make_docs.headline_seeds(records) == "seeds 0–2, 0–4 at 1 %"
    assert make_docs.headline_seeds(records, "jtt") == "seed 0"
    assert make_docs.headline_seeds(records, "bam") is None
    assert make_docs._seed_list([0, 3]) == "0, 3" and make_docs._seed_list([2, 3, 4]) == "2–4"
    bmnist = tmp_path / "bmnist-2026-12-04" / "bmnist-rho0.99"
    for method, seeds in (("erm", range(5)), ("jtt", range(5)), ("lff", range(3))):
        for seed in seeds:
            _final(bmnist / method / f"seed{seed}", method, "biased_mnist", {"rho": 0.99}, seed, 0.6)
    assert make_docs.bmnist_seeds(make_docs.Records(tmp_path)) == "seeds 0–4, 0–2 for lff"


RULES = ("val_unbiased", "val_worst_class")


def test_tuned_readings_name_leaders_preset_marks_and_same_trials_from_the_records(make_docs, tmp_path: Path) -> None:
    root = tmp_path / "bmnist-tune-2026-12-05"
    budget = {"trials": 20, "epochs": 20, "sampler": "random", "pruner": "hyperband"}
    trials = {"erm": (3, 3), "reweight_group": (1, 4), "lff": (2, 2)}  # each rule's chosen trial
    for method, (first, second) in trials.items():
        search = root / "search" / method
        search.mkdir(parents=True)
        best = {rule: {"trial": t, "score": 0.7, "params": {}} for rule, t in zip(RULES, (first, second))}
        (search / "best.json").write_text(json.dumps({"budget": budget, "rule": RULES[1], "best": best}))
    tuned = {"erm": (0.60, 0.62, 0.61), "reweight_group": (0.80, 0.82, 0.81), "lff": (0.70, 0.72, 0.71)}
    preset = {"erm": (0.60, 0.63, 0.60), "reweight_group": (0.70, 0.71, 0.70), "lff": (0.80, 0.81, 0.82)}
    for method in tuned:
        for seed in range(3):
            for rule, shift in zip(RULES, (0.0, -0.02 if method == "lff" else -0.05)):
                run = root / f"final-{rule}" / method / f"seed{seed}"
                _final(run, method, "biased_mnist", {"rho": 0.99}, seed, tuned[method][seed] + shift)
            run = tmp_path / "bmnist-2026-12-04" / "bmnist-rho0.99" / method / f"seed{seed}"
            _final(run, method, "biased_mnist", {"rho": 0.99}, seed, preset[method][seed])
    lines = make_docs.tuned_readings(make_docs.Records(tmp_path), "bmnist-tune").splitlines()
    assert lines[0] == (  # erm is 10 points below lff: not named as near it
        "- **Highest mean, tuned with validation group labels:** `reweight_group` (81.0). Among the methods that "
        "read no label beyond ERM's (`train: none · select: val groups`): `lff` (71.0)."
    )
    assert "`reweight_group` (76.0)" in lines[1]
    assert lines[2].endswith("val unbiased:** below it (▼) `lff`; above it (▲) `reweight_group`.")
    assert lines[3].endswith("val worst-class:** below it (▼) `erm` and `lff`; above it (▲) `reweight_group`.")
    assert lines[5:7] == [
        "  - balancing: above it `reweight_group` (everywhere).",
        "  - inferred minority: above it `lff` (everywhere).",
    ]
    assert lines[7].startswith("- **Same trial under both rules:** `erm` and `lff`; different trials: `reweight_group`")
    assert "from -5.0 to -2.0 points over these methods (the largest drop: `erm`)" in lines[7]


def test_a_shared_run_with_an_earlier_selecting_stage_stands_for_a_reported_rule_only_if_its_method_says_so(
    make_docs, tmp_path: Path
) -> None:
    import tune_tables

    root = tmp_path / "cmnist-tune-2026-12-07"
    reported = {"val": {"unbiased": 0.9}, "test": {"unbiased": 0.8}}

    def shared(method: str, first_stage: str, selection: str) -> None:
        run = root / "final-val_worst_class" / "cmnist" / method / "r0.01" / "seed0"
        run.mkdir(parents=True)
        final = {"method": method, "dataset": "colored_mnist", "dataset_options": {"ratio": 0.01}, "seed": 0,
                 "hparams": {"selection": "val_worst_class", "report_rules": ["val_unbiased"]},
                 "stages": [{"name": first_stage, "selection": selection},
                            {"name": "last", "selection": "val_worst_class"}],
                 "metrics": {"val": {"unbiased": 0.1}, "test": {"unbiased": 0.1}},
                 "selections": {"val_unbiased": reported}}  # fmt: skip
        (run / "final.json").write_text(json.dumps(final))

    shared("ssa", "ssa_fold0", "val_accuracy")  # its predictors select by their own score, whatever the rule
    assert [r["method"] for r in tune_tables.rule_runs(root, "val_unbiased")] == ["ssa"]
    shared("denetdm", "experts", "val_worst_class")  # its experts select by the rule: another rule trains otherwise
    with pytest.raises(SystemExit, match="an earlier stage selected its epoch"):
        tune_tables.rule_runs(root, "val_unbiased")
