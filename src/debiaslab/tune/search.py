"""Run a search: Optuna's ``study.optimize`` in one or several worker processes sharing the study's storage,
then each rule's best trial, ``best.json``, the report and the search-history plot.

The budget is counted in finished trials (complete, pruned, or failed by an error of their own such as a
non-finite loss); a trial whose process was killed does not count, and a resumed search runs the trials left.
Each worker process runs in a pool of its own and ends with this process: when one dies (killed, out of
memory), its trial is marked failed at once (user attribute ``killed``; it does not count, so another trial
takes its place), a fresh worker starts while the budget has trials left, and the other workers go on.
Every trial records the validation score of every applicable rule (user attribute ``scores``), so each rule
picks its own best among the same complete trials (DomainBed style); only the first ``trials`` finished trials
are considered, whatever extra trials parallel workers started.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import multiprocessing
import os
import shutil
import socket
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from debiaslab.errors import ConfigError, DebiasLabError
from debiaslab.evaluation.selection import check_rule_applicable, get_rule
from debiaslab.methods.registry import get_method
from debiaslab.run.train import RunConfig
from debiaslab.tune.presence import search_presence
from debiaslab.tune.space import as_hparams, suggest
from debiaslab.tune.storage import GRACE_S, open_storage
from debiaslab.tune.study import SearchResult, SearchSpec, check_search_dir, open_study
from debiaslab.tune.trial import PruningHook, search_bundle, train_trial, trial_dir
from debiaslab.utils.io import atomic_write_json, pid_alive, remove_stale_temp_files
from debiaslab.utils.lifetime import die_with_parent

log = logging.getLogger(__name__)

BEST = "best.json"


def run_search(spec: SearchSpec, *, workers: int = 1, heartbeat_s: int | None = 30) -> SearchResult:
    """Check the search, run the trials the budget has left (``workers`` processes), summarise it."""
    if workers < 1:
        raise ConfigError(f"--workers {workers} must be >= 1")
    check_inputs(spec)
    check_search_dir(spec)
    remove_stale_temp_files(spec.out)
    with contextlib.ExitStack() as stack:
        study = open_study(spec, heartbeat_s=heartbeat_s)
        killed: list[int] = []
        if spec.storage is None:  # the local study file: a search of this machine is the only possible writer
            stack.enter_context(search_presence(spec.out, lambda: killed.extend(fail_dead_trials(spec, every=True))))
        killed += fail_dead_trials(spec)  # an earlier search of this machine was killed while they ran
        if killed:
            log.warning("%s: trial(s) %s were running when their search was killed; marked failed", spec.name, killed)
        return _search(spec, study, workers, heartbeat_s)


def _search(spec: SearchSpec, study: Any, workers: int, heartbeat_s: int | None) -> SearchResult:
    left = spec.trials - len(counted_trials(study))
    started = time.perf_counter()
    if left > 0:
        log.info("%s: %d of %d trials to run with %d worker(s)", spec.name, left, spec.trials, workers)
        if workers == 1:
            optimize(spec, 0, heartbeat_s)
        else:
            run_workers(spec, workers, heartbeat_s)
    result = summarise(spec, open_study(spec, heartbeat_s=None))
    if result.counts["done"] < spec.trials:
        log.warning(
            "%s: %d of %d trials done, %d still marked running (a killed worker's trial is failed %d s after its "
            "last heartbeat); run the same command again to finish the budget",
            spec.name,
            result.counts["done"],
            spec.trials,
            result.counts["running"],
            GRACE_S,
        )
    if result.tie_note():
        log.warning("%s: %s", spec.name, result.tie_note())
    result.wall_s = time.perf_counter() - started if left > 0 else None
    trial_time = sum(r["duration_s"] or 0.0 for r in result.trials)
    atomic_write_json(
        Path(spec.out) / BEST,
        {
            "budget": spec.budget(),
            "rule": spec.rule,
            "counts": result.counts,
            "trial_time_s": round(trial_time, 1),
            "best": result.best,
        },
    )
    from debiaslab.tune.report import write_search_report

    write_search_report(result)
    return result


def run_workers(spec: SearchSpec, workers: int, heartbeat_s: int | None) -> None:
    """Run :func:`optimize` in ``workers`` spawned processes, each in a one-process pool of its own, so that one
    dying breaks only its own pool: its trial is then marked failed and, while the budget has trials left, a
    fresh worker takes its place (at most ``spec.trials`` replacements, so a search whose every trial kills its
    process still ends). Every worker ends with this process."""
    context = multiprocessing.get_context("spawn")
    running: dict[Future[None], tuple[ProcessPoolExecutor, int]] = {}

    def start(slot: int) -> None:
        pool = ProcessPoolExecutor(
            max_workers=1, mp_context=context, initializer=die_with_parent, initargs=(os.getpid(),)
        )
        running[pool.submit(optimize, spec, slot, heartbeat_s, True)] = (pool, slot)

    for slot in range(workers):
        start(slot)
    deaths = 0
    try:
        while running:
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in done:
                pool, slot = running.pop(future)
                pool.shutdown(wait=True)
                try:
                    future.result()
                except BrokenProcessPool:
                    deaths += 1
                    killed = fail_dead_trials(spec)
                    study = open_study(spec, heartbeat_s=None)
                    in_flight = sum(not _died_here(t) for t in running_trials(study))
                    left = spec.trials - len(counted_trials(study)) - in_flight
                    again = left > 0 and deaths <= spec.trials
                    log.warning(
                        "%s: worker %d died (killed or out of memory); trial(s) %s marked failed%s",
                        spec.name,
                        slot,
                        killed or "none",
                        "; a new worker takes its place" if again else "",
                    )
                    if again:
                        start(slot)
    finally:
        for pool, _ in running.values():
            pool.shutdown(wait=True, cancel_futures=True)


def fail_dead_trials(spec: SearchSpec, *, every: bool = False) -> list[int]:
    """Mark failed the running trials whose worker was a process of this machine that no longer exists (``every``:
    all running trials, for a search that knows it is the only one of its study) (user attribute ``killed``; they
    do not count against the budget) and remove their checkpoints; returns their numbers."""
    from optuna.trial import TrialState

    storage = open_storage(spec.storage, spec.out, heartbeat_s=None)
    study_id = storage.get_study_id_from_name(spec.name)
    failed = []
    for t in storage.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
        if not (every or _died_here(t)):
            continue
        worker = t.user_attrs.get("worker", "not yet named")
        with contextlib.suppress(Exception):  # another process failed it first (its heartbeat, a worker)
            storage.set_trial_user_attr(t._trial_id, "killed", f"its worker ({worker}) died")
            storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL)
            failed.append(t.number)
            shutil.rmtree(trial_dir(spec.out, t.number) / "checkpoints", ignore_errors=True)
    return failed


def check_inputs(spec: SearchSpec) -> None:
    """Fail before any trial: unknown method or hyperparameters, a dataset that cannot be built or has no
    validation split of its own, a rule needing labels validation lacks, a space naming unknown fields."""
    method_cls = get_method(spec.method)
    names = set(method_cls.Hparams.__dataclass_fields__)
    unknown = sorted(set(spec.space) - names)
    if unknown:
        raise ConfigError(f"method {spec.method!r} has no hyperparameter {unknown[0]!r} (in its search space)")
    method_cls(dataset=spec.dataset, **spec.fixed, epochs=spec.epochs, selection=spec.rule)
    bundle = search_bundle(_run_config(spec, {}, Path(spec.out) / "trials" / "check"))
    check_rule_applicable(get_rule(spec.rule), bundle.val.has_attrs)


def _run_config(spec: SearchSpec, hparams: dict[str, Any], out: Path) -> RunConfig:
    groups, recipe = None, None
    if spec.groups:
        groups = str(groups_path(spec))
        recipe = {"inferrer": spec.groups["inferrer"], "hparams": dict(spec.groups.get("hparams") or {})}
    return RunConfig(
        method=spec.method,
        dataset=spec.dataset,
        dataset_options=dict(spec.dataset_options),
        hparams={**spec.fixed, **hparams, "epochs": spec.epochs, "selection": spec.rule},
        seed=spec.seed,
        device=spec.device,
        precision=spec.precision,
        out=str(out),
        data_root=spec.data_root,
        cache_dir=spec.cache_dir,
        overwrite=True,
        progress=False,
        num_threads=spec.threads,
        groups=groups,
        groups_recipe=recipe,
    )


def groups_path(spec: SearchSpec) -> Path:
    """The groups file every trial of ``spec`` trains on (inferred by the first trial that needs it)."""
    assert spec.groups is not None
    return Path(spec.out) / "groups" / spec.groups["label"] / f"seed{spec.seed}.npz"


def counted_trials(study: Any) -> list[Any]:
    """Finished trials that count against the budget, by number: complete, pruned, and failed by an error of
    their own (``error`` user attribute); not trials whose process died (their heartbeat stopped)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
    return sorted((t for t in trials if t.state != TrialState.FAIL or "error" in t.user_attrs), key=lambda t: t.number)


def optimize(spec: SearchSpec, worker: int, heartbeat_s: int | None = 30, own_logging: bool = False) -> None:
    """One worker: run trials of the study until the budget is spent (all workers share the count)."""
    if own_logging:  # a spawned process: progress lines to stderr
        logging.basicConfig(level=logging.INFO, format="%(message)s")
        logging.getLogger("optuna").setLevel(logging.WARNING)
    import optuna

    from debiaslab.bench.suite import import_plugins

    import_plugins(spec.imports)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    probe = open_study(spec, heartbeat_s=heartbeat_s)
    seed = spec.seed * 1000 + worker * 100003 + len(probe.trials)  # a resumed search draws new configurations
    study = open_study(spec, sampler_seed=seed, heartbeat_s=heartbeat_s)
    in_flight = [t for t in running_trials(study) if not _died_here(t)]  # other workers' trials fill the budget too
    left = spec.trials - len(counted_trials(study)) - len(in_flight)
    if left <= 0:
        return
    study.optimize(
        lambda trial: objective(spec, trial),
        n_trials=left,
        callbacks=[_stop_at_budget(spec), _progress(spec, worker)],
        catch=(DebiasLabError,),
        gc_after_trial=False,
    )


def objective(spec: SearchSpec, trial: Any) -> float:
    """Train one configuration; the value is the objective rule's validation score of its selected epoch."""
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")  # first: a killed worker's trial is known
    method_cls = get_method(spec.method)
    params = {name: suggest(trial, name, dist) for name, dist in spec.space.items()}
    run_dir = trial_dir(spec.out, trial.number)
    trial.set_user_attr("run_dir", str(run_dir))
    cfg = _run_config(spec, as_hparams(method_cls, params), run_dir)
    try:
        final = train_trial(cfg, PruningHook(trial, spec.rule), {"study": spec.name, "number": trial.number})
    except DebiasLabError as exc:  # a configuration that cannot train (e.g. a non-finite loss): failed, counted
        trial.set_user_attr("error", str(exc))
        raise
    scores = final["scores"]
    trial.set_user_attr("scores", scores)
    trial.set_user_attr("train_time_s", final["train_time_s"])
    value = scores.get(spec.rule)
    if value is None or not math.isfinite(value):
        trial.set_user_attr("error", f"no finite validation score under {spec.rule}")
        raise ConfigError(f"trial {trial.number}: no finite validation score under {spec.rule}")
    return float(value)


def _stop_at_budget(spec: SearchSpec) -> Any:
    """Stop this worker once the finished trials and those other workers are still running fill the budget, so a
    second worker does not start a trial past it. A killed worker's trial on this machine is not counted as
    running; one on another machine is until its heartbeat's grace period ends (the search may then stop short
    and says so; running it again finishes the budget)."""

    def callback(study: Any, trial: Any) -> None:
        in_flight = [t for t in running_trials(study) if not _died_here(t)]
        if len(counted_trials(study)) + len(in_flight) >= spec.trials:
            study.stop()

    return callback


#: a worker names itself on its trial first thing; a running trial still unnamed after this long lost its worker
#: between the trial's creation and that write (a search killed at that moment)
UNNAMED_GRACE_S = 30.0


def _died_here(trial: Any) -> bool:
    """Whether a running trial's worker was a process on this machine that no longer exists (a killed search
    being resumed), or never named itself: such a trial will not finish, though its heartbeat has not run out."""
    if "worker" not in trial.user_attrs:
        started = trial.datetime_start
        return started is not None and (datetime.datetime.now() - started).total_seconds() > UNNAMED_GRACE_S
    host, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
    if os.name != "posix" or host != socket.gethostname() or not pid.isdigit():
        return False
    return not pid_alive(int(pid))


def running_trials(study: Any) -> list[Any]:
    from optuna.trial import TrialState

    return study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))


def _progress(spec: SearchSpec, worker: int) -> Any:
    def callback(study: Any, trial: Any) -> None:
        counts = trial_counts(study)
        state = trial.state.name.lower()
        what = f"{spec.rule} {trial.value:.4f}" if trial.value is not None else state
        if state == "pruned":
            what = f"pruned at step {trial.last_step}"
        elif state == "fail":
            what = f"failed: {trial.user_attrs.get('error', 'see the log')}"
        best = best_trials(spec, study).get(spec.rule)
        best_text = f"best {best['score']:.4f} (trial {best['trial']})" if best else "no complete trial yet"
        log.info(
            "%s trial %d %s | %d/%d done, %d pruned, %d failed | %s",
            spec.name,
            trial.number,
            what,
            counts["done"],
            spec.trials,
            counts["pruned"],
            counts["failed"],
            best_text,
        )

    return callback


def trial_counts(study: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    counted = counted_trials(study)
    killed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return {
        "done": len(counted),
        "complete": sum(t.state == TrialState.COMPLETE for t in counted),
        "pruned": sum(t.state == TrialState.PRUNED for t in counted),
        "failed": sum(t.state == TrialState.FAIL for t in counted),
        "running": len(running_trials(study)),
        "killed": sum("error" not in t.user_attrs for t in killed),  # not counted: other trials took their place
    }


def best_trials(spec: SearchSpec, study: Any) -> dict[str, dict[str, Any]]:
    """``{rule: {trial, score, params, hparams, run_dir}}`` (``run_dir`` relative to the search directory, which
    may be another machine's): for each rule recorded on the trials, its best complete trial
    among the first ``spec.trials`` counted ones (ties: the earlier trial)."""
    from optuna.trial import TrialState

    method_cls = get_method(spec.method)
    complete = [t for t in counted_trials(study)[: spec.trials] if t.state == TrialState.COMPLETE]
    best: dict[str, dict[str, Any]] = {}
    for t in complete:
        for name, score in (t.user_attrs.get("scores") or {}).items():
            rule = get_rule(name)
            if score is None or not math.isfinite(score):
                continue
            if name not in best or rule.is_better(score, best[name]["score"]):
                best[name] = {
                    "trial": t.number,
                    "score": score,
                    "params": dict(t.params),
                    "hparams": as_hparams(method_cls, dict(t.params)),
                    "run_dir": str(trial_dir(Path(), t.number)),  # relative to the search directory
                }
    return best


def summarise(spec: SearchSpec, study: Any) -> SearchResult:
    """Counts, each rule's best trial, and one row per trial (number, state, value, last step, params, scores)."""
    rows = []
    for t in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        rows.append(
            {
                "number": t.number,
                "state": t.state.name.lower(),
                "value": t.value,
                "last_step": t.last_step,
                "last_value": t.intermediate_values.get(t.last_step) if t.last_step is not None else None,
                "params": dict(t.params),
                "scores": t.user_attrs.get("scores") or {},
                "error": t.user_attrs.get("error") or t.user_attrs.get("killed"),
                "duration_s": t.duration.total_seconds() if t.duration is not None else None,
            }
        )
    return SearchResult(spec, trial_counts(study), best_trials(spec, study), rows)
