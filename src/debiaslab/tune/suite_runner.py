"""Run a tuning suite: search every method with the suite's budget, then train each rule's chosen configurations
on the final ratios and seeds (one bench table per rule), and write ``report.md`` stating the budget, the rules
and the chosen values.

Layout under the output folder: ``search/<label>/`` (one search each: study.db, trials/, search.md, plot),
``final-<rule>/`` (bench runs and report of the configurations that rule chose), ``report.md``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from debiaslab.bench.aggregate import RunRecord, find_runs, per_rule, summarise
from debiaslab.bench.runner import BenchResult
from debiaslab.errors import ConfigError
from debiaslab.tune.final import Chosen, TuneLines, chosen_hparams, final_suite, train_chosen, unfinished
from debiaslab.tune.search import SearchResult, run_search
from debiaslab.tune.space import describe_space
from debiaslab.tune.study import SearchSpec
from debiaslab.tune.suite import TuneSuite
from debiaslab.tune.values import short_value
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
        groups=entry.groups,
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
) -> TuneLines:
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
        for rule, chosen in plan_finals(suite, entries, searches).items():
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
    lines = TuneLines()
    lines.failed = sum(unfinished(bench) for bench in finals.values())
    for rule in suite.rules if finals else ():
        tables = rule_tables(out, rule, [e.label for e in suite.methods])
        if tables:
            lines += [f"## tuned by {rule}", tables["results"], ""]
    if lines.failed:
        lines.append(f"{lines.failed} final run(s) did not finish; see the final-<rule>/report.md files")
    lines.append(f"report: {out / 'report.md'}")
    return lines


def rule_order(suite: TuneSuite) -> list[str]:
    """The suite's rules, the objective first: the rule that drove the search deploys a shared final run."""
    return sorted(suite.rules, key=lambda r: r != suite.objective)


def plan_finals(suite: TuneSuite, entries: Sequence[Any], searches: dict[str, SearchResult]) -> dict[str, list[Chosen]]:
    """``{rule: [Chosen]}``: the final runs each rule trains. When a later rule chose the same trial as an earlier
    one and the method's training never reads the rule (``Method.trains_without_rule``), that configuration is
    trained once: the earlier rule deploys it and the later one is one of its ``report_rules``, which gives what a
    run trained for the later rule would (same seed, same training; only the kept epoch differs)."""
    from debiaslab.methods.registry import get_method

    plan: dict[str, list[Chosen]] = {rule: [] for rule in rule_order(suite)}
    for e in entries:
        shared: dict[int, Chosen] = {}  # trial number -> the run that deploys it
        for rule in plan:
            best = searches[e.label].best.get(rule)
            if best is None:
                log.warning("%s: no complete trial under %s for %s; no final runs for it", suite.name, rule, e.label)
                continue
            hparams = chosen_hparams(e.fixed, best, suite.epochs, rule)
            first = shared.get(best["trial"])
            if first is not None and get_method(e.method)(dataset=suite.dataset, **hparams).trains_without_rule:
                first.hparams["report_rules"] = [*first.hparams.get("report_rules", []), rule]
                deployed = first.hparams["selection"]
                log.info("%s: %s chose the same trial as %s; one set of runs reports both", e.label, rule, deployed)
                continue
            chosen = Chosen(e.label, e.method, hparams, e.groups)
            shared.setdefault(best["trial"], chosen)
            plan[rule].append(chosen)
    return {rule: chosen for rule, chosen in plan.items() if chosen}


def rule_records(out: Path, rule: str) -> list[RunRecord]:
    """The final runs of the configurations ``rule`` chose: those deploying it (``final-<rule>/``) and, reading
    their ``selections``, the runs of another rule that report it (the same trial chosen by both)."""
    records = []
    for folder in sorted(out.glob("final-*")):
        for record in per_rule(find_runs([folder])):
            own = folder.name == f"final-{rule}" and record.deployed
            reported = not record.deployed and rule in (record.hparams.get("report_rules") or [])
            if record.selection == rule and (own or reported):
                label = record.path.relative_to(folder).parts[1]  # <dataset dir>/<label>/[r<ratio>/]seed<k>
                records.append(dataclasses.replace(record, deployed=True, label=label))
    return records


def rule_tables(out: Path, rule: str, labels: Sequence[str]) -> dict[str, str]:
    """``{"results": table, "<dataset>: test <metric>": pivot, ...}`` of ``rule``'s final runs ({} when none)."""
    from debiaslab.bench.report import ratio_pivots
    from debiaslab.bench.results import order_rows, results_markdown

    records = rule_records(out, rule)
    if not records:
        return {}
    rows = order_rows(summarise(records, rules=False), labels)
    return {"results": results_markdown(rows, compare_paper=False), **ratio_pivots(rows, compare_paper=False)}


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
            values = ", ".join(f"{k}={short_value(v)}" for k, v in best["params"].items())
            lines.append(f"- {label}: trial {best['trial']}, val {best['score']:.4f}: {values}")
        tables = rule_tables(out, rule, list(searches))
        if tables:
            bench = finals.get(rule)
            link = f" ([runs]({os.path.relpath(bench.out / 'report.md', out)}))" if bench is not None else ""
            lines += ["", f"Test results of the chosen configurations{link}:", "", tables.pop("results")]
            for title, pivot in tables.items():
                lines += ["", f"### {title} by conflicting ratio", "", pivot]
    lines += ["", "## Search spaces", ""]
    for entry in suite.methods:
        if entry.label in searches:
            space = "; ".join(f"{k} {v}" for k, v in describe_space(entry.space).items())
            fixed = f" (fixed: {', '.join(f'{k}={v}' for k, v in entry.fixed.items())})" if entry.fixed else ""
            lines.append(f"- {entry.label}: {space}{fixed}")
    lines.append("")
    return "\n".join(lines)
