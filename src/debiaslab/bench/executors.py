"""Where a suite's runs train: a local process pool (default), Ray, or Slurm through submitit.

Each executor takes a list of :class:`~debiaslab.bench.worker.RunTask` (runs whose dependencies are done) and
calls ``on_result(task, outcome)`` once per task with the outcome dict of
:func:`~debiaslab.bench.worker.execute_run` (``status``, ``error``, ``time_s``, ``log``). A run whose worker dies
(killed, out of memory, a Slurm job cancelled or past its time) is a failed outcome naming the log to read, never
an exception: the other runs go on, and running the suite again retrains only the runs without a result.
"""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from debiaslab.bench.worker import ERROR, LOG, RUNNING, RunTask, execute_run, write_error
from debiaslab.errors import ConfigError
from debiaslab.utils.lifetime import die_with_parent

log = logging.getLogger(__name__)

EXECUTORS = ("process", "ray", "slurm")
CRASHED = (
    "the worker process died without a Python exception (killed, out of memory, or a crash in native code); "
    "the run was retried alone and died again"
)


Callback = Callable[[RunTask, dict[str, Any]], None]


def run_with_processes(tasks: list[RunTask], workers: int, on_result: Callback) -> None:
    """Run ``tasks`` on a spawn-context ``ProcessPoolExecutor``, one fresh process per run; the workers end with
    this process (:func:`~debiaslab.utils.lifetime.die_with_parent`).

    A worker that dies breaks the whole pool; the runs that were in flight (their ``.bench-running`` marker is
    left behind) are then retried one at a time in a pool of their own, so only the run that dies again is
    recorded as crashed, and the runs not yet started go on in a new pool.
    """
    pending, suspects = list(tasks), []
    while pending or suspects:
        for task in suspects:
            for left in _pool_round([task], 1, on_result):
                (left.run_dir / RUNNING).unlink(missing_ok=True)
                write_error(left.run_dir, f"WorkerCrashed: {CRASHED}", "(no Python traceback: the process died)\n")
                outcome = {"status": "failed", "error": f"worker process crashed: {CRASHED}"}
                on_result(left, {**outcome, "log": str(left.run_dir / LOG)})
        suspects = []
        if not pending:
            break
        left = _pool_round(pending, workers, on_result)
        started = [t for t in left if (t.run_dir / RUNNING).exists()]
        suspects = started or left  # nothing started yet: isolate all, so the loop always progresses
        pending = [t for t in left if not any(t is s for s in suspects)]
        if left:
            log.warning(
                "a worker process died; retrying %s alone, then %d more run(s) in a new pool",
                ", ".join(str(t.run_dir) for t in suspects),
                len(pending),
            )


def _pool_round(tasks: list[RunTask], workers: int, on_result: Callback) -> list[RunTask]:
    """Run ``tasks`` in one pool; returns the tasks a broken pool left without a result."""
    context = multiprocessing.get_context("spawn")
    # one process per run: isolated state and a true per-run peak memory. (With max_tasks_per_child=1 no idle
    # token is ever released, so the 3.11 replacement-deadlock of gh-115634, which needs > 1, cannot occur.)
    extra = {"max_tasks_per_child": 1} if sys.version_info >= (3, 11) else {}
    left: list[RunTask] = []
    pool = ProcessPoolExecutor(
        max_workers=min(workers, len(tasks)),
        mp_context=context,
        initializer=die_with_parent,  # a killed bench leaves no worker behind
        initargs=(os.getpid(),),
        **extra,
    )
    try:
        futures: dict[Future[dict[str, Any]], RunTask] = {pool.submit(execute_run, t): t for t in tasks}
        for future in as_completed(futures):
            task = futures[future]
            try:
                outcome = future.result()
            except BrokenProcessPool:
                left.append(task)
                continue
            except Exception as exc:  # e.g. the task could not be sent to the worker
                write_error(task.run_dir, f"{type(exc).__name__}: {exc}", "(raised by the executor)\n")
                outcome = {
                    "status": "failed",
                    "error": f"{type(exc).__name__}: {exc}",
                    "log": str(task.run_dir / ERROR),
                }
            on_result(task, outcome)
    except KeyboardInterrupt:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return left


def check_ray() -> None:
    """A clear error before anything starts when ``--executor ray`` is asked for without Ray installed."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            "--executor ray needs the `ray` package, which is not installed; "
            "install it (pip install 'ray[default]') or use --executor process"
        )


def run_with_ray(tasks: list[RunTask], workers: int, threads: int, on_result: Callback, gpus: float = 0) -> None:
    """Run ``tasks`` as Ray tasks (``num_cpus=threads`` and ``num_gpus=gpus`` each, no retries, a fresh worker
    per run).

    Connects to the cluster in ``$RAY_ADDRESS`` when set (or one Ray was already initialised with), else starts a
    local Ray with ``workers x threads`` CPUs. A crashed Ray worker fails only its own task.
    """
    check_ray()
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)
        else:
            ray.init(num_cpus=workers * threads, include_dashboard=False, log_to_driver=False)
    # max_calls=1: a fresh worker process per run (isolated state, memory given back); set here, not in .options()
    remote = ray.remote(num_cpus=threads, num_gpus=gpus, max_retries=0, max_calls=1)(execute_run)
    refs = {remote.remote(task): task for task in tasks}
    while refs:
        done, _ = ray.wait(list(refs), num_returns=1)
        for ref in done:
            task = refs.pop(ref)
            try:
                outcome = ray.get(ref)
            except Exception as exc:  # a crashed worker (WorkerCrashedError) or a task error
                message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                write_error(task.run_dir, message, f"{exc}\n")
                (task.run_dir / RUNNING).unlink(missing_ok=True)
                outcome = {"status": "failed", "error": message, "log": str(task.run_dir / ERROR)}
            on_result(task, outcome)


@dataclass(frozen=True)
class SlurmOptions:
    """How ``--executor slurm`` submits: one Slurm job per run, grouped in job arrays by submitit.

    Attributes:
        partition: Slurm partition (None: the cluster's default).
        time_min: time limit of each job in minutes.
        gpus_per_job: GPUs each job requests (0: CPU jobs).
        array_parallelism: at most this many jobs of an array run at once.
        mem_gb: memory each job requests (None: the partition's default).
        folder: where submitit keeps the jobs' pickles and logs (None: ``<out>/slurm``).
        cluster: ``"slurm"``; ``"local"`` runs the same jobs as local processes through submitit's local executor
            (what the tests use; handy to try a suite file before submitting it).
        poll_s: seconds between checks of the jobs' states.
    """

    partition: str | None = None
    time_min: int = 240
    gpus_per_job: int = 0
    array_parallelism: int = 64
    mem_gb: int | None = None
    folder: str | None = None
    cluster: str = "slurm"
    poll_s: float = 15.0

    def __post_init__(self) -> None:
        for name, flag in (("time_min", "--slurm-time"), ("array_parallelism", "--slurm-array-parallelism")):
            if getattr(self, name) < 1:
                raise ConfigError(f"{flag} {getattr(self, name)} must be >= 1")
        if self.gpus_per_job < 0:
            raise ConfigError(f"--gpus-per-run {self.gpus_per_job} must be >= 0")


def check_submitit() -> None:
    """A clear error before anything starts when ``--executor slurm`` is asked for without submitit installed."""
    if importlib.util.find_spec("submitit") is None:
        raise ConfigError(
            "--executor slurm needs the `submitit` package, which is not installed; "
            "install it (pip install 'debiaslab[slurm]') or use --executor process"
        )


def run_with_slurm(
    tasks: list[RunTask], threads: int, on_result: Callback, options: SlurmOptions, out: Path, name: str
) -> None:
    """Submit ``tasks`` as one submitit job array (one job per run, ``threads`` CPUs each) and report each job as
    it ends. A job that dies without a result (cancelled, past its time limit, out of memory) is a failed run
    whose detail names the job's log file."""
    check_submitit()
    import submitit
    from submitit.helpers import as_completed as jobs_as_completed

    folder = Path(options.folder) if options.folder else out / "slurm"
    executor = submitit.AutoExecutor(folder=folder / "%j", cluster=options.cluster)
    executor.update_parameters(
        name=f"debiaslab-{name}",
        timeout_min=options.time_min,
        cpus_per_task=threads,
        gpus_per_node=options.gpus_per_job,
        mem_gb=options.mem_gb,
        slurm_partition=options.partition,
        slurm_array_parallelism=options.array_parallelism,
    )
    with executor.batch():
        jobs = [executor.submit(execute_run, task) for task in tasks]
    by_job = {job.job_id: task for job, task in zip(jobs, tasks)}
    log.info("submitted %d run(s) as %s job(s) %s", len(jobs), options.cluster, ", ".join(by_job))
    for job in jobs_as_completed(jobs, poll_frequency=options.poll_s):
        task = by_job[job.job_id]
        try:
            outcome = job.result()
        except Exception as exc:  # the job died or was cancelled: submitit's error carries the job's stderr tail
            first = next((line for line in str(exc).splitlines() if line.strip()), "")
            message = f"{options.cluster} job {job.job_id} failed: {type(exc).__name__}: {first}"
            write_error(task.run_dir, message, f"{exc}\n")
            (task.run_dir / RUNNING).unlink(missing_ok=True)
            outcome = {"status": "failed", "error": message, "log": str(job.paths.stderr)}
        on_result(task, outcome)
