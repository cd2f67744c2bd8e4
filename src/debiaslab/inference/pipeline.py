"""Infer groups for a dataset and write the groups file: what ``debiaslab infer-groups`` and a run whose groups
file is still to be made (a bench suite's inferred-groups entry) both call."""

from __future__ import annotations

import datetime as _dt
import logging
import os
import re
from pathlib import Path
from typing import Any

import yaml

from debiaslab import __version__
from debiaslab.data.registry import build_dataset, check_options
from debiaslab.engine.checkpoint import load_model_file
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, RunDirError
from debiaslab.inference.groups_file import write_groups
from debiaslab.inference.quality import score_groups
from debiaslab.inference.registry import get_inferrer

log = logging.getLogger(__name__)


def infer_groups(
    inferrer: str,
    dataset: str,
    out: str | os.PathLike[str],
    *,
    dataset_options: dict[str, Any] | None = None,
    hparams: dict[str, Any] | None = None,
    seed: int = 0,
    reference_run: str | os.PathLike[str] | None = None,
    data_root: str | None = None,
    cache_dir: str | None = None,
    device: str = "auto",
    num_threads: int | None = None,
) -> dict[str, Any]:
    """Infer pseudo-groups of the train and val splits of ``dataset`` and write them to ``out``; returns the
    file's meta (recipe, reference, hash and, where the dataset has attributes, the quality of the inference)."""
    options = check_options(dataset, dict(dataset_options or {}))
    worker = get_inferrer(inferrer)(dataset=dataset, **(hparams or {}))  # bad settings fail before data loads
    reference, reference_meta = None, {"trained": True, "seed": seed}
    if reference_run is not None:
        reference, reference_meta = load_reference(reference_run, dataset, options)
    bundle = build_dataset(dataset, data_root, cache_dir, **options)
    trainer = Trainer(device=device, seed=seed, progress=False, num_threads=num_threads)
    groups = worker.infer(bundle.train, bundle.val, trainer, reference)
    quality = score_groups(bundle, groups)  # the attributes are read here, after inference
    meta = {
        "dataset": dataset,
        "dataset_options": options,
        "seed": seed,
        "recipe": worker.recipe(),
        "reference": reference_meta,
        "quality": quality,
        "debiaslab_version": __version__,
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    written = write_groups(out, groups, meta)
    log.info("groups of %s written to %s (sha256 %s)", inferrer, out, written["sha256"][:12])
    return written


def load_reference(run: str | os.PathLike[str], dataset: str, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """A finished run's model as the reference, after checking it was trained on the same dataset and options."""
    run = Path(run)
    config_path, model_path = run / "config.yaml", run / "model.pt"
    if not model_path.is_file() or not config_path.is_file():
        raise RunDirError(f"--from {run}: not a finished run directory (config.yaml and model.pt expected)")
    try:
        recorded = (yaml.safe_load(config_path.read_text()) or {}).get("run", {})
    except yaml.YAMLError:
        raise RunDirError(f"--from {run}: config.yaml is not valid YAML") from None
    if recorded.get("dataset") != dataset:
        raise ConfigError(f"--from {run}: the run was trained on {recorded.get('dataset')!r}, not {dataset!r}")
    run_options = check_options(dataset, dict(recorded.get("dataset_options") or {}))
    if run_options != options:
        raise ConfigError(f"--from {run}: the run's dataset options {run_options} differ from {options}")
    model, _ = load_model_file(model_path)
    return model, {"trained": False, "run": str(run), "method": recorded.get("method"), "seed": recorded.get("seed")}


def default_groups_path(inferrer: str, dataset: str, options: dict[str, Any], seed: int) -> Path:
    """``runs/groups/<dataset>[-<options>]/<inferrer>/seed<seed>.npz``: numbers and short words name the folder; a
    path (a user's data file) never does."""
    opts = "-".join(f"{k}{v}" for k, v in sorted(options.items()) if _plain_option(k, v))
    return Path("runs") / "groups" / f"{dataset}{'-' + opts if opts else ''}" / inferrer / f"seed{seed}.npz"


def _plain_option(key: str, value: Any) -> bool:
    if isinstance(value, bool | int | float):
        return True
    return (
        isinstance(value, str)
        and key not in ("path", "root")
        and re.fullmatch(r"[A-Za-z0-9_-]{1,32}", value) is not None
    )
