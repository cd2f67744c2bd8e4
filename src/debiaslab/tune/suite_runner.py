"""Run a tuning suite: search every method with the suite's budget, then train each rule's chosen configurations
on the final ratios and seeds (one bench table per rule), and write ``report.md`` stating the budget, the rules
and the chosen values.

Layout under the output folder: ``search/<label>/`` (one search each: study.db, trials/, search.md, plot),
``final-<rule>/`` (bench runs and report of the configurations that rule chose), ``report.md``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from debiaslab.bench.runner import BenchResult
from debiaslab.errors import ConfigError
from debiaslab.tune.final import Chosen, chosen_hparams, final_suite, train_chosen
from debiaslab.tune.search import SearchResult, run_search
from debiaslab.tune.space import describe_space
from debiaslab.tune.study import SearchSpec
from debiaslab.tune.suite import TuneSuite
from debiaslab.utils.io import atomic_write_text

log = logging.getLogger(__name__)


def search_spec(suite: TuneSuite, entry: Any, out: Path, storage: str | None, **paths: Any) -> SearchSpec:
    return SearchSpec(
        method=entry.method,
        dataset=suite.dataset,
        dataset_options=suite.search_options,
        space=entry.space,
        fixed=entry.fixed,
        rule=suite.objective,
        trials=suite.trials,
        epochs=suite.epochs,
        sampler=suite.sampler,
        pruner=suite.pruner,
        seed=suite.seed,
        out=str(out / "search" / entry.label),
        storage=storage,
        study_name=f"{suite.name}-{entry.label}",
        threads=suite.threads,
        device=suite.device,
        imports=suite.imports,
        **paths,
    )


def run_tune_suite(
    suite: TuneSuite,
    out: str | Path | None = None,
    *,
    workers: int = 1,
    only: Sequence[str] | None = None,
    no_final: bool = False,
    storage: str | None = None,
    data_root: str | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
) -> list[str]:
    out = Path(out) if out is not None else Path("runs") / "tune" / suite.name
    entries = suite.methods
    if only:
        unknown = sorted(set(only) - {e.label for e in entries} - {e.method for e in entries})
        if unknown:
            raise ConfigError(f"--only {', '.join(unknown)}: not a method of tuning suite {suite.name!r}")
        entries = [e for e in entries if e.label in only or e.method in only]
    searches: dict[str, SearchResult] = {}
    for entry in entries:
        spec = search_spec(suite, entry, out, storage, data_root=data_root, cache_dir=cache_dir)
        log.info("searching %s (%d trials, cap %d epochs)", entry.label, suite.trials, suite.epochs)
        searches[entry.label] = run_search(spec, workers=workers)
    finals: dict[str, BenchResult] = {}
    if not no_final:
        for rule in suite.rules:
            chosen = [
                Chosen(e.label, e.method, chosen_hparams(e.fixed, searches[e.label].best[rule], suite.epochs, rule))
                for e in entries
                if rule in searches[e.label].best
            ]
            missing = [e.label for e in entries if rule not in searches[e.label].best]
            if missing:
                log.warning("%s: no complete trial under %s for %s; no final runs for them", suite.name, rule, missing)
            if not chosen:
                continue
            bench_suite = final_suite(
                suite.name,
                rule,
                chosen,
                dataset=suite.dataset,
                options=suite.options,
                ratios=suite.final_ratios,
                seeds=suite.final_seeds,
                threads=suite.threads,
                device=suite.device,
                dataset_dir=suite.dataset_dir,
                imports=suite.imports,
                description=f"configurations chosen by {rule} on validation ({budget_text(suite)})",
            )
            finals[rule] = train_chosen(
                bench_suite,
                out / f"final-{rule}",
                workers=workers,
                data_root=data_root,
                cache_dir=cache_dir,
                progress=progress,
            )
    text = suite_report(suite, out, searches, finals)
    atomic_write_text(out / "report.md", text)
    lines = []
    for rule, bench in finals.items():
        lines += [f"## tuned by {rule}", bench.tables.get("results", ""), ""]
    lines.append(f"report: {out / 'report.md'}")
    return lines


def budget_text(suite: TuneSuite) -> str:
    ratio = f" at ratio {suite.ratio}" if suite.ratio is not None else ""
    return (
        f"{suite.trials} trials per method on {suite.dataset}{ratio}, epoch cap {suite.epochs}, "
        f"{suite.sampler} sampler, {suite.pruner} pruner, objective {suite.objective}"
    )


def suite_report(suite: TuneSuite, out: Path, searches: dict[str, SearchResult], finals: dict[str, BenchResult]) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    lines = [f"# Tuning suite `{suite.name}`", ""]
    if suite.description:
        lines += [suite.description, ""]
    lines += [
        f"- budget (the same for every method): {budget_text(suite)}",
        "- every trial selects its epoch and is scored on validation only; no trial evaluates the test split",
        f"- rules, each choosing its own best trial from the same search: {', '.join(suite.rules)}",
        f"- final runs: ratios {', '.join(map(str, suite.final_ratios or ()))}, seeds "
        f"{', '.join(map(str, suite.final_seeds))}, the epoch cap as their epochs; only these runs see test",
        f"- suite: {suite.source}; report written {now}",
        "",
        "## Searches",
        "",
        "| method | trials done | complete | pruned | failed | trial time (s) | report |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, result in searches.items():
        c = result.counts
        time_s = sum(r["duration_s"] or 0.0 for r in result.trials)
        rel = os.path.relpath(Path(result.spec.out) / "search.md", out)
        counts = f"{c['done']} | {c['complete']} | {c['pruned']} | {c['failed']}"
        lines.append(f"| {label} | {counts} | {time_s:.0f} | [{rel}]({rel}) |")
    for rule in suite.rules:
        lines += ["", f"## Tuned by {rule}", "", "Chosen values (best complete trial under this rule):", ""]
        for label, result in searches.items():
            best = result.best.get(rule)
            if best is None:
                lines.append(f"- {label}: no complete trial")
                continue
            values = ", ".join(f"{k}={_short(v)}" for k, v in best["params"].items())
            lines.append(f"- {label}: trial {best['trial']}, val {best['score']:.4f}: {values}")
        bench = finals.get(rule)
        if bench is not None:
            rel = os.path.relpath(bench.out / "report.md", out)
            lines += ["", f"Test results of the chosen configurations ([full report]({rel})):", ""]
            lines.append(bench.tables.get("results", ""))
            for title, pivot in bench.tables.items():
                if title != "results":
                    lines += ["", f"### {title} by conflicting ratio", "", pivot]
    lines += ["", "## Search spaces", ""]
    for entry in suite.methods:
        if entry.label in searches:
            space = "; ".join(f"{k} {v}" for k, v in describe_space(entry.space).items())
            fixed = f" (fixed: {', '.join(f'{k}={v}' for k, v in entry.fixed.items())})" if entry.fixed else ""
            lines.append(f"- {entry.label}: {space}{fixed}")
    lines.append("")
    return "\n".join(lines)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
