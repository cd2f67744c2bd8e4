"""Regenerate every results page under ``docs/results/`` and the README's generated blocks from the committed run
records (``benchmarks/results/``).

Each page is a template from ``benchmarks/docs_templates/`` (the prose) whose ``{{name}}`` lines are replaced by
tables computed from the records' ``final.json`` / ``config.yaml`` (the numbers). Rows are named by each record's
recorded method, never by its folder, so renaming a method is a change of its records. A section whose records
are absent (e.g. Biased MNIST before its runs are committed) is left out, never filled with placeholders.
Tables that compare configurations show validation scores only; test scores appear only for the configurations
a method deploys, over seeds.

    python benchmarks/make_docs.py                 # rewrite docs/results/*.md and the blocks of README.md, docs/ule.md
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cmnist_tables as ct
import denetdm_tables
import dett_projector_table
import labelfree_tables as lf
import statistics_tables as st
import tune_readings
import tune_tables
import ule_search_table

from debiaslab.bench.aggregate import RunRecord, add_differences, metric_cell, read_run, summarise
from debiaslab.bench.health_marks import HealthNotes
from debiaslab.bench.ledger import label_ledger
from debiaslab.bench.paper import (
    BMNIST_RHOS,
    BMNIST_UNBIASED,
    CMNIST_UNBIASED,
    MEASURED_ERM_PAPER_PROTOCOL,
    references,
)
from debiaslab.bench.results import order_rows, ratio_pivot_markdown
from debiaslab.bench.stats import MARKS_LEGEND, SEEDS_ONLY_LEGEND, SEEDS_ONLY_MARK, difference_cell, mark, method_line
from debiaslab.bench.suite import load_suite
from debiaslab.errors import DataError
from debiaslab.evaluation.ledger import ledger_text
from debiaslab.tune.suite import load_tune_suite

REPO = Path(__file__).resolve().parent.parent
RESULTS = Path("benchmarks/results")
#: the critical-difference figure of the statistics page (written by ``main``, linked from the page)
FIGURE = Path("docs/img/critical-difference.png")
TEMPLATES = Path("benchmarks/docs_templates")
COMMAND = "python benchmarks/make_docs.py"

#: The Colored MNIST headline: every method at its default, seeds 0-2, the `cmnist` suite's layout.
HEADLINE = (
    "cmnist-2026-11-23/erm-grid/default",
    "cmnist-2026-11-23/cmnist",
    "cmnist-2026-11-24/cmnist",
    "cmnist-2026-11-24/jtt-idlr",
    "cmnist-2026-12-04/cmnist",
    "cmnist-2026-12-07/cmnist",
)
#: Biased MNIST results: committed copies of `debiaslab bench bmnist` runs, ``benchmarks/results/bmnist-<date>/``
#: (searches that also touch Biased MNIST, such as ``ule-search``, are not results and stay out)
BMNIST = "bmnist-2*"
#: a short DeNetDM run on Biased MNIST (2 + 1 epochs, seed 0) whose per-epoch log shows when its experts split
DENETDM_FIRST_EPOCHS = "denetdm-bmnist-2026-12-07/first-epochs/denetdm/seed0"
METRICS = ("unbiased", "worst_group", "conflicting", "aligned")
#: the label-free suites' committed outputs (``labelfree``: Colored MNIST, ``labelfree-bmnist``: Biased MNIST)
LABELFREE = "labelfree-2*"
LABELFREE_DIRS = {"cmnist": "labelfree/cmnist", "bmnist": "labelfree/bmnist-rho0.99"}
SEEDS_ONLY = SEEDS_ONLY_MARK
#: the README's generated blocks (``<!-- generated:NAME:start -->``), each from ``docs_templates/_readme-NAME.md``
README_BLOCKS = ("cmnist",)
TITLE = {"unbiased": "unbiased", "worst_group": "worst-group", "conflicting": "conflicting", "aligned": "aligned"}


class Records:
    """The committed run records below one results folder, read once."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._finals: dict[Path, dict] = {}
        self._all: dict[tuple[str, ...], list[Path]] | None = None
        self._once: dict[str, Any] = {}
        self.stats = ct.STATS

    def once(self, key: str, make: Callable[[], Any]) -> Any:
        """``make()``, computed once per key (tables of several pages share their rows)."""
        if key not in self._once:
            self._once[key] = make()
        return self._once[key]

    def path(self, rel: str) -> Path:
        return self.root / rel

    def exists(self, rel: str) -> bool:
        return (self.root / rel).is_dir()

    def headline(self) -> list[Path]:
        return [self.root / r for r in HEADLINE if (self.root / r).is_dir()]

    def finals(self, roots: Sequence[Path]) -> list[tuple[Path, dict]]:
        return [(final.parent, self._final(final)) for root in roots for final in sorted(root.rglob("final.json"))]

    def _final(self, path: Path) -> dict:
        """A record, read once (not to be changed in place: tables share it)."""
        if path not in self._finals:
            self._finals[path] = ct.read_final(path)
        return self._finals[path]

    def run_records(self, roots: Sequence[Path], dataset: str, protocol: str = "default") -> list[RunRecord]:
        """Library records (one row per recorded method) of ``dataset`` runs under ``roots``."""
        return [
            read_run(d, label=f["method"])
            for d, f in self.finals(roots)
            if f["dataset"] == dataset and f.get("protocol", "default") == protocol
        ]

    def summarise(self, records: Sequence[RunRecord]) -> list[dict]:
        """Rows of the deployed runs, with intervals and the labels each read (runs they were built on looked up
        among the records)."""
        return summarise(records, rules=False, stats=self.stats, inputs=self.resolver)

    def resolver(self, run_dir: Path | str) -> Callable[[str], dict | None]:
        """Finds the committed record of a run that the run in ``run_dir`` names by its training-time path (a DFR
        base run, a teacher): a record whose path inside its results folder (``<suite>-<date>/``) is a tail of
        that path, one of the same results folder first, then one of the same suite's folders."""
        if self._all is None:
            self._all = {}
            for final in self.root.rglob("final.json"):
                self._all.setdefault(self._inside(final)[-3:], []).append(final)
        home = Path(run_dir).resolve().relative_to(self.root.resolve()).parts[0]

        def resolve(path: str) -> dict | None:
            parts = Path(path).parts
            found = [
                f for f in self._all.get(tuple(parts[-3:]), []) if parts[-len(self._inside(f)) :] == self._inside(f)
            ]
            near = [f for f in found if f.relative_to(self.root).parts[0] == home]
            kin = [f for f in found if _suite_of(f.relative_to(self.root).parts[0]) == _suite_of(home)]
            found = near or kin or found
            if len(found) > 1:
                raise SystemExit(f"{run_dir}: {path!r} names two records ({found[0].parent}, {found[1].parent})")
            return self._final(found[0]) if found else None

        return resolve

    def _inside(self, final: Path) -> tuple[str, ...]:
        return final.parent.relative_to(self.root).parts[1:]

    def labels(self, run: dict) -> str:
        """A run's label ledger as one line (``run["_rule"]``: a rule it reports), from its record."""
        try:
            return ledger_text(label_ledger(run, run.get("_rule"), self.resolver(run["_dir"])))
        except DataError as exc:
            raise SystemExit(f"{run.get('_dir', run['method'])}: {exc}") from exc

    def methods(self, roots: Sequence[Path]) -> set[str]:
        return {f["method"] for _, f in self.finals(roots)}


def _suite_of(folder: str) -> str:
    """The suite a results folder holds: its name without the ``-<date>`` suffix."""
    return re.sub(r"-\d{4}-\d{2}-\d{2}$", "", folder)


# ---------------------------------------------------------------------------------------------- tables
def headline_tables(rec: Records, metrics: Sequence[str] = ("unbiased", "worst_group"), style: str = "bracket") -> str:
    """Methods x ratios of Colored MNIST test metrics (95 % interval over seeds and test examples, marked against
    ERM of the same seeds), the published number beside."""
    rows = _headline_rows(rec)
    notes_at = "docs/results/colored-mnist.md" if style == "pm" else None  # the README links to the full notes

    def pivot(rows: list[dict], metric: str) -> str:
        return ratio_pivot_markdown(rows, "colored_mnist", metric, style=style, notes_at=notes_at)

    parts = []
    for metric in metrics:
        parts += [f"**Colored MNIST, test {TITLE[metric]} accuracy** (%, {interval_words(style)}; "
                  + ("[published, ours − published] where a paper has the number; " if metric == "unbiased" else "")
                  + "marks against ERM below)",
                  "", pivot(rows, metric), ""]  # fmt: skip
    parts.append(legend("ERM", style))
    return "\n".join(parts).rstrip()


def interval_words(style: str) -> str:
    if style == "pm":
        return "mean ± half-width of its 95 % interval over n seeds and the test examples"
    return "mean [95 % interval] over n seeds and the test examples"


def legend(reference: str, style: str = "bracket", seeds_only: bool = False) -> str:
    """The line under a table with intervals and marks; in the README (``style="pm"``) short, with a link to the
    statistics page."""
    marks = MARKS_LEGEND.format(reference=reference)
    extra = f" {SEEDS_ONLY_LEGEND}." if seeds_only else ""
    if style == "pm":
        return (
            f"± is the half-width of the 95 % interval over seeds and test examples "
            f"([how it is computed](docs/results/statistics.md)). {marks}.{extra}"
        )
    return f"{marks}.{extra} Intervals: {method_line()} [How they are computed](statistics.md)."


#: Why a headline row scores below ERM at some ratio, in one line: a row below ERM without a reason here stops
#: ``make docs``, so the front page never shows such a row unexplained.
BELOW_ERM: dict[str, str] = {
    "ule": "its default was chosen on validation at Colored MNIST 1 % and Biased MNIST; at 5 % its mean is below "
    "ERM's (the paired interval is on the statistics page)",
}


def below_erm_note(rec: Records, metric: str = "unbiased") -> str:
    """One line: the headline rows below ERM on ``metric`` (and why, from :data:`BELOW_ERM`), or that none is."""
    rows = [r for r in _headline_rows(rec) if r["deployed"]]
    erm = {r["options"].get("ratio"): r[metric].mean for r in rows if r["method"] == "erm"}
    below: dict[str, list[str]] = {}
    for r in rows:
        ratio = r["options"].get("ratio")
        if r["method"] != "erm" and ratio in erm and r[metric].mean < erm[ratio]:
            below.setdefault(r["method"], []).append(f"{100 * ratio:g} %")
    missing = sorted(set(below) - set(BELOW_ERM))
    if missing:
        raise SystemExit(f"headline rows below ERM with no reason in BELOW_ERM (benchmarks/make_docs.py): {missing}")
    if not below:
        return f"Every row is above ERM's {TITLE[metric]} accuracy at every ratio."
    parts = [f"`{m}` at {', '.join(ratios)}: {BELOW_ERM[m]}" for m, ratios in below.items()]
    return "Below ERM: " + "; ".join(parts) + "."


def _headline_rows(rec: Records) -> list[dict]:
    return rec.once("headline", lambda: _read_headline_rows(rec))


def _read_headline_rows(rec: Records) -> list[dict]:
    records = rec.run_records(rec.headline(), "colored_mnist")
    _no_duplicates(records)
    order = [m.method for m in load_suite("cmnist").methods]
    rows = order_rows(rec.summarise(records), order)
    add_differences(rows, "erm", rec.stats, ("unbiased", "worst_group", "conflicting"))
    return rows


def headline_seeds(rec: Records, method: str | None = None) -> str | None:
    """The seeds behind the Colored MNIST headline (of ``method``, or of every method), e.g. ``seeds 0–2, 0–4 at
    1 %``: the seeds most ratios have, then each ratio with other seeds."""
    seeds: dict[float, set[int]] = {}
    for _, f in rec.finals(rec.headline()):
        wanted = method is None or f["method"] == method
        if wanted and f["dataset"] == "colored_mnist" and f.get("protocol", "default") == "default":
            seeds.setdefault(float(f["dataset_options"]["ratio"]), set()).add(int(f.get("seed", 0)))
    return _seed_phrase({f"at {100 * r:g} %": v for r, v in sorted(seeds.items())})


def _seed_phrase(seeds: dict[str, set[int]]) -> str | None:
    """``seeds 0–2, 0–4 at 1 %`` from ``{where: seeds}``: the seed set most entries have, then each other entry's."""
    if not seeds:
        return None
    sets = [tuple(sorted(v)) for v in seeds.values()]
    common = max(set(sets), key=lambda s: (sets.count(s), len(s)))
    others = [f"{_seed_list(v)} {where}" for where, v in seeds.items() if tuple(sorted(v)) != common]
    return ", ".join([f"seed{'s' if len(common) > 1 else ''} {_seed_list(common)}", *others])


def _seed_list(seeds: Sequence[int] | set[int]) -> str:
    """``0–2`` for a run of consecutive seeds, else ``0, 3``."""
    ordered = sorted(seeds)
    if len(ordered) > 2 and ordered == list(range(ordered[0], ordered[-1] + 1)):
        return f"{ordered[0]}–{ordered[-1]}"
    return ", ".join(map(str, ordered))


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
        get = ct.test_metric(metric) if split == "test" else (lambda r, m=metric: r["metrics"][split][m])
        lines.append(ct.row(TITLE[metric], runs, get))
    for key, name in (("error_set_precision", "error-set precision"), ("error_set_recall", "error-set recall")):
        if any(key in r.get("extras", {}) for rs in runs.values() for r in rs):
            lines.append(ct.row(f"{name} (training set, %)", runs, lambda r, k=key: r["extras"].get(k)))
    return "\n".join(lines) + "\n\n" + ledger_line(rec, [r for rs in runs.values() for r in rs])


def ledger_line(rec: Records, runs: Sequence[dict]) -> str:
    """``Labels read (from the run records): train: none · select: val groups.`` for the runs of a table, each
    distinct ledger once (per method when the table holds several)."""
    by_method: dict[str, list[str]] = {}
    for run in runs:
        text = rec.labels(run)
        if text not in by_method.setdefault(run["method"], []):
            by_method[run["method"]].append(text)
    if not by_method:
        return ""
    if len(by_method) == 1:
        return f"Labels read (from the run records): {' / '.join(next(iter(by_method.values())))}."
    parts = [f"`{m}`: {' / '.join(texts)}" for m, texts in by_method.items()]
    return f"Labels read (from the run records): {'; '.join(parts)}."


def labelled(
    rec: Records, text: str | None, roots: Sequence[Path], keep: Callable[[dict], bool] | None = None
) -> str | None:
    """``text`` (a table) followed by the labels its runs read: every record under ``roots`` ``keep`` accepts."""
    if text is None:
        return None
    runs = [{**f, "_dir": str(d)} for d, f in rec.finals(roots) if keep is None or keep(f)]
    line = ledger_line(rec, runs)
    return f"{text}\n\n{line}" if line else text


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


def bmnist_seeds(rec: Records) -> str | None:
    """The seeds of the Biased MNIST preset rows, e.g. ``seeds 0–4`` (``seeds 0–4, 0–2 for erm`` where a method has
    others)."""
    seeds: dict[str, set[int]] = {}
    for _, f in rec.finals(bmnist_roots(rec)):
        if f["dataset"] == "biased_mnist":
            seeds.setdefault(f["method"], set()).add(int(f.get("seed", 0)))
    return _seed_phrase({f"for {m}": v for m, v in seeds.items()})


def bmnist_rows(rec: Records) -> list[dict]:
    """The deployed Biased MNIST rows (suite order), marked against ERM."""
    return rec.once("bmnist", lambda: _read_bmnist_rows(rec))


def _read_bmnist_rows(rec: Records) -> list[dict]:
    records = [
        read_run(d, label=f["method"])
        for d, f in rec.finals(bmnist_roots(rec))
        if f["dataset"] == "biased_mnist" and f.get("protocol", "default") == "default"
    ]
    _no_duplicates(records)
    rows = [r for r in rec.summarise(records) if r["deployed"]]
    order = [m.method for m in load_suite("bmnist").methods]
    rows = sorted(rows, key=lambda r: (order.index(r["method"]) if r["method"] in order else len(order), r["method"]))
    add_differences(rows, "erm", rec.stats, ("unbiased", "worst_group", "conflicting"))
    return rows


def bmnist_table(rec: Records, style: str = "bracket") -> str | None:
    """Biased MNIST (by training correlation rho), test unbiased and worst-group, when records exist."""
    rows = bmnist_rows(rec)
    if not rows:
        return None
    rhos = sorted({r["options"].get("rho", 0.99) for r in rows}, reverse=True)
    notes = HealthNotes()
    lines = [
        f"**Biased MNIST, test unbiased / worst-group accuracy** (%, {interval_words(style)}; marks against ERM "
        "below; [published unbiased] where a paper has it)",
        "",
        ct.table_head("method", "labels", *[f"ρ {rho:g}" for rho in rhos]),
    ]
    for method in dict.fromkeys(r["method"] for r in rows):
        cells = []
        mine = [r for r in rows if r["method"] == method]
        for rho in rhos:
            match = [r for r in mine if r["options"].get("rho", 0.99) == rho]
            if not match:
                cells.append("–")
                continue
            row = match[0]
            text = " / ".join(
                f"{metric_cell(row, m, style, show_n=False)} {mark(row['vs'][m])}".rstrip()
                for m in ("unbiased", "worst_group")
            )
            text += f" (n={len(row['seeds'])})"
            ref = next((x for x in references(row["method_name"], "biased_mnist", row["options"])), None)
            health = notes.mark(f"{row['method_name']}, ρ {rho:g}", row["health"])
            cells.append(text + (f" [{ref.value:.1f}]" if ref is not None else "") + (f" {health}" if health else ""))
        labels = " / ".join(dict.fromkeys(r["labels"] for r in mine))
        lines.append(f"| {method} | {labels} | " + " | ".join(cells) + " |")
    footnotes = notes.block()
    return "\n".join([*lines, "", legend("ERM", style)] + (["", footnotes] if footnotes else []))


def settings(rec: Records) -> list[st.Setting]:
    """Every benchmark setting with results (Colored MNIST at each ratio, Biased MNIST at each rho): its deployed
    rows, marked against ERM."""
    out = []
    rows = _headline_rows(rec)
    for ratio in sorted({r["options"]["ratio"] for r in rows}):
        out.append(st.Setting(f"CMNIST {100 * ratio:g} %", [r for r in rows if r["options"]["ratio"] == ratio]))
    brows = bmnist_rows(rec)
    for rho in sorted({r["options"].get("rho", 0.99) for r in brows}, reverse=True):
        out.append(st.Setting(f"BMNIST ρ {rho:g}", [r for r in brows if r["options"].get("rho", 0.99) == rho]))
    return out


def versus(rec: Records, method: str, reference: str, metric: str) -> str | None:
    """``method − reference`` on every setting where both have runs, paired by seed: ``CMNIST 0.5 %: +4.9 [+1.2,
    +8.6] ▲ 3/3; ...`` (for a sentence that compares two methods)."""
    parts = []
    for setting in settings(rec):
        mine = next((r for r in setting.rows if r["method"] == method), None)
        theirs = next((r for r in setting.rows if r["method"] == reference), None)
        if mine is not None and theirs is not None:
            diff = rec.stats.difference(mine["scores"], theirs["scores"], metric)
            parts.append(f"{setting.name} {difference_cell(diff)}")
    return "; ".join(parts) if parts else None


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


#: pairs of methods that prose compares (``{{vs:A:B:metric}}``: A − B on every setting, paired by seed)
VERSUS = (("ule", "erm"), ("reweight_group", "groupdro"), ("rest", "erm"), ("reweight_group", "rest"))

#: a tuned table's placeholder suffix and the test metrics in its cells
TUNED_METRICS = {"": ("unbiased", "worst_group"), "_unbiased": ("unbiased",)}


def tuned_root(rec: Records, suite: str) -> list[Path] | None:
    """The results folders of ``suite`` (``<suite>-<date>/``; a suite run in parts, methods added later with
    ``--only``, has one per part, read as one), or None when none is committed."""
    roots = sorted(p for p in rec.root.glob(f"{suite}-2*") if p.is_dir())
    return roots or None


def _suite_order(suite: str) -> list[str]:
    return [e.label for e in load_tune_suite(suite).methods]


def _tuned_args(rec: Records, suite: str, style: str) -> tuple[list[str], list[Path], dict]:
    """What every tuned table of ``suite`` takes: the suite's method order, the preset roots beside it, the axis
    and how cells are shown."""
    spec = TUNED[suite]
    cells = tune_tables.Cells(style, rec.labels)
    return _suite_order(suite), spec.presets(rec), {"axis": spec.axis, "dataset": spec.dataset, "cells": cells}


def tuned(rec: Records, suite: str, rule: str, metrics: Sequence[str], style: str = "bracket") -> str | None:
    """The test table of ``rule``'s tuned configurations beside the preset rows, when its runs are committed."""
    root = tuned_root(rec, suite)
    if root is None or rule not in tune_tables.rules(root):
        return None
    order, presets, kwargs = _tuned_args(rec, suite, style)
    table = tune_tables.tuned_table(root, rule, order, presets, metrics, **kwargs)
    return f"{table}\n\n{legend('the preset row', style, SEEDS_ONLY in table)}"


def tuned_rules(rec: Records, suite: str, metrics: Sequence[str], style: str = "bracket") -> str | None:
    """One table of a suite trained at one setting: each method's preset beside every rule's tuned runs."""
    root = tuned_root(rec, suite)
    if root is None or not tune_tables.rules(root):
        return None
    order, presets, kwargs = _tuned_args(rec, suite, style)
    table = tune_tables.rules_table(root, order, presets, metrics, **kwargs)
    return f"{table}\n\n{legend('the preset', style, SEEDS_ONLY in table)}"


def tuned_families(rec: Records, suite: str, rule: str) -> str | None:
    """Where each family's tuned methods differ from tuned ERM under ``rule`` (paired marks, test unbiased)."""
    root = tuned_root(rec, suite)
    if root is None or rule not in tune_tables.rules(root):
        return None
    return tune_tables.family_table(root, rule, _suite_order(suite), axis=TUNED[suite].axis)


def tuned_readings(rec: Records, suite: str) -> str | None:
    """The generated bullets of a tuned page's reading: highest means, marks against the preset, same trials."""
    root = tuned_root(rec, suite)
    if root is None or not tune_tables.rules(root):
        return None
    order, presets, kwargs = _tuned_args(rec, suite, "bracket")
    return tune_readings.readings(root, order, load_tune_suite(suite).rules, presets, **kwargs)


def tuned_choices(rec: Records, suite: str) -> str | None:
    root = tuned_root(rec, suite)
    if root is None or not tune_tables.searches(root):
        return None
    return tune_tables.choices_table(root, _suite_order(suite), load_tune_suite(suite).rules)


def tuned_budget(rec: Records, suite: str) -> str | None:
    root = tuned_root(rec, suite)
    axis = TUNED[suite].axis if suite in TUNED else tune_tables.RATIO
    return None if root is None else tune_tables.budget_line(root, axis)


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


#: DeTT's map-projector comparison (validation only), ``debiaslab bench benchmarks/suites/dett-projector.yaml``
DETT_PROJECTOR = "dett-projector-2026-12-07"


def dett_projector(rec: Records) -> str | None:
    if not rec.exists(DETT_PROJECTOR):
        return None
    return dett_projector_table.table(rec.path(DETT_PROJECTOR))


def ule_search(rec: Records) -> str | None:
    return ule_search_table.table(rec.path("ule-search")) if rec.exists("ule-search") else None


def if_method(rec: Records, method: str, make: Callable[[], str]) -> str | None:
    return make() if method in rec.methods(rec.headline()) else None


def if_any(rec: Records, keep: Callable[[dict], bool], make: Callable[[], str]) -> str | None:
    """``make()`` when some headline record satisfies ``keep``; else None (the section is dropped)."""
    return make() if any(keep(f) for _, f in rec.finals(rec.headline())) else None


# ---------------------------------------------------------------------------------------------- pages
def labelfree_root(rec: Records, key: str) -> Path | None:
    """The newest committed label-free records of ``key`` (``cmnist`` or ``bmnist``), if any."""
    found = sorted(p / LABELFREE_DIRS[key] for p in rec.root.glob(LABELFREE) if (p / LABELFREE_DIRS[key]).is_dir())
    return found[-1] if found else None


def labelfree_count(rec: Records) -> str | None:
    """How many of each label-free suite's runs are recorded (a page built before a suite finished says so)."""
    parts = []
    for key, suite in (("cmnist", "labelfree"), ("bmnist", "labelfree-bmnist")):
        root = labelfree_root(rec, key)
        if root is not None:
            done = len(list(root.rglob("final.json")))
            parts.append(f"`{suite}`: {done} of its {len(load_suite(suite).plan())} runs")
    return "Runs recorded: " + "; ".join(parts) + "." if parts else None


def labelfree_seed_methods(rec: Records) -> str | None:
    """The headline's methods whose training reads no group labels (and ERM), Colored MNIST test unbiased accuracy at
    their own presets: what a user without group labels can run without inferring groups first."""
    rows = [r for r in _headline_rows(rec) if r["labels"].startswith("train: none") and r["method_name"] != "dfr"]
    if len(rows) < 2:
        return None
    return ratio_pivot_markdown(rows, "colored_mnist", "unbiased", compare_paper=False) + "\n\n" + legend("ERM")


def labelfree_tuned(rec: Records, rule: str) -> str | None:
    """The pipelines ``labelfree-tune`` tuned on Colored MNIST, chosen by ``rule``, beside their presets."""
    root = tuned_root(rec, "labelfree-tune")
    if root is None or rule not in tune_tables.rules(root):
        return None
    table = lf.tuned_table(root, labelfree_root(rec, "cmnist"), rule, ledger=rec.labels)
    if table is None:
        return None
    extra = f"{SEEDS_ONLY_LEGEND}. " if SEEDS_ONLY in table else ""
    return f"{table}\n\n{extra}Intervals: {method_line()} [How they are computed](statistics.md)."


def labelfree(rec: Records, key: str, make: Callable[[Path], str | None]) -> str | None:
    root = labelfree_root(rec, key)
    return make(root) if root is not None else None


def generators(rec: Records, style: str = "bracket") -> dict[str, Callable[[], str | None]]:
    """``{placeholder: function}``; a function returning None drops its placeholder's section. ``style``: how
    intervals are shown (``bracket`` on the docs pages, ``pm``, ± half-width, in the README)."""
    p, jtt = rec.path, _method("jtt")
    return {
        "machine": lambda: machine_line(rec),
        "headline": lambda: headline_tables(rec, style=style),
        "seeds": lambda: headline_seeds(rec),
        "bmnist_seeds": lambda: bmnist_seeds(rec),
        **{f"seeds:{m.method}": (lambda m=m.method: headline_seeds(rec, m)) for m in load_suite("cmnist").methods},
        "readme_headline": lambda: headline_tables(rec, ("unbiased",), style=style),
        "below_erm": lambda: below_erm_note(rec),
        "changed_defaults": lambda: changed_defaults_note(rec),
        "conflicting_aligned": lambda: headline_tables(rec, ("conflicting", "aligned"), style),
        "paired_erm": lambda: st.paired_tables(settings(rec), "erm"),
        "ranks": lambda: st.rank_section(settings(rec), FIGURE.name),
        "intervals_method": method_line,
        **{
            f"vs:{a}:{b}:{m}": (lambda a=a, b=b, m=m: versus(rec, a, b, m))
            for a, b in VERSUS
            for m in ("unbiased", "worst_group")
        },
        "erm_protocol": lambda: erm_protocol_table(rec),
        **{f"method:{m}": (lambda m=m: if_method(rec, m, lambda: method_table(rec, m))) for m in _all_methods()},
        **{
            name: (lambda name=name, rel=rel, make=make: labelled(rec, make(p(rel)), [p(rel)]))
            for name, rel, make in (
                ("jtt_sweep", "cmnist-2026-11-23/jtt-sweep", ct.jtt_tune_table),
                ("jtt_wd", "cmnist-2026-11-24/jtt-wd", ct.jtt_tune_table),
                ("jtt_identify", "cmnist-2026-11-24/jtt-identify", ct.jtt_tune_table),
                ("jtt_tune", "cmnist-2026-11-24/jtt-tune", ct.jtt_tune_table),
                ("bam_tune", "cmnist-2026-11-24/bam-tune", ct.bam_tune_table),
                ("ule_tune", "cmnist-2026-11-24/ule-tune", ct.ule_tune_table),
                ("ule_cand", "cmnist-2026-11-24/ule-cand", ct.ule_cand_table),
                ("ule_mem", "cmnist-2026-11-24/ule-mem", ct.ule_cand_table),
                ("ule_swd", "cmnist-2026-11-24/ule-swd", ct.ule_cand_table),
                ("denetdm_paper", "cmnist-2026-11-24/denetdm-paper", ct.denetdm_paper_table),
                ("kd_sweep", "cmnist-2026-11-24/kd-sweep", ct.kd_sweep_table),
                ("kd_label_heavy", "cmnist-2026-11-24/kd-a0.1-t1", lambda root: ct.kd_table(root, split="val")),
                ("rest_sweep", "cmnist-2026-11-24/rest-sweep", ct.rest_table),
            )
        },
        "jtt_defaults": lambda: labelled(
            rec,
            val_compare_table(rec, "JTT setting: val unbiased / val worst-group", JTT_DEFAULTS),
            [p(rel) for _, rel, _ in JTT_DEFAULTS],
            jtt,
        ),
        "bam": lambda: labelled(rec, ct.bam_table(rec.headline()), rec.headline(), _method("bam")),
        "ule_search": lambda: labelled(rec, ule_search(rec), [p("ule-search")]),
        "dett_projector": lambda: labelled(rec, dett_projector(rec), [p(DETT_PROJECTOR)]),
        "ule_final": lambda: if_any(
            rec,
            _gradient_ule,
            lambda: labelled(
                rec, ct.ule_table(rec.headline(), None, _gradient_ule, "ule"), rec.headline(), _gradient_ule
            ),
        ),
        "mistake_reweight_final": lambda: if_any(
            rec,
            _mistake_reweighting,
            lambda: labelled(
                rec,
                ct.ule_table(rec.headline(), None, _mistake_reweighting, "mistake_reweight"),
                rec.headline(),
                _mistake_reweighting,
            ),
        ),
        "ule_full_compare": lambda: labelled(
            rec,
            val_compare_table(rec, "teacher: val unbiased / val worst-group", ULE_COMPARE),
            [p(rel) for _, rel, _ in ULE_COMPARE],
            lambda f: _gradient_ule(f) or _mistake_reweighting(f),
        ),
        "denetdm": lambda: labelled(rec, ct.denetdm_table(rec.headline()), rec.headline(), _method("denetdm")),
        "dett": lambda: labelled(
            rec, ct.dett_table(rec.headline()), rec.headline(), lambda f: f["method"] in ("dett", "kd")
        ),
        "denetdm_bmnist": lambda: labelled(
            rec, denetdm_tables.premise_table(bmnist_roots(rec)), bmnist_roots(rec), _method("denetdm")
        ),
        "denetdm_bmnist_epochs": lambda: denetdm_tables.epochs_table(p(DENETDM_FIRST_EPOCHS)),
        "cost": lambda: cost_tables(rec),
        "tune_pruning": lambda: tune_pruning_table(rec),
        "biased_mnist": lambda: bmnist_table(rec, style),
        **{
            f"{name}:{suite}": (lambda suite=suite, gen=gen: gen(rec, suite))
            for suite in TUNED
            for name, gen in (("tuned_budget", tuned_budget), ("tuned_choices", tuned_choices))
        },
        **{
            f"tuned{suffix}:{suite}:{rule}": (
                lambda suite=suite, rule=rule, metrics=metrics: tuned(rec, suite, rule, metrics, style)
            )
            for suite in TUNED
            for rule in tune_tables.RULE_TITLE
            for suffix, metrics in TUNED_METRICS.items()
        },
        **{f"tuned_readings:{suite}": (lambda suite=suite: tuned_readings(rec, suite)) for suite in TUNED},
        **{
            f"tuned_families:{suite}:{rule}": (lambda suite=suite, rule=rule: tuned_families(rec, suite, rule))
            for suite in TUNED
            for rule in tune_tables.RULE_TITLE
        },
        **{
            f"tuned_rules{suffix}:{suite}": (
                lambda suite=suite, metrics=metrics: tuned_rules(rec, suite, metrics, style)
            )
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
        **{
            f"labelfree_{name}:{key}": (lambda key=key, make=make: labelfree(rec, key, make))
            for key in LABELFREE_DIRS
            for name, make in (
                ("quality", lf.quality_table),
                ("unbiased", lambda r: lf.accuracy_table(r, "unbiased")),
                ("worst_group", lambda r: lf.accuracy_table(r, "worst_group")),
                ("gap", lambda r, key=key: lf.gap_sentence(r, "0.01" if key == "cmnist" else lf.settings_of(r)[0])),
            )
        },
        "labelfree_count": lambda: labelfree_count(rec),
        "labelfree_tune_budget": lambda: tuned_budget(rec, "labelfree-tune"),
        **{
            f"labelfree_tuned:{rule}": (lambda rule=rule: labelfree_tuned(rec, rule))
            for rule in load_tune_suite("labelfree-tune").rules
        },
        "labelfree_seed_methods": lambda: labelfree_seed_methods(rec),
        "labelfree_index": lambda: (
            "| [Without group labels](labelfree.md) | group inference scored against the truth; group methods on "
            "inferred groups beside the same methods on true groups |"
            if labelfree_root(rec, "cmnist") is not None
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


#: the JTT settings compared on validation: (row label, folder under the results, which records)
JTT_DEFAULTS = (
    ("identify lr 1e-3, λ_up 50, no stage-2 weight decay", "cmnist-2026-11-23/jtt-first-default", _method("jtt")),
    ("identify lr 1e-3, λ_up 200, stage-2 weight decay 0.01", "cmnist-2026-11-24/jtt-wd-default", _method("jtt")),
    ("identify lr 3e-4, λ_up 200, stage-2 weight decay 0.01 (default)", "cmnist-2026-11-24/jtt-idlr", _method("jtt")),
)
#: ULE's teacher readings compared on validation
ULE_COMPARE = (
    ("gradient mask 25 %, λ 1, unregularised student", "cmnist-2026-11-24/ule-mask-default", _gradient_ule),
    ("mistake reweighting, λ 5, student L2 0.01", "cmnist-2026-11-24/cmnist", _mistake_reweighting),
    ("mistake reweighting, λ 5, student L2 0.03", "cmnist-2026-11-24/ule-l2-0.03", _mistake_reweighting),
)


def _all_methods() -> list[str]:
    from debiaslab.methods.registry import METHODS, list_methods

    list_methods()  # imports the built-in methods
    return list(METHODS.names())


PLACEHOLDER = re.compile(r"\{\{([a-z_:-]+)\}\}")
SECTION = re.compile(r"^<!-- section -->$")


def render(template: str, gens: dict[str, Callable[[], str | None]], source: str) -> str:
    """Fill a template: every ``{{name}}`` (a line of its own for a table, or inside a sentence) becomes its
    generator's text. A ``<!-- section -->`` line opens a section that runs to the next one (or the end); a
    section holding a placeholder whose table is absent is dropped whole."""
    out: list[str] = []
    for section in _sections(template.splitlines()):
        filled, keep = [], True
        for line in section:
            texts = {}
            for name in PLACEHOLDER.findall(line):
                if name not in gens:
                    raise SystemExit(f"{source}: unknown placeholder {{{{{name}}}}}")
                texts[name] = gens[name]()
                if texts[name] is None:
                    keep = False
            if not keep:
                break
            filled.append(PLACEHOLDER.sub(lambda m, texts=texts: texts[m.group(1)], line) if texts else line)
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


def pages(repo: Path = REPO, rec: Records | None = None) -> dict[str, str]:
    """Every generated file: ``{path relative to the repository: text}`` (README.md and docs/ule.md with their
    blocks filled)."""
    rec = rec if rec is not None else Records(repo / RESULTS)
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
    readme_gens = generators(rec, style="pm")
    for name in README_BLOCKS:
        body = render((repo / TEMPLATES / f"_readme-{name}.md").read_text(), readme_gens, name)
        readme = splice(readme, name, body if body.strip() else "")
    out["README.md"] = readme
    # the ULE page shows the validation comparison that chose its default
    ule_table = ule_search(rec)
    out["docs/ule.md"] = splice(
        (repo / "docs/ule.md").read_text(), "ule-search", ule_table + "\n" if ule_table else "", "docs/ule.md"
    )
    return out


def splice(text: str, name: str, body: str, where: str = "README.md") -> str:
    """Replace the block between ``<!-- generated:NAME:start -->`` and ``<!-- generated:NAME:end -->``."""
    start, end = f"<!-- generated:{name}:start -->", f"<!-- generated:{name}:end -->"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"{where}: no block {start} ... {end}; add the two markers where the block belongs")
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
    rec = Records(REPO / RESULTS)
    figure = st.critical_difference_figure(settings(rec), REPO / FIGURE)
    if figure is not None:
        sys.stderr.write(f"wrote {FIGURE}\n")
    for path, text in pages(REPO, rec).items():
        target = REPO / path
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)
            sys.stderr.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
