"""Regenerate every results page under ``docs/results/`` and the README's generated blocks from the committed run
records (``benchmarks/results/``).

Each page is a template from ``benchmarks/docs_templates/`` (the prose) whose ``{{name}}`` lines are replaced by
tables computed from the records' ``final.json`` / ``config.yaml`` (the numbers). Rows are named by each record's
recorded method, never by its folder, so renaming a method is a change of its records. A section whose records
are absent (e.g. Biased MNIST before its runs are committed) is left out, never filled with placeholders.
Tables that compare configurations show validation scores only; test scores appear only for the configurations
a method deploys, over seeds.

    python benchmarks/make_docs.py                 # rewrite docs/results/*.md and README.md's blocks
    python benchmarks/make_docs.py --check         # exit 1 and name the stale files instead of writing
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cmnist_tables as ct
import denetdm_tables
import tune_tables
import ule_search_table

from debiaslab.bench.aggregate import RunRecord, read_run, summarise
from debiaslab.bench.health_marks import HealthNotes
from debiaslab.bench.paper import (
    BMNIST_RHOS,
    BMNIST_UNBIASED,
    CMNIST_UNBIASED,
    MEASURED_ERM_PAPER_PROTOCOL,
    references,
)
from debiaslab.bench.results import order_rows, ratio_pivot_markdown
from debiaslab.bench.suite import load_suite
from debiaslab.tune.suite import load_tune_suite

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path("benchmarks/results")
TEMPLATES = Path("benchmarks/docs_templates")
COMMAND = "python benchmarks/make_docs.py"

#: The Colored MNIST headline: every method at its default, seeds 0-2, the `cmnist` suite's layout.
HEADLINE = (
    "cmnist-2026-11-23/erm-grid/default",
    "cmnist-2026-11-23/cmnist",
    "cmnist-2026-11-24/cmnist",
    "cmnist-2026-11-24/jtt-idlr",
    "cmnist-2026-12-04/cmnist",
)
#: Biased MNIST results: committed copies of `debiaslab bench bmnist` runs, ``benchmarks/results/bmnist-<date>/``
#: (searches that also touch Biased MNIST, such as ``ule-search``, are not results and stay out)
BMNIST = "bmnist-2*"
#: a short DeNetDM run on Biased MNIST (2 + 1 epochs, seed 0) whose per-epoch log shows when its experts split
DENETDM_FIRST_EPOCHS = "denetdm-bmnist-2026-12-07/first-epochs/denetdm/seed0"
METRICS = ("unbiased", "worst_group", "conflicting", "aligned")
TITLE = {"unbiased": "unbiased", "worst_group": "worst-group", "conflicting": "conflicting", "aligned": "aligned"}


class Records:
    """The committed run records below one results folder, read once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._finals: dict[Path, dict] = {}

    def path(self, rel: str) -> Path:
        return self.root / rel

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_dir()

    def headline(self) -> list[Path]:
        return [self.root / r for r in HEADLINE if (self.root / r).is_dir()]

    def finals(self, roots: Sequence[Path]) -> list[tuple[Path, dict]]:
        out = []
        for root in roots:
            for final in sorted(root.rglob("final.json")):
                if final not in self._finals:
                    self._finals[final] = ct.read_final(final)
                out.append((final.parent, self._finals[final]))
        return out

    def run_records(self, roots: Sequence[Path], dataset: str, protocol: str = "default") -> list[RunRecord]:
        """Library records (one row per recorded method) of ``dataset`` runs under ``roots``."""
        return [
            read_run(d, label=f["method"])
            for d, f in self.finals(roots)
            if f["dataset"] == dataset and f.get("protocol", "default") == protocol
        ]

    def methods(self, roots: Sequence[Path]) -> set[str]:
        return {f["method"] for _, f in self.finals(roots)}


# ---------------------------------------------------------------------------------------------- tables
def headline_tables(rec: Records, metrics: Sequence[str] = ("unbiased", "worst_group")) -> str:
    """Methods x ratios of Colored MNIST test metrics (mean ± std over seeds), the published number beside."""
    rows = _headline_rows(rec)
    parts = []
    for metric in metrics:
        parts += [f"**Colored MNIST, test {TITLE[metric]} accuracy** (%, mean ± std over n seeds"
                  + ("; [published, ours − published] where a paper has the number)" if metric == "unbiased" else ")"),
                  "", ratio_pivot_markdown(rows, "colored_mnist", metric), ""]  # fmt: skip
    return "\n".join(parts).rstrip()


def _headline_rows(rec: Records) -> list[dict]:
    records = rec.run_records(rec.headline(), "colored_mnist")
    _no_duplicates(records)
    order = [m.method for m in load_suite("cmnist").methods]
    return order_rows(summarise(records, rules=False), order)


def _no_duplicates(records: Sequence[RunRecord]) -> None:
    seen: dict[tuple, Path] = {}
    for r in records:
        key = (r.method, r.dataset, json.dumps(r.options, sort_keys=True), r.seed, r.protocol)
        if key in seen:
            raise SystemExit(f"two records of the same run: {seen[key]} and {r.path}; keep one in the headline")
        seen[key] = r.path


def changed_defaults(rec: Records, roots: Sequence[Path]) -> dict[str, list[str]]:
    """``{method: ["name: then X, now Y", ...]}`` for records trained with resolved hyperparameters that today's
    defaults no longer give (a method's table changed since); the values the run asked for are not compared."""
    import dataclasses

    import yaml

    from debiaslab.methods import get_method

    out: dict[str, list[str]] = {}
    for run_dir, final in rec.finals(roots):
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        run, recorded = config["run"], config.get("resolved_hparams") or {}
        method = get_method(run["method"])(dataset=run["dataset"], **(run.get("hparams") or {}))
        now = json.loads(json.dumps(dataclasses.asdict(method.hparams), default=list))
        for name, value in now.items():
            if name in recorded and name not in (run.get("hparams") or {}) and recorded[name] != value:
                note = f"{name}: then {recorded[name]!r}, now {value!r}"
                out.setdefault(final["method"], [])
                if note not in out[final["method"]]:
                    out[final["method"]].append(note)
    return out


def changed_defaults_note(rec: Records) -> str | None:
    """One line naming the headline rows whose records predate a change of their method's defaults."""
    changed = changed_defaults(rec, rec.headline())
    if not changed:
        return None
    parts = [f"`{m}` ({'; '.join(notes)})" for m, notes in sorted(changed.items())]
    return (
        "Rows trained with settings that differ from today's defaults (the method's page says whether that matters): "
        + ", ".join(parts)
        + "."
    )


def machine_line(rec: Records) -> str:
    machines = sorted({str(f.get("machine", "")) for _, f in rec.finals(rec.headline()) if f.get("machine")})
    dates = sorted(str(f.get("finished_at", ""))[:10] for _, f in rec.finals(rec.headline()))
    return (
        f"Runs recorded on: {'; '.join(machines) or 'unknown'} (no GPU), finished between {dates[0]} and {dates[-1]}."
        if dates
        else "No runs recorded."
    )


def method_table(rec: Records, method: str, roots: Sequence[Path] | None = None, split: str = "test") -> str:
    """One method's deployed model over seeds: unbiased / worst-group / conflicting / aligned by ratio."""
    runs = ct.load(roots if roots is not None else rec.headline(), method)
    lines = [ct.header(f"{method}, {split} %")]
    for metric in METRICS:
        lines.append(ct.row(TITLE[metric], runs, lambda r, m=metric: r["metrics"][split][m]))
    for key, name in (("error_set_precision", "error-set precision"), ("error_set_recall", "error-set recall")):
        if any(key in r.get("extras", {}) for rs in runs.values() for r in rs):
            lines.append(ct.row(f"{name} (training set, %)", runs, lambda r, k=key: r["extras"].get(k)))
    return "\n".join(lines)


def erm_protocol_table(rec: Records) -> str:
    """ERM under our protocol (seeds) and the papers' (selected on test), beside the published row."""
    default = ct.load(rec.headline(), "erm")
    paper = ct.load([rec.path("cmnist-2026-11-23/erm-grid/paper")], "erm", protocol="paper")
    lines = [ct.header("ERM, test unbiased %")]
    lines.append(ct.row("default protocol (selected on held-out validation)", default, ct.test_metric("unbiased")))
    lines.append(ct.row("paper protocol (selected on the reported test split)", paper, ct.test_metric("unbiased")))
    lines.append("| published (DeNetDM Table 1) | " + " | ".join(f"{v:.1f}" for v in CMNIST_UNBIASED["erm"]) + " |")
    lines.append(
        "| bare PyTorch loop, paper protocol, seed 0 | "
        + " | ".join(f"{v:.1f}" for v in MEASURED_ERM_PAPER_PROTOCOL)
        + " |"
    )
    return "\n".join(lines)


def bmnist_published_table() -> str:
    """The published Biased MNIST unbiased test accuracy (%) by rho, with each row's source."""
    lines = [ct.table_head("method (published)", *[f"ρ {rho:g}" for rho in BMNIST_RHOS], "source")]
    for method, (values, source) in BMNIST_UNBIASED.items():
        lines.append(f"| {method} | " + " | ".join(f"{v:.1f}" for v in values) + f" | {source} |")
    return "\n".join(lines)


def val_compare_table(rec: Records, first: str, entries: Sequence[tuple[str, str, Callable[[dict], bool]]]) -> str:
    """Configurations compared over seeds on VALIDATION (unbiased / worst-group, mean ± std by ratio).

    ``entries``: (row label, folder under the results, which of its records belong to the row)."""
    lines = [ct.header(first)]
    for label, rel, keep in entries:
        runs = ct.load([rec.path(rel)], None, keep=keep)
        cells = []
        for ratio in ct.RATIOS:
            rs = runs[ratio]
            if not rs:
                cells.append("–")
                continue
            unb = ct.cell([r["metrics"]["val"]["unbiased"] for r in rs])
            worst = 100 * statistics.fmean(r["metrics"]["val"]["worst_group"] for r in rs)
            cells.append(f"{unb} / {worst:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bmnist_roots(rec: Records) -> list[Path]:
    return sorted(p for p in rec.root.glob(BMNIST) if p.is_dir())


def bmnist_table(rec: Records) -> str | None:
    """Biased MNIST (by training correlation rho), test unbiased and worst-group, when records exist."""
    records = [
        read_run(d, label=f["method"])
        for d, f in rec.finals(bmnist_roots(rec))
        if f["dataset"] == "biased_mnist" and f.get("protocol", "default") == "default"
    ]
    if not records:
        return None
    _no_duplicates(records)
    rows = [r for r in summarise(records, rules=False) if r["deployed"]]
    rhos = sorted({r["options"].get("rho", 0.99) for r in rows}, reverse=True)
    order = [m.method for m in load_suite("bmnist").methods]
    rows = sorted(rows, key=lambda r: (order.index(r["method"]) if r["method"] in order else len(order), r["method"]))
    notes = HealthNotes()
    lines = [
        "**Biased MNIST, test unbiased / worst-group accuracy** (%, mean ± std over n seeds; [published unbiased]"
        " where a paper has it)",
        "",
        ct.table_head("method", *[f"ρ {rho:g}" for rho in rhos]),
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = []
        for rho in rhos:
            match = [r for r in rows if r["method"] == method and r["options"].get("rho", 0.99) == rho]
            if not match:
                cells.append("–")
                continue
            row = match[0]
            text = f"{row['unbiased'].format()} / {row['worst_group'].format()} (n={len(row['seeds'])})"
            ref = next((x for x in references(row["method_name"], "biased_mnist", row["options"])), None)
            mark = notes.mark(f"{row['method_name']}, ρ {rho:g}", row["health"])
            cells.append(text + (f" [{ref.value:.1f}]" if ref is not None else "") + (f" {mark}" if mark else ""))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    footnotes = notes.block()
    return "\n".join(lines) + (f"\n\n{footnotes}" if footnotes else "")


def cost_tables(rec: Records) -> str:
    engine = json.loads((rec.root.parent / "results-engine-overhead.json").read_text())
    cost = json.loads((rec.root.parent / "results-method-cost.json").read_text())
    lines = [
        f"**Engine overhead** (`make bench-speed`; {engine['machine']}, torch {engine['torch']}; ERM on "
        f"{engine['train_examples']:,} Colored MNIST images, median over {engine['rounds']} rounds of "
        f"{engine['epochs_per_round']} epochs):",
        "",
        ct.table_head("loop", "s / epoch", "overhead"),
        f"| bare PyTorch loop (slice, forward, CE, backward, Adam step) | {engine['bare_loop_s_per_epoch']:.2f} | — |",
        f"| debiaslab engine, training steps only | {engine['engine_train_steps_s_per_epoch']:.2f} "
        f"| {engine['overhead_train_steps_pct']:+.1f} % |",
        f"| debiaslab engine, full epoch (+ validation, selection, atomic checkpoint) "
        f"| {engine['engine_full_epoch_s']:.2f} | {engine['overhead_full_epoch_pct']:+.1f} % |",
        "",
        f"**Cost per epoch relative to ERM** (`make bench-cost`; {cost['machine']}; Colored MNIST "
        f"{100 * cost['ratio']:g} %, {cost['n_train']:,} training images, training steps only, median of epochs 2–"
        f"{cost['epochs']}):",
        "",
        ct.table_head("method", "s / epoch", "× ERM"),
        *[f"| {r['method']} | {r['s_per_epoch']:.2f} | {r['x_erm']:.2f} |" for r in cost["rows"]],
    ]
    aux = cost.get("bam_aux_memory_bytes")
    if aux:
        lines += [
            "",
            f"BAM's auxiliary logit table: {aux['aux_table_bytes'] / 1e6:.2f} MB, plus its gradient and optimiser "
            f"state: {aux['aux_total_bytes'] / 1e6:.2f} MB during amplification, nothing afterwards.",
        ]
    return "\n".join(lines)


@dataclass(frozen=True)
class TunedSuite:
    """A tuning suite whose committed records (``benchmarks/results/<suite>-<date>/``, the latest shown) make a
    fair table: the option its final runs vary, the dataset and the presets beside it."""

    axis: tune_tables.Axis
    dataset: str
    presets: Callable[[Records], list[Path]]


#: Equal-budget tuning suites: committed copies of `debiaslab tune --suite <name>` output
TUNED = {
    "cmnist-tune": TunedSuite(tune_tables.RATIO, "colored_mnist", lambda rec: rec.headline()),
    "bmnist-tune": TunedSuite(tune_tables.RHO, "biased_mnist", lambda rec: bmnist_roots(rec)),
}


#: a tuned table's placeholder suffix and the test metrics in its cells
TUNED_METRICS = {"": ("unbiased", "worst_group"), "_unbiased": ("unbiased",)}


def tuned_root(rec: Records, suite: str) -> Path | None:
    roots = sorted(p for p in rec.root.glob(f"{suite}-2*") if p.is_dir())
    return roots[-1] if roots else None


def _suite_order(suite: str) -> list[str]:
    return [e.label for e in load_tune_suite(suite).methods]


def _tuned_args(rec: Records, suite: str) -> tuple[list[str], list[Path], dict]:
    """What every tuned table of ``suite`` takes: the suite's method order, the preset roots beside it, the axis."""
    spec = TUNED[suite]
    return _suite_order(suite), spec.presets(rec), {"axis": spec.axis, "dataset": spec.dataset}


def tuned(rec: Records, suite: str, rule: str, metrics: Sequence[str]) -> str | None:
    """The test table of ``rule``'s tuned configurations beside the preset rows, when its runs are committed."""
    root = tuned_root(rec, suite)
    if root is None or rule not in tune_tables.rules(root):
        return None
    order, presets, kwargs = _tuned_args(rec, suite)
    return tune_tables.tuned_table(root, rule, order, presets, metrics, **kwargs)


def tuned_rules(rec: Records, suite: str, metrics: Sequence[str]) -> str | None:
    """One table of a suite trained at one setting: each method's preset beside every rule's tuned runs."""
    root = tuned_root(rec, suite)
    if root is None or not tune_tables.rules(root):
        return None
    order, presets, kwargs = _tuned_args(rec, suite)
    return tune_tables.rules_table(root, order, presets, metrics, **kwargs)


def tuned_choices(rec: Records, suite: str) -> str | None:
    root = tuned_root(rec, suite)
    if root is None or not tune_tables.searches(root):
        return None
    return tune_tables.choices_table(root, _suite_order(suite), load_tune_suite(suite).rules)


def tuned_budget(rec: Records, suite: str) -> str | None:
    root = tuned_root(rec, suite)
    return None if root is None else tune_tables.budget_line(root, TUNED[suite].axis)


def tune_pruning_table(rec: Records) -> str | None:
    """`make bench-tune`: the same 20-trial search without pruning and with each pruner (wall time, trials pruned,
    epochs trained, best validation score), when its result file is committed."""
    path = rec.root.parent / "results-tune-pruning.json"
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    setup = doc["setup"]
    lines = [
        f"**What pruning saves** (`make bench-tune`; {doc['machine']}; {setup['trials']} trials of "
        f"{setup['method']} on {setup['dataset']} {100 * setup['ratio']:g} %, {setup['sampler']} sampler seed "
        f"{setup['seed']}, an epoch cap of {setup['epochs']}, objective `{setup['rule']}`):",
        "",
        ct.table_head("pruner", "wall time (s)", "× unpruned", "trials pruned", "epochs trained", "best val score"),
    ]
    for r in doc["results"]:
        trials = r["trials"]
        lines.append(
            f"| {r['pruner']} | {r['wall_s']:.0f} | {r['time_vs_unpruned']:.2f} | {trials['pruned']} / "
            f"{trials['done']} | {r['validated_epochs']} | {100 * r['best_score']:.1f} (trial {r['best_trial']}) |"
        )
    if doc.get("note"):
        lines += ["", doc["note"]]
    return "\n".join(lines)


def ule_search(rec: Records) -> str | None:
    return ule_search_table.table(rec.path("ule-search")) if rec.exists("ule-search") else None


def if_method(rec: Records, method: str, make: Callable[[], str]) -> str | None:
    return make() if method in rec.methods(rec.headline()) else None


def if_any(rec: Records, keep: Callable[[dict], bool], make: Callable[[], str]) -> str | None:
    """``make()`` when some headline record satisfies ``keep``; else None (the section is dropped)."""
    return make() if any(keep(f) for _, f in rec.finals(rec.headline())) else None


# ---------------------------------------------------------------------------------------------- pages
def generators(rec: Records) -> dict[str, Callable[[], str | None]]:
    """``{placeholder: function}``; a function returning None drops its placeholder's section."""
    p, jtt = rec.path, _method("jtt")
    return {
        "machine": lambda: machine_line(rec),
        "headline": lambda: headline_tables(rec),
        "changed_defaults": lambda: changed_defaults_note(rec),
        "conflicting_aligned": lambda: headline_tables(rec, ("conflicting", "aligned")),
        "erm_protocol": lambda: erm_protocol_table(rec),
        **{f"method:{m}": (lambda m=m: if_method(rec, m, lambda: method_table(rec, m))) for m in _all_methods()},
        "jtt_sweep": lambda: ct.jtt_tune_table(p("cmnist-2026-11-23/jtt-sweep")),
        "jtt_wd": lambda: ct.jtt_tune_table(p("cmnist-2026-11-24/jtt-wd")),
        "jtt_identify": lambda: ct.jtt_tune_table(p("cmnist-2026-11-24/jtt-identify")),
        "jtt_tune": lambda: ct.jtt_tune_table(p("cmnist-2026-11-24/jtt-tune")),
        "jtt_defaults": lambda: val_compare_table(
            rec,
            "JTT setting: val unbiased / val worst-group",
            [
                ("identify lr 1e-3, λ_up 50, no stage-2 weight decay", "cmnist-2026-11-23/jtt-first-default", jtt),
                ("identify lr 1e-3, λ_up 200, stage-2 weight decay 0.01", "cmnist-2026-11-24/jtt-wd-default", jtt),
                (
                    "identify lr 3e-4, λ_up 200, stage-2 weight decay 0.01 (default)",
                    "cmnist-2026-11-24/jtt-idlr",
                    jtt,
                ),
            ],
        ),
        "bam_tune": lambda: ct.bam_tune_table(p("cmnist-2026-11-24/bam-tune")),
        "bam": lambda: ct.bam_table(rec.headline()),
        "ule_search": lambda: ule_search(rec),
        "ule_final": lambda: if_any(
            rec, _gradient_ule, lambda: ct.ule_table(rec.headline(), None, _gradient_ule, "ule")
        ),
        "mistake_reweight_final": lambda: if_any(
            rec,
            _mistake_reweighting,
            lambda: ct.ule_table(rec.headline(), None, _mistake_reweighting, "mistake_reweight"),
        ),
        "ule_tune": lambda: ct.ule_tune_table(p("cmnist-2026-11-24/ule-tune")),
        "ule_cand": lambda: ct.ule_cand_table(p("cmnist-2026-11-24/ule-cand")),
        "ule_mem": lambda: ct.ule_cand_table(p("cmnist-2026-11-24/ule-mem")),
        "ule_swd": lambda: ct.ule_cand_table(p("cmnist-2026-11-24/ule-swd")),
        "ule_full_compare": lambda: val_compare_table(
            rec,
            "teacher: val unbiased / val worst-group",
            [
                ("gradient mask 25 %, λ 1, unregularised student", "cmnist-2026-11-24/ule-mask-default", _gradient_ule),
                ("mistake reweighting, λ 5, student L2 0.01", "cmnist-2026-11-24/cmnist", _mistake_reweighting),
                ("mistake reweighting, λ 5, student L2 0.03", "cmnist-2026-11-24/ule-l2-0.03", _mistake_reweighting),
            ],
        ),
        "denetdm": lambda: ct.denetdm_table(rec.headline()),
        "denetdm_paper": lambda: ct.denetdm_paper_table(p("cmnist-2026-11-24/denetdm-paper")),
        "denetdm_bmnist": lambda: denetdm_tables.premise_table(bmnist_roots(rec)),
        "denetdm_bmnist_epochs": lambda: denetdm_tables.epochs_table(p(DENETDM_FIRST_EPOCHS)),
        "dett": lambda: ct.dett_table(rec.headline()),
        "kd_sweep": lambda: ct.kd_sweep_table(p("cmnist-2026-11-24/kd-sweep")),
        "kd_label_heavy": lambda: ct.kd_table(p("cmnist-2026-11-24/kd-a0.1-t1"), split="val"),
        "rest_sweep": lambda: ct.rest_table(p("cmnist-2026-11-24/rest-sweep")),
        "cost": lambda: cost_tables(rec),
        "tune_pruning": lambda: tune_pruning_table(rec),
        "biased_mnist": lambda: bmnist_table(rec),
        **{
            f"{name}:{suite}": (lambda suite=suite, gen=gen: gen(rec, suite))
            for suite in TUNED
            for name, gen in (("tuned_budget", tuned_budget), ("tuned_choices", tuned_choices))
        },
        **{
            f"tuned{suffix}:{suite}:{rule}": (
                lambda suite=suite, rule=rule, metrics=metrics: tuned(rec, suite, rule, metrics)
            )
            for suite in TUNED
            for rule in tune_tables.RULE_TITLE
            for suffix, metrics in TUNED_METRICS.items()
        },
        **{
            f"tuned_rules{suffix}:{suite}": (lambda suite=suite, metrics=metrics: tuned_rules(rec, suite, metrics))
            for suite in TUNED
            for suffix, metrics in TUNED_METRICS.items()
        },
        "tuned_index": lambda: (
            "| [Equal-budget tuning](tuned.md) | every method searched with the same budget, the chosen "
            "configurations over seeds |"
            if tuned_budget(rec, "cmnist-tune") is not None
            else None
        ),
        "tuned_bmnist_index": lambda: (
            "| [Equal-budget tuning on Biased MNIST](tuned-biased-mnist.md) | the same search on Biased MNIST |"
            if tuned_budget(rec, "bmnist-tune") is not None
            else None
        ),
        "bmnist_published": bmnist_published_table,
        "biased_mnist_index": lambda: (
            "| [Biased MNIST](biased-mnist.md) | every method by training correlation ρ |"
            if bmnist_table(rec) is not None
            else None
        ),
    }


def _method(name: str) -> Callable[[dict], bool]:
    return lambda final: final["method"] == name


def _mistake_reweighting(final: dict) -> bool:
    """Runs of the mistake-reweighting scheme: recorded as ``mistake_reweight``, or as ``ule`` with Ω ``reweight``
    (how ULE's configuration recorded it before it became its own method)."""
    hparams = final.get("hparams") or {}
    return final["method"] == "mistake_reweight" or (final["method"] == "ule" and hparams.get("omega") == "reweight")


def _gradient_ule(final: dict) -> bool:
    return final["method"] == "ule" and not _mistake_reweighting(final)


def _all_methods() -> list[str]:
    from debiaslab.methods.registry import METHODS, list_methods

    list_methods()  # imports the built-in methods
    return list(METHODS.names())


PLACEHOLDER = re.compile(r"^\{\{([a-z_:-]+)\}\}$")
SECTION = re.compile(r"^<!-- section -->$")


def render(template: str, gens: dict[str, Callable[[], str | None]], source: str) -> str:
    """Fill a template. A ``<!-- section -->`` line opens a section that runs to the next one (or the end); a
    section holding a placeholder whose table is absent is dropped whole."""
    out: list[str] = []
    for section in _sections(template.splitlines()):
        filled, keep = [], True
        for line in section:
            m = PLACEHOLDER.match(line.strip())
            if m is None:
                filled.append(line)
                continue
            if m.group(1) not in gens:
                raise SystemExit(f"{source}: unknown placeholder {{{{{m.group(1)}}}}}")
            text = gens[m.group(1)]()
            if text is None:
                keep = False
                break
            filled.append(text)
        if keep:
            out += filled
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()
    return text + "\n" if text else ""


def _sections(lines: list[str]) -> list[list[str]]:
    sections: list[list[str]] = [[]]
    for line in lines:
        if SECTION.match(line.strip()):
            sections.append([])
        else:
            sections[-1].append(line)
    return sections


def pages(repo: Path = REPO) -> dict[str, str]:
    """Every generated file: ``{path relative to the repository: text}`` (README.md with its blocks filled)."""
    rec = Records(repo / RESULTS)
    gens = generators(rec)
    out = {}
    for template in sorted((repo / TEMPLATES).glob("*.md")):
        if template.name.startswith("_"):
            continue
        body = render(template.read_text(), gens, str(template))
        if body.strip():  # a page whose only section has no records yet is not written
            header = f"<!-- generated by `{COMMAND}` from {RESULTS}/ and {TEMPLATES}/{template.name}; do not edit -->\n"
            out[f"docs/results/{template.name}"] = header + body
    readme = (repo / "README.md").read_text()
    for name in ("cmnist", "tuned", "biased-mnist"):
        body = render((repo / TEMPLATES / f"_readme-{name}.md").read_text(), gens, name)
        readme = splice(readme, name, body if body.strip() else "")
    out["README.md"] = readme
    return out


def splice(text: str, name: str, body: str) -> str:
    """Replace the block between ``<!-- generated:NAME:start -->`` and ``<!-- generated:NAME:end -->``."""
    start, end = f"<!-- generated:{name}:start -->", f"<!-- generated:{name}:end -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"README.md: no block {start} ... {end}; add the two markers where the block belongs")
    return pattern.sub(lambda _: f"{start}\n{body}{end}", text, count=1)


def stale(repo: Path = REPO, wanted: dict[str, str] | None = None) -> list[str]:
    """Generated files that differ from what the records give (or are missing), and stray pages."""
    wanted = pages(repo) if wanted is None else wanted
    bad = [p for p, text in wanted.items() if not (repo / p).is_file() or (repo / p).read_text() != text]
    for page in sorted((repo / "docs/results").glob("*.md")):
        if f"docs/results/{page.name}" not in wanted:
            bad.append(f"docs/results/{page.name} (no template: remove it)")
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 when any)")
    args = parser.parse_args(argv)
    if args.check:
        bad = stale()
        for path in bad:
            sys.stderr.write(f"stale: {path}\n")
        if bad:
            sys.stderr.write(f"run `{COMMAND}` and commit the result\n")
        return 1 if bad else 0
    (REPO / "docs/results").mkdir(parents=True, exist_ok=True)
    for path, text in pages().items():
        target = REPO / path
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)
            sys.stderr.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
