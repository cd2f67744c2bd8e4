"""Experiment tracking as trainer callbacks: TensorBoard event files and MLflow runs.

Each tracker gets every epoch's record (the line the trainer writes to ``metrics.jsonl``) and logs its numbers
under ``<stage>/<name>`` at step = epoch: ``erm/train_loss``, ``erm/val/worst_group``, ``erm/val/accuracy``...
(nested dicts such as ``val`` are flattened with ``/``; values that ``metrics.jsonl`` writes as null, i.e.
NaN or infinite, are left out). The packages are imported only when a tracker is created, so the trainer
never needs them; a missing package is one error naming the extra to install.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from debiaslab.errors import ConfigError
from debiaslab.utils.urls import hide_password, scrub, unreachable

log = logging.getLogger(__name__)

#: the step counters and labels of a record, not metrics
NOT_METRICS = frozenset({"stage", "epoch"})


def _require(module: str, extra: str, what: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"{what} needs the Python package {module.split('.')[0]!r}, not installed; "
            f"install the extra: pip install 'debiaslab[{extra}]'"
        ) from exc


def flat_metrics(record: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, float]]:
    """``(name, value)`` for every finite number in ``record`` (nested dicts joined with ``/``)."""
    for key, value in record.items():
        if not prefix and key in NOT_METRICS:
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from flat_metrics(value, name + "/")
        elif isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            yield name, float(value)


def metric_key(record: dict[str, Any], name: str) -> str:
    return f"{record.get('stage', 'train')}/{name}"


def final_metrics(final: dict[str, Any]) -> dict[str, float]:
    """What a finished run adds to its tracker: ``final/<split>/<metric>`` of the deployed model on validation
    and test, ``final/selected_epoch`` (of the stage it deploys), each stage's ``final/<stage>/selected_epoch``
    and ``final/train_time_s``."""
    out = dict(flat_metrics({split: m for split, m in (final.get("metrics") or {}).items()}, "final/"))
    selected = (final.get("selected") or {}).get("epoch")
    if isinstance(selected, int):
        out["final/selected_epoch"] = float(selected)
    for stage in final.get("stages") or []:
        if isinstance(stage.get("selected_epoch"), int):
            out[f"final/{stage['name']}/selected_epoch"] = float(stage["selected_epoch"])
    if isinstance(final.get("train_time_s"), int | float):
        out["final/train_time_s"] = float(final["train_time_s"])
    return out


class TensorBoardTracker:
    """Writes TensorBoard event files to ``log_dir`` (read them with ``tensorboard --logdir``)."""

    def __init__(self, log_dir: str | os.PathLike[str]) -> None:
        _require("tensorboard", "tensorboard", "--tensorboard")
        writer_mod = _require("torch.utils.tensorboard", "tensorboard", "--tensorboard")
        self.log_dir = Path(log_dir)
        self.writer = writer_mod.SummaryWriter(log_dir=str(self.log_dir))

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        step = int(record.get("epoch", 0))
        for name, value in flat_metrics(record):
            self.writer.add_scalar(metric_key(record, name), value, global_step=step)
        self.writer.flush()

    def log_final(self, final: dict[str, Any]) -> None:
        for name, value in final_metrics(final).items():
            self.writer.add_scalar(name, value, global_step=0)
        self.writer.flush()

    def close(self, status: str = "FINISHED") -> None:
        self.writer.close()


class MLflowTracker:
    """Logs to an MLflow run in the tracking store ``uri`` (e.g. ``sqlite:///runs/mlflow.db``).

    The run lives in the experiment ``experiment`` (created when missing), is named ``run_name`` and gets
    ``params`` as its parameters. ``resume_id`` continues an existing MLflow run (a resumed training run).
    Uses the ``MlflowClient`` API only: no global active run, so several trainings in one process do not mix.
    """

    def __init__(
        self,
        uri: str,
        *,
        experiment: str,
        run_name: str,
        params: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        resume_id: str | None = None,
    ) -> None:
        tracking = _require("mlflow.tracking", "mlflow", "--mlflow")
        entities = _require("mlflow.entities", "mlflow", "--mlflow")
        self._metric = entities.Metric
        self._param = entities.Param
        self.uri = uri
        shown = hide_password(uri)
        down = unreachable(uri)  # fail in seconds, not after the client's minutes of retries
        if down is not None:
            raise ConfigError(f"cannot use MLflow tracking URI {shown!r}: {down}; expected a running tracking server")
        try:
            self.client = tracking.MlflowClient(tracking_uri=uri)
            found = self.client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found is not None else self.client.create_experiment(experiment)
            if resume_id is not None:
                self.run_id = resume_id
                self.client.update_run(resume_id, status="RUNNING")
            else:
                run = self.client.create_run(exp_id, run_name=run_name, tags=tags or {})
                self.run_id = run.info.run_id
                if params:
                    items = [self._param(k, str(v)[:6000]) for k, v in params.items()]
                    for start in range(0, len(items), 100):
                        self.client.log_batch(self.run_id, params=items[start : start + 100])
        except ConfigError:
            raise
        except Exception as exc:  # an unreachable server, a bad URI, a locked or foreign database
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(f"cannot use MLflow tracking URI {shown!r}: {scrub(first, uri)}") from None
        log.info("MLflow run %s in %s (experiment %s)", self.run_id, shown, experiment)

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        step = int(record.get("epoch", 0))
        now = int(time.time() * 1000)
        metrics = [self._metric(metric_key(record, n), v, now, step) for n, v in flat_metrics(record)]
        self._log(metrics)

    def log_final(self, final: dict[str, Any]) -> None:
        now = int(time.time() * 1000)
        self._log([self._metric(n, v, now, 0) for n, v in final_metrics(final).items()])

    def _log(self, metrics: list[Any]) -> None:
        for start in range(0, len(metrics), 1000):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + 1000])

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


def default_mlflow_uri(run_dir: str | os.PathLike[str]) -> str:
    """``sqlite:///<run_dir>/mlflow.db``: a local store inside the run directory."""
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def require_packages(*, tensorboard: bool = False, mlflow: bool = False) -> None:
    """Fail now, before a run directory is touched, when a requested tracker's package is missing."""
    if tensorboard:
        _require("tensorboard", "tensorboard", "--tensorboard")
    if mlflow:
        _require("mlflow", "mlflow", "--mlflow")


MLFLOW_RUN_FILE = "mlflow_run_id.txt"
TENSORBOARD_DIR = "tensorboard"


def run_trackers(
    run_dir: str | os.PathLike[str],
    *,
    tensorboard: bool = False,
    mlflow: str | None = None,
    experiment: str = "debiaslab",
    run_name: str = "run",
    params: dict[str, Any] | None = None,
    resume: bool = False,
) -> list[Any]:
    """The trackers a run directory asked for: TensorBoard events under ``<run_dir>/tensorboard``; an MLflow run
    in ``mlflow`` (a tracking URI; ``""`` for :func:`default_mlflow_uri`), whose id is kept in
    ``<run_dir>/mlflow_run_id.txt`` so that ``resume`` continues the same MLflow run."""
    from debiaslab.utils.io import atomic_write_text

    run_dir = Path(run_dir)
    trackers: list[Any] = []
    if tensorboard:
        trackers.append(TensorBoardTracker(run_dir / TENSORBOARD_DIR))
    if mlflow is not None:
        id_file = run_dir / MLFLOW_RUN_FILE
        resume_id = id_file.read_text().strip() if resume and id_file.is_file() else None
        uri = mlflow or default_mlflow_uri(run_dir)
        tracker = MLflowTracker(
            uri, experiment=experiment, run_name=run_name, params=params, resume_id=resume_id or None
        )
        atomic_write_text(id_file, tracker.run_id + "\n")
        trackers.append(tracker)
    return trackers
