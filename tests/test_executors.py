"""Suites on Slurm (submitit's local executor: the same jobs as local processes) and on a local Ray: failed runs
are reported with the log to read, and a resubmitted suite trains only the runs without a result."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

import bench_plugin  # noqa: F401  (registers toy_bench and the failing methods in this process too)
from debiaslab.bench.executors import SlurmOptions
from debiaslab.bench.runner import run_suite
from debiaslab.bench.suite import load_suite
from debiaslab.cli.main import main
from debiaslab.errors import ConfigError

TESTS = Path(__file__).resolve().parent
TINY = {"model_kwargs": {"width": 16, "depth": 1}, "batch_size": 64, "lr": 0.01}


def suite_file(tmp_path: Path, methods: list) -> Path:
    doc = {
        "name": "toy",
        "imports": ["bench_plugin"],
        "seeds": [0],
        "epochs": 1,
        "datasets": [{"name": "toy_bench", "ratios": [0.1]}],
        "methods": methods,
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def workers_import_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Job processes (submitit, Ray) start fresh: the suite's plugin module must be importable there."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_slurm_executor_reports_failures_with_logs_and_resubmits_only_what_is_missing(
    tmp_path: Path, workers_import_tests: None
) -> None:
    pytest.importorskip("submitit")
    methods = [
        {"method": "erm", "label": "a", "hparams": TINY},
        {"method": "bench_flaky", "label": "b", "hparams": TINY},
        "bench_crash",
    ]
    suite = load_suite(suite_file(tmp_path, methods))
    out = tmp_path / "out"
    slurm = SlurmOptions(cluster="local", time_min=5, poll_s=0.2)
    first = run_suite(suite, out, executor="slurm", slurm=slurm, progress=False)
    by_label = {s.run.label: s for s in first.states}
    assert by_label["a"].status == "finished"
    flaky, crash = by_label["b"], by_label["bench_crash"]
    assert flaky.status == "failed" and "deliberate failure on the first attempt" in flaky.detail
    assert flaky.log == str(flaky.run.run_dir / "bench.log") and Path(flaky.log).is_file()
    # a job that dies names the job's own log (the run never got to write one)
    assert crash.status == "failed" and "local job" in crash.detail
    assert crash.log is not None and Path(crash.log).is_file() and str(out / "slurm") in crash.log
    summary = json.loads((out / "summary.json").read_text())
    assert summary["executor"] == "slurm" and {r["log"] for r in summary["runs"]} >= {flaky.log, crash.log}

    finished = by_label["a"].run.run_dir / "final.json"
    stamp = finished.stat().st_mtime_ns
    again = run_suite(suite, out, executor="slurm", slurm=slurm, only=["a", "b"], progress=False)
    assert {s.run.label: s.status for s in again.states} == {"a": "skipped", "b": "finished"}
    assert finished.stat().st_mtime_ns == stamp  # not retrained


def test_ray_executor_runs_a_two_run_suite_on_a_local_ray(tmp_path: Path, workers_import_tests: None) -> None:
    ray = pytest.importorskip("ray")
    methods = [{"method": "erm", "label": "a", "hparams": TINY}, "bench_raise"]
    suite = load_suite(suite_file(tmp_path, methods))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_suite(suite, tmp_path / "out", executor="ray", workers=2, progress=False)
    finally:
        ray.shutdown()
    by_label = {s.run.label: s for s in result.states}
    assert by_label["a"].status == "finished" and (by_label["a"].run.run_dir / "final.json").is_file()
    failed = by_label["bench_raise"]
    assert failed.status == "failed" and "RuntimeError: deliberate failure" in failed.detail
    assert failed.log is not None and "Traceback" not in failed.detail and Path(failed.log).is_file()
    assert "| a | toy_bench | 0.1 |" in result.tables["results"]


def test_slurm_options_are_checked_with_one_line_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="--slurm-time 0 must be >= 1"):
        SlurmOptions(time_min=0)
    with pytest.raises(ConfigError, match="--gpus-per-run -1 must be >= 0"):
        SlurmOptions(gpus_per_job=-1)
    path = suite_file(tmp_path, [{"method": "erm", "label": "a", "hparams": TINY}])
    assert main(["bench", str(path), "--executor", "slurm", "--slurm-array-parallelism", "0", "--dry-run"]) == 2
    assert "error: --slurm-array-parallelism 0 must be >= 1" in capsys.readouterr().err
