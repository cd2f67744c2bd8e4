"""Run a suite: decide what is done, train the rest through an existing executor, then aggregate and report.

Executors (:mod:`debiaslab.bench.executors`): ``concurrent.futures.ProcessPoolExecutor`` (spawn; one fresh process
per run) by default, Ray, or Slurm through submitit. Each run is isolated: an exception, a non-finite loss or a
crash of its worker process marks that run failed (``<run_dir>/error.txt``) and the others go on. A run whose
directory holds a finished result for the same run identity is skipped; one whose ``config.yaml`` describes
another run is reported as a mismatch and left alone; an interrupted or failed run resumes from its checkpoints.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from debiaslab.bench.executors import (
    EXECUTORS,
    SlurmOptions,
    check_ray,
    check_submitit,
    run_with_processes,
    run_with_ray,
    run_with_slurm,
)
from debiaslab.bench.states import STATUSES, BenchResult, RunState
from debiaslab.bench.suite import PlannedRun, Suite
from debiaslab.bench.worker import ERROR, RUNNING, RunTask, write_error
from debiaslab.errors import ConfigError
from debiaslab.methods.registry import get_method
from debiaslab.run.train import CONFIG, FINAL, comparable_identity, is_finished
from debiaslab.utils.io import atomic_write_json, remove_stale_temp_files, yaml_problem

log = logging.getLogger(__name__)

SUMMARY = "summary.json"
TO_RUN = ("todo", "resume", "failed")


def default_workers() -> int:
    """``min(2, cpu count)``: every run uses ``threads`` torch threads (default 1)."""
    return max(1, min(2, os.cpu_count() or 1))


def inspect_run(run: PlannedRun) -> tuple[str, str]:
    """``(status, detail)`` of a planned run from what its directory holds."""
    d = run.run_dir
    if d.exists() and not d.is_dir():
        return "mismatch", f"{d} exists and is not a directory"
    config, final = d / CONFIG, d / FINAL
    if not config.is_file():
        if final.is_file():
            return "mismatch", f"{final} exists without {CONFIG}; cannot tell which run it is"
        return "todo", ""
    try:
        document = yaml.safe_load(config.read_text()) or {}
    except yaml.YAMLError as exc:
        return "mismatch", f"{config} is not valid YAML ({yaml_problem(exc)})"
    previous = comparable_identity(document.get("run"))
    expected = run.config.comparable_identity()
    if previous != expected:
        return "mismatch", f"{config} describes another run: " + identity_diff(previous, expected)
    if final.is_file():
        stale = stale_defaults(document, run)
        if stale:
            return (
                "mismatch",
                f"{config} was trained with other default hyperparameters ({stale}); move it away to retrain",
            )
        return "finished", ""
    error = d / ERROR
    if error.is_file():
        return "failed", error.read_text().split("\n", 1)[0]
    return "resume", ""


def stale_defaults(document: dict[str, Any], run: PlannedRun) -> str:
    """The resolved hyperparameters a finished run was trained with that today's defaults no longer give (a
    method's table changed since), as ``name: then X, now Y``; empty when none differ. Fields the run's config
    does not record (added since), a model chosen from the dataset's default, hyperparameters the suite sets
    (part of the identity) and the method's ``execution_hparams`` are not compared."""
    recorded = document.get("resolved_hparams")
    if not isinstance(recorded, dict):
        return ""
    method = get_method(run.config.method)(dataset=run.config.dataset, **run.config.hparams)
    now = json.loads(json.dumps(dataclasses.asdict(method.hparams), default=list))
    sources = document.get("hparam_sources") or {}
    asked = set(run.config.hparams) | method.execution_hparams  # compared with the identity / speed only
    changed = [
        f"{name}: then {recorded[name]!r}, now {value!r}"
        for name, value in now.items()
        if name in recorded
        and name not in asked
        and recorded[name] != value
        and not str(sources.get(name, "")).startswith("dataset ")
    ]
    return "; ".join(changed)


def identity_diff(found: Any, expected: dict[str, Any]) -> str:
    """``hparams: found {...}, expected {...}`` for each differing identity field."""
    if not isinstance(found, dict):
        return f"found {found!r}, expected {expected!r}"
    parts = [
        f"{k}: found {found.get(k)!r}, expected {expected.get(k)!r}"
        for k in sorted(set(found) | set(expected))
        if found.get(k) != expected.get(k)
    ]
    return "; ".join(parts)


def run_suite(
    suite: Suite,
    out: str | Path | None = None,
    *,
    workers: int | None = None,
    executor: str = "process",
    only: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
    dry_run: bool = False,
    report_only: bool = False,
    data_root: str | None = None,
    cache_dir: str | None = None,
    progress: bool = True,
    slurm: SlurmOptions | None = None,
    gpus_per_run: float = 0,
) -> BenchResult:
    """Plan, run (unless ``dry_run`` / ``report_only``), aggregate and report ``suite`` under ``out``.

    ``executor``: ``process`` (``workers`` runs at a time), ``ray`` (``gpus_per_run`` GPUs per Ray task) or
    ``slurm`` (one submitit job per run, as ``slurm`` says)."""
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r} unknown; expected one of {', '.join(EXECUTORS)}")
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be >= 1")
    out = Path(out) if out is not None else suite.default_out()
    runs = suite.plan(out, only=only, data_root=data_root, cache_dir=cache_dir, seeds=seeds)
    states = [RunState(run, *inspect_run(run)) for run in runs]
    _check_dependencies(states)
    result = BenchResult(suite, out, states)
    for s in states:
        if s.status in ("mismatch", "blocked"):
            log.warning("%s: not run, not reported: %s", s.run.describe(), s.detail)
    if dry_run:
        return result
    for s in states:
        if s.status == "finished":
            s.status = "skipped"
    todo = [s for s in states if s.status in TO_RUN]
    remove_stale_temp_files(out)  # a killed bench's half-written summary or report
    if todo and not report_only:
        if executor == "ray":
            check_ray()
        if executor == "slurm":
            check_submitit()
        log.info(
            "%s: %d runs to train (%d finished before, %d mismatched) with %d %s worker(s), %d thread(s) each",
            suite.name,
            len(todo),
            result.count("skipped"),
            result.count("mismatch"),
            workers,
            executor,
            suite.threads,
        )
        started = time.perf_counter()
        _execute(
            result,
            todo,
            executor=executor,
            workers=workers,
            progress=progress,
            slurm=slurm or SlurmOptions(gpus_per_job=int(gpus_per_run)),
            gpus_per_run=gpus_per_run,
        )
        result.wall_s = time.perf_counter() - started
    from debiaslab.bench.report import write_report

    write_summary(result, executor, workers)
    result.files, result.tables = write_report(result)
    return result


def write_summary(result: BenchResult, executor: str, workers: int) -> Path:
    """``<out>/summary.json``: every planned run with its status (rewritten after each finished run)."""
    doc = {
        "suite": result.suite.name,
        "source": result.suite.source,
        "executor": executor,
        "workers": workers,
        "updated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "counts": {k: result.count(k) for k in STATUSES},
        "runs": [s.to_dict() for s in result.states],
    }
    return atomic_write_json(result.out / SUMMARY, doc)


def _check_dependencies(states: list[RunState]) -> None:
    """A run to train whose ``{run:LABEL}`` dependency can never be there fails now, saying which and why: the
    dependency holds another run, or it is neither finished nor part of this invocation (``--only``)."""
    planned = {str(s.run.run_dir): s for s in states}
    for s in states:
        if s.status not in TO_RUN:
            continue
        for dep in s.run.depends_on:
            other = planned.get(dep)
            if other is not None and other.status == "mismatch":
                s.status, s.detail = "blocked", f"needs {dep}, which holds another run ({other.detail})"
            elif other is None and not is_finished(dep):
                s.status = "blocked"
                s.detail = f"needs the finished run {dep}, which this invocation does not train (drop --only)"


def dependency_waves(states: list[RunState]) -> list[list[RunState]]:
    """``states`` in the order they can train: wave k holds the runs whose dependencies among ``states`` all
    lie in earlier waves (wave 0: no such dependency)."""
    by_dir = {str(s.run.run_dir): s for s in states}
    depth: dict[str, int] = {}

    def level(s: RunState) -> int:
        key = str(s.run.run_dir)
        if key not in depth:
            depth[key] = 0  # suites reject cycles; this only guards the recursion
            depth[key] = max((level(by_dir[d]) + 1 for d in s.run.depends_on if d in by_dir), default=0)
        return depth[key]

    waves: list[list[RunState]] = []
    for s in states:
        k = level(s)
        waves.extend([] for _ in range(k + 1 - len(waves)))
        waves[k].append(s)
    return waves


# ---------------------------------------------------------------------------------------------- execution
def _execute(
    result: BenchResult,
    todo: list[RunState],
    *,
    executor: str,
    workers: int,
    progress: bool,
    slurm: SlurmOptions,
    gpus_per_run: float,
) -> None:
    suite = result.suite
    for s in todo:  # a marker left by a killed earlier attempt means nothing now
        (s.run.run_dir / RUNNING).unlink(missing_ok=True)
    todo = _prepare_datasets(todo)
    by_dir = {str(s.run.run_dir): s for s in todo}
    bar = _Progress(sum(s.status in TO_RUN for s in todo), enabled=progress)

    def on_result(task: RunTask, outcome: dict[str, Any]) -> None:
        state = by_dir[str(task.run_dir)]
        state.status = outcome["status"]
        state.detail = outcome.get("error", "")
        state.time_s = outcome.get("time_s")
        state.log = outcome.get("log")
        if state.status == "finished":
            test = outcome.get("test") or {}
            shown = ", ".join(f"{k} {100 * v:.1f}" for k, v in test.items() if isinstance(v, int | float))
            log.info("finished %s in %.0f s (test %%: %s)", state.run.describe(), state.time_s or 0, shown)
        else:
            log.error("FAILED %s: %s (log: %s)", state.run.describe(), state.detail, state.log or task.run_dir / ERROR)
        bar.advance(state.run.describe())
        write_summary(result, executor, workers)

    with bar:
        for wave in dependency_waves([s for s in todo if s.status in TO_RUN]):
            for s in wave:
                failed = [d for d in s.run.depends_on if d in by_dir and by_dir[d].status in ("failed", "blocked")]
                if failed:
                    s.status, s.detail = "blocked", f"not trained: the run it needs did not finish ({failed[0]})"
                    log.error("FAILED %s: %s", s.run.describe(), s.detail)
                    bar.advance(s.run.describe())
            tasks = [RunTask(s.run.config, suite.imports) for s in wave if s.status in TO_RUN]
            if not tasks:
                continue
            if executor == "ray":
                run_with_ray(tasks, workers, suite.threads, on_result, gpus=gpus_per_run)
            elif executor == "slurm":
                run_with_slurm(tasks, suite.threads, on_result, slurm, result.out, suite.name)
            else:
                run_with_processes(tasks, workers, on_result)


def _prepare_datasets(todo: list[RunState]) -> list[RunState]:
    """Build (and cache) each dataset once here, so that workers only load it; a dataset that cannot be built
    fails its runs with that error instead of failing in every worker."""
    from debiaslab.data.registry import build_dataset

    seen: dict[str, str | None] = {}
    for s in todo:
        cfg = s.run.config
        key = json.dumps([cfg.dataset, cfg.dataset_options, cfg.data_root, cfg.cache_dir], sort_keys=True)
        if key not in seen:
            try:
                log.info("preparing dataset %s %s", cfg.dataset, cfg.dataset_options)
                build_dataset(cfg.dataset, cfg.data_root, cfg.cache_dir, **cfg.dataset_options)
                seen[key] = None
            except Exception as exc:
                seen[key] = f"{type(exc).__name__}: {exc}"
        if seen[key] is not None:
            s.status, s.detail = "failed", f"dataset could not be built: {seen[key]}"
            s.run.run_dir.mkdir(parents=True, exist_ok=True)
            write_error(s.run.run_dir, s.detail, "(raised while the runner prepared the dataset)\n")
            log.error("FAILED %s: %s", s.run.describe(), s.detail)
    return todo


class _Progress:
    """A rich bar over the runs (stderr, only on a terminal)."""

    def __init__(self, total: int, enabled: bool) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal and total > 0
        self.total = total
        self._progress: Any = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                TextColumn("[bold]bench[/] {task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.console,
            )
            self._progress.start()
            self._task = self._progress.add_task("runs", total=self.total)
        return self

    def advance(self, description: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, description=f"last: {description}")

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
