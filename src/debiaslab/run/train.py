"""A run: one method on one dataset with one seed, written to a run directory.

Layout: ``config.yaml`` (what was asked and every resolved hyperparameter with its source),
``metrics.jsonl`` (one line per epoch and stage), ``checkpoints/`` (resume), ``model.pt`` (the deployed model),
``final.json`` (metrics; its presence marks the run finished), ``test_groups.csv`` and ``report.md``.
Every file is written atomically.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import os
import platform
import resource
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from debiaslab import __version__
from debiaslab.data.core import DatasetBundle
from debiaslab.data.input_spec import describe_inputs
from debiaslab.data.overlap import OverlappingGroupDataset
from debiaslab.data.registry import build_dataset, check_options, dataset_name
from debiaslab.engine.checkpoint import clone_state, load_model_file, save_model_file
from debiaslab.engine.integrity import config_hash
from debiaslab.engine.trainer import Trainer, eval_mode, resolve_device
from debiaslab.errors import ConfigError, DataError, DebiasLabError, RunDirError
from debiaslab.evaluation.health import Check, failing
from debiaslab.evaluation.metrics import EvalReport
from debiaslab.evaluation.selection import check_rule_applicable
from debiaslab.inference.apply import with_inferred_groups
from debiaslab.inference.groups_file import GroupsFile
from debiaslab.inference.in_runs import check_reads_groups, groups_for_run, label_ledger
from debiaslab.methods.registry import get_method
from debiaslab.run.directory import (
    CONFIG,
    FINAL,
    MODEL,
    claimed_run_dir,
    plan_run_dir,
    previous_run_note,
    read_config,
    recover_run_dir,
    run_dir_lock,
)
from debiaslab.run.report import run_report_markdown
from debiaslab.utils import dist
from debiaslab.utils.io import (
    atomic_write_json,
    atomic_write_text,
    atomic_write_yaml,
    finite_or_none,
    read_yaml_mapping,
)
from debiaslab.utils.paths import options_slug

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    """Everything that defines a run. The same config and seed give the same metrics."""

    method: str
    dataset: str
    dataset_options: dict[str, Any] = field(default_factory=dict)
    hparams: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"
    out: str | None = None
    data_root: str | None = None
    cache_dir: str | None = None
    overwrite: bool = False
    resume: bool = False
    progress: bool = True
    num_threads: int | None = None
    tensorboard: bool = False  # TensorBoard event files under <run_dir>/tensorboard
    mlflow: str | None = None  # an MLflow tracking URI ("" for sqlite:///<run_dir>/mlflow.db); None: no MLflow
    #: a groups file whose pseudo-groups replace the train and val groups (``debiaslab infer-groups``)
    groups: str | None = None
    #: how to make ``groups`` when it does not exist yet (``{"inferrer": NAME, "hparams": {...}}``; bench suites)
    groups_recipe: dict[str, Any] | None = None

    def identity(self) -> dict[str, Any]:
        """The fields that must match for ``--resume`` to continue a run (``groups`` only when it is set)."""
        identity = {
            "method": self.method,
            "dataset": self.dataset,
            "dataset_options": self.dataset_options,
            "hparams": self.hparams,
            "seed": self.seed,
            "precision": self.precision,
        }
        if self.groups is not None:
            identity["groups"] = self.groups
            if self.groups_recipe:
                identity["groups_recipe"] = self.groups_recipe
        return identity

    def trainer_options(self) -> dict[str, Any]:
        """The :class:`~debiaslab.engine.trainer.Trainer` settings of this run (its directory aside)."""
        return {k: getattr(self, k) for k in ("device", "precision", "seed", "resume", "progress", "num_threads")}

    def comparable_identity(self) -> dict[str, Any]:
        """:meth:`identity` as compared with a run directory's ``config.yaml`` (see :func:`comparable_identity`)."""
        return comparable_identity(_plain(self.identity()))

    def checkpoint_hash(self) -> str:
        """The hash recorded in this run's checkpoints: a resumed run uses only checkpoints of the same run."""
        return config_hash(self.comparable_identity())

    def run_dir(self) -> Path:
        if self.out:
            return Path(self.out)
        opts = options_slug(self.dataset_options)
        return Path("runs") / f"{self.dataset}{'-' + opts if opts else ''}" / self.method / f"seed{self.seed}"


def comparable_identity(identity: Any) -> Any:
    """A run identity (``config.yaml``'s ``run``) in the form two runs are compared in: hyperparameters and dataset
    options converted to their declared types (``lr: "1e-3"`` and ``lr: 0.001`` are the same run), the method's
    ``execution_hparams`` (speed only, e.g. ``n_jobs``) dropped, and the method's ``run_inputs`` (another run it
    uses, e.g. DFR's ``base_run``) compared by the real path they point to, so a run reached through a symlink or
    another relative path is still the same run."""
    if not isinstance(identity, dict) or not isinstance(identity.get("hparams"), dict):
        return identity
    hparams = identity["hparams"]
    try:
        method = get_method(str(identity.get("method")))
        skip, paths = method.execution_hparams, method.run_inputs
        hparams = method.convert_hparams(hparams)
    except DebiasLabError:  # an unknown method or a value that no longer fits: compared as written
        skip, paths = frozenset(), frozenset()
    options = identity.get("dataset_options")
    with contextlib.suppress(DebiasLabError):
        if isinstance(options, dict):
            options = check_options(str(identity.get("dataset")), options)
    hparams = {k: _real_dir(v) if k in paths else v for k, v in hparams.items() if k not in skip}
    return _plain({**identity, "hparams": hparams, "dataset_options": options})


def _real_dir(value: Any) -> Any:
    if isinstance(value, str) and value and os.path.isdir(value):
        return os.path.realpath(value)
    return value


def is_finished(run_dir: str | os.PathLike[str]) -> bool:
    return (Path(run_dir) / FINAL).is_file()


def checked_config(cfg: RunConfig) -> RunConfig:
    """``cfg`` with its hyperparameters and dataset options checked by name and converted to their declared types
    (``lr: "1e-3"`` -> 0.001), as ``config.yaml`` records them; a bad name or value is a one-line ConfigError."""
    method = get_method(cfg.method)
    hparams = method.convert_hparams(cfg.hparams)
    options = check_options(cfg.dataset, cfg.dataset_options)
    if cfg.num_threads is not None and (isinstance(cfg.num_threads, bool) or cfg.num_threads < 1):
        raise ConfigError(f"threads {cfg.num_threads!r} must be an integer >= 1 (torch CPU threads)")
    return dataclasses.replace(
        cfg, method=method.name, dataset=dataset_name(cfg.dataset), hparams=hparams, dataset_options=options
    )


def check_resumable(run_dir: Path, cfg: RunConfig) -> None:
    """``--resume`` continues only the same run: its ``config.yaml`` must describe ``cfg``."""
    previous = read_config(run_dir)
    if comparable_identity(previous.get("run")) != cfg.comparable_identity():
        raise RunDirError(
            f"cannot resume {run_dir}: its config.yaml describes a different run "
            f"({previous.get('run')}); expected {_plain(cfg.identity())}"
        )


def train_run(cfg: RunConfig) -> dict[str, Any]:
    """Check everything (method, hyperparameters, dataset and its options, labels, model, device, the run
    directory), and only then take the run directory over (:mod:`debiaslab.run.directory`), train (or resume), evaluate
    and write it. A configuration that fails a check leaves the directory as it was."""
    started = time.perf_counter()
    cfg = checked_config(cfg)
    method = get_method(cfg.method)(dataset=cfg.dataset, **cfg.hparams)  # bad names fail before data loads
    bundle = build_dataset(cfg.dataset, cfg.data_root, cfg.cache_dir, **cfg.dataset_options)
    method = with_dataset_model(method, cfg, bundle)
    return run_method(cfg, method, bundle, started=started, groups=groups_of(cfg, bundle))


def groups_of(cfg: RunConfig, bundle: DatasetBundle) -> GroupsFile | None:
    """The run's groups file (inferred first when ``cfg.groups_recipe`` says how and it does not exist), checked
    against ``bundle``; None when the run trains on the dataset's own groups."""
    if cfg.groups is None:
        return None
    return groups_for_run(
        cfg.groups,
        cfg.groups_recipe,
        cfg.dataset,
        cfg.dataset_options,
        cfg.seed,
        bundle,
        data_root=cfg.data_root,
        cache_dir=cfg.cache_dir,
        num_threads=cfg.num_threads,
    )


def run_method(
    cfg: RunConfig,
    method: Any,
    bundle: DatasetBundle,
    *,
    started: float | None = None,
    callbacks: Sequence[Any] = (),
    groups: GroupsFile | None = None,
) -> dict[str, Any]:
    """Train ``method`` on ``bundle`` and write the run directory ``cfg.run_dir()`` (shared by the command line and
    :func:`debiaslab.run.fit.fit_and_save`); ``callbacks`` get every epoch's record (experiment tracking).
    With ``groups`` the method trains and selects on the file's pseudo-groups; the run is evaluated on the
    dataset's own splits."""
    started = time.perf_counter() if started is None else started
    fit_bundle = with_inferred_groups(bundle, groups) if groups is not None else bundle
    val = fit_bundle.selection_split
    if groups is not None:
        check_reads_groups(method, val, groups)
    method.check_setup(fit_bundle.train, val)
    report_rules = tuple(method.hparams.report_rules) if val is not None else ()
    for rule in report_rules:  # before any training: a rule needing groups on a split without them
        check_rule_applicable(rule, val is not None and val.has_attrs)
    resolve_device(cfg.device)
    run_dir = cfg.run_dir()
    main = dist.is_main_process()
    if main and (cfg.tensorboard or cfg.mlflow is not None):  # a missing extra fails before the directory is touched
        from debiaslab.engine.tracking import require_packages

        require_packages(tensorboard=cfg.tensorboard, mlflow=cfg.mlflow is not None)
    with run_dir_lock(run_dir) if main else contextlib.nullcontext():  # one writer per run directory
        if main:
            recover_run_dir(run_dir)
        action = plan_run_dir(run_dir, overwrite=cfg.overwrite, resume=cfg.resume) if main else "new"
        if action == "resume":
            check_resumable(run_dir, cfg)
        if main:
            log.info("%s on %s, seed %d: run directory %s (%s)", cfg.method, cfg.dataset, cfg.seed, run_dir, action)
            if bundle.recipe.get("aligned"):
                log.info("%s: aligned pairing %s", cfg.dataset, bundle.recipe["aligned"])
        dist.barrier()
        with claimed_run_dir(run_dir, action) if main else contextlib.nullcontext():
            return _train_in(run_dir, cfg, method, bundle, report_rules, started, callbacks, fit_bundle, groups)


def _train_in(
    run_dir: Path,
    cfg: RunConfig,
    method: Any,
    bundle: DatasetBundle,
    report_rules: tuple[str, ...],
    started: float,
    callbacks: Sequence[Any] = (),
    fit_bundle: DatasetBundle | None = None,
    groups: GroupsFile | None = None,
) -> dict[str, Any]:
    """Write ``config.yaml``, train (on ``fit_bundle``'s splits: inferred groups, if any), evaluate on ``bundle``
    and write the rest of the run directory (rank 0 writes)."""
    main = dist.is_main_process()
    fit_bundle = fit_bundle or bundle
    val = fit_bundle.selection_split
    labels = label_ledger(method, fit_bundle.train, val)
    config_doc = {
        "run": _plain(cfg.identity()),
        "device": cfg.device,
        "dataset_recipe": _plain(bundle.recipe),
        "protocol": bundle.protocol,
        "selection_split": bundle.selection,
        "resolved_hparams": _plain(dataclasses.asdict(method.hparams)),
        "hparam_sources": method.hparam_sources,
        "debiaslab_version": __version__,
        "torch_version": str(torch.__version__),
        "input": describe_inputs(bundle.test, bundle.recipe),
        "labels": labels,
    }
    if groups is not None:
        config_doc["groups"] = groups_record(groups)
    config_doc["world_size"] = dist.world_size()
    config_doc["global_batch_size"] = getattr(method.hparams, "batch_size", None)
    if main:
        atomic_write_yaml(run_dir / CONFIG, config_doc)
    for note in bundle.notes:
        log.warning("%s", note)

    trainer = Trainer(
        run_dir=run_dir,
        report_rules=report_rules,
        callbacks=callbacks,
        config_hash=cfg.checkpoint_hash(),
        **cfg.trainer_options(),
    )
    trackers = run_trackers_for(cfg, run_dir, config_doc) if main else []
    trainer.callbacks.extend(trackers)
    try:
        method.fit(fit_bundle.train, val, trainer=trainer)
        final = _evaluate_and_write(
            run_dir, cfg, method, bundle, trainer, started, labels=labels, groups=groups, config_doc=config_doc
        )
    except BaseException:
        close_trackers(trackers, "FAILED")
        raise
    for tracker in trackers:  # the test metrics and the selected epoch, beside the per-epoch validation
        tracker.log_final(final)
    close_trackers(trackers, "FINISHED")
    return final


def _evaluate_and_write(
    run_dir: Path,
    cfg: RunConfig,
    method: Any,
    bundle: DatasetBundle,
    trainer: Trainer,
    started: float,
    *,
    labels: Any,
    groups: GroupsFile | None,
    config_doc: dict[str, Any],
) -> dict[str, Any]:
    """Evaluate the deployed model on ``bundle`` and write ``model.pt``, ``final.json`` and the reports (rank 0
    only); ``labels`` is the run's label ledger, ``groups`` the inferred groups it trained on (if any),
    ``config_doc`` what its ``config.yaml`` holds (``model.pt`` records its hash)."""
    main = dist.is_main_process()
    result = method.fit_result_
    assert result is not None and method.model_ is not None
    if not main:  # rank 0 evaluates and writes the run directory; the others are done
        return {}
    written = yaml.safe_load(yaml.safe_dump(config_doc))  # config.yaml as a reader finds it
    save_model_file(
        run_dir / MODEL, method.model_, result.model_spec, config_hash(written["run"]), config_hash(written)
    )
    reports = evaluate_splits(method.model_, bundle, trainer)
    reports["test"].to_csv(run_dir / "test_groups.csv")
    checks = run_health(method, bundle, trainer)
    final = {
        **run_record(cfg),
        "world_size": dist.world_size(),
        "global_batch_size": getattr(method.hparams, "batch_size", None),
        "protocol": bundle.protocol,
        "selection_split": bundle.selection,
        "selection": result.selection,
        "selected": _plain(result.selected),
        "labels": labels,
        "stages": [
            {
                "name": s.name,
                "selected_epoch": s.selected_epoch,
                "selection": s.selection,
                "epochs": len(s.history),
            }
            for s in result.stages
        ],
        "metrics": {split: report.metrics for split, report in reports.items()},
        "test_report": reports["test"].to_dict(),
        "selections": rule_selections(method, trainer, bundle, reports),
        "readouts": {
            name: {split: r.metrics for split, r in evaluate_splits(model, bundle, trainer).items()}
            for name, model in method.readout_models_.items()
        },
        "extras": _plain(result.extras),
        "health": [_plain(c.to_dict()) for c in checks],
        "train_time_s": result.train_time_s,
        "total_time_s": round(time.perf_counter() - started, 2),
        "peak_memory_mb": peak_memory_mb(trainer.device),
        "machine": machine_description(trainer.device),
        "finished_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "notes": bundle.notes,
    }
    if groups is not None:
        final["groups"] = groups_record(groups)
    atomic_write_text(run_dir / "report.md", run_report_markdown(final, reports["test"]))
    atomic_write_json(run_dir / FINAL, finite_or_none(final))
    return final


def run_health(method: Any, bundle: DatasetBundle, trainer: Trainer) -> list[Check]:
    """The method's premise checks (``Method.health``); each one that does not pass is logged as one warning line.
    A check that cannot be computed is logged and left out: it never costs a finished run its record."""
    try:
        checks = method.health(bundle.train, bundle.selection_split, trainer)
    except Exception as exc:
        log.warning("%s: premise checks not computed (%s: %s)", method.name, type(exc).__name__, exc)
        return []
    for check in failing(checks):
        log.warning("%s premise check %s: %s", method.name, check.status, check.line())
    return checks


def run_record(cfg: RunConfig) -> dict[str, Any]:
    """What a result record says of the run it comes from: method, dataset, options, the user's hyperparameters
    and the seed (the first keys of ``final.json``)."""
    return {
        "method": cfg.method,
        "dataset": cfg.dataset,
        "dataset_options": _plain(cfg.dataset_options),
        "hparams": _plain(cfg.hparams),
        "seed": cfg.seed,
    }


def groups_record(groups: GroupsFile) -> dict[str, Any]:
    """What a run records of the groups file it trained on: where, its hash and how it was made."""
    meta = groups.meta
    recipe = meta.get("recipe") or {}
    return {
        "file": str(groups.path),
        "sha256": groups.sha256,
        "inferrer": meta.get("inferrer"),
        "hparams": recipe.get("hparams"),
        "reference": meta.get("reference"),
        "seed": meta.get("seed"),
    }


def run_trackers_for(cfg: RunConfig, run_dir: Path, config_doc: dict[str, Any]) -> list[Any]:
    """The experiment trackers ``cfg`` asks for (none: nothing is imported)."""
    if not cfg.tensorboard and cfg.mlflow is None:
        return []
    from debiaslab.engine.tracking import run_trackers

    run = config_doc["run"]
    params = {"method": cfg.method, "dataset": cfg.dataset, "seed": cfg.seed}
    params.update({f"data.{k}": v for k, v in run["dataset_options"].items()})
    params.update({f"hp.{k}": v for k, v in config_doc["resolved_hparams"].items()})
    return run_trackers(
        run_dir,
        tensorboard=cfg.tensorboard,
        mlflow=cfg.mlflow,
        experiment=f"debiaslab-{cfg.dataset}",
        run_name=f"{cfg.method}-seed{cfg.seed}",
        params=params,
        resume=cfg.resume,
    )


def close_trackers(trackers: Sequence[Any], status: str) -> None:
    for tracker in trackers:
        tracker.close(status)


def rule_selections(
    method: Any, trainer: Trainer, bundle: DatasetBundle, reports: dict[str, EvalReport]
) -> dict[str, dict[str, Any]]:
    """``{rule: {epoch, score, deployed, val, test}}``: the deployed rule, then each report rule of the final stage.

    The final stage's modules are loaded, in turn, with the weights kept for each rule (``StageResult.alternatives``)
    and the deployed model (part of those modules) is evaluated; the selected weights are restored afterwards.
    Methods whose deployed model is not the final trainer stage's weights (``Method.deploys_last_stage`` False)
    report only the deployed rule.
    """
    result = method.fit_result_
    val_report = reports.get("val", reports["test"])
    out: dict[str, dict[str, Any]] = {
        result.selection: {
            "epoch": result.selected.get("epoch"),
            "score": result.selected.get("score"),
            "deployed": True,
            "val": val_report.metrics,
            "test": reports["test"].metrics,
        }
    }
    final = result.stages[-1] if result.stages else None
    if final is None or not final.alternatives:
        return out
    if not method.deploys_last_stage:
        log.info(
            "%s deploys a model re-fitted after its last stage; report rules %s are not evaluated",
            method.name,
            ", ".join(final.alternatives),
        )
        return out
    stage = trainer.last_stage
    model = method.model_
    own = stage is not None and {id(p) for p in model.parameters()} <= {id(p) for p in stage.modules.parameters()}
    if result.selected.get("stage") != final.name or stage is None or stage.name != final.name or not own:
        log.warning(
            "%s: the deployed model is not the weights of its final stage %r; report rules %s not evaluated",
            method.name,
            final.name,
            ", ".join(final.alternatives),
        )
        return out
    selected_state = clone_state(stage.modules)
    try:
        for rule, kept in final.alternatives.items():
            stage.modules.load_state_dict(kept["state"])
            rule_reports = evaluate_splits(model, bundle, trainer)
            out[rule] = {
                "epoch": kept["epoch"],
                "score": kept["score"],
                "deployed": False,
                "val": rule_reports.get("val", rule_reports["test"]).metrics,
                "test": rule_reports["test"].metrics,
            }
    finally:
        stage.modules.load_state_dict(selected_state)
    return out


def with_dataset_model(method: Any, cfg: RunConfig, bundle: DatasetBundle) -> Any:
    """The method rebuilt with the dataset's default backbone (e.g. ResNet-50 for Waterbirds images, an MLP for
    text embeddings) when neither the user nor a preset chose a model or its options; else ``method`` unchanged."""
    chosen = any(method.hparam_sources.get(name) != "default" for name in ("model", "model_kwargs"))
    if chosen or method.hparams.model == bundle.default_model:
        return method
    rebuilt = get_method(cfg.method)(dataset=cfg.dataset, **{"model": bundle.default_model, **cfg.hparams})
    rebuilt.hparam_sources["model"] = f"dataset {cfg.dataset}: its default model"
    log.info("%s: model %s (the dataset's default)", cfg.method, bundle.default_model)
    return rebuilt


def evaluate_splits(model: torch.nn.Module, bundle: DatasetBundle, trainer: Trainer) -> dict[str, EvalReport]:
    """Validation and test reports for the deployed model (weighted-group accuracy uses training proportions).

    Splits with overlapping subgroups (CivilComments' identities, WILDS style) also get ``overlap_worst_group``
    and ``overlap_accuracy`` in their metrics: the worst accuracy over every (identity, class) subgroup."""
    counts = bundle.train.group_counts if bundle.train.has_attrs else None
    splits = {"test": bundle.test} if bundle.val is bundle.test else {"val": bundle.val, "test": bundle.test}
    reports = {}
    for split, data in splits.items():
        report = trainer.evaluate(model, data, model, train_group_counts=counts)
        if isinstance(data, OverlappingGroupDataset):
            with eval_mode(model), torch.no_grad():
                overlap = data.overlapping_accuracy(trainer.predict(model, data))
            report.metrics["overlap_worst_group"] = overlap["worst_group"]
            report.metrics["overlap_accuracy"] = overlap["accuracy"]
        reports[split] = report
    return reports


def load_run_model(run_dir: str | os.PathLike[str]) -> torch.nn.Module:
    """Rebuild the deployed model of a finished run from ``model.pt`` (loaded with ``weights_only=True``)."""
    return load_model_file(Path(run_dir) / MODEL)[0]


def load_finished_run(run_dir: str | os.PathLike[str]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The deployed model of a finished run and its spec (``name``, ``kwargs``, ``input_shape``, ``n_classes``)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist")
    check_finished(run_dir)
    return load_model_file(run_dir / MODEL)


def check_finished(run_dir: Path) -> None:
    if not is_finished(run_dir):
        raise RunDirError(
            f"{run_dir} holds no finished run ({FINAL} missing); train it first or --resume it"
            + previous_run_note(run_dir)
        )


def load_run_config(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A run directory's ``config.yaml``; a missing, empty or garbled one (or one without a ``run`` section naming
    the method and dataset) is one error naming it."""
    path = Path(run_dir) / CONFIG
    if not Path(run_dir).is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist")
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not a run directory: {CONFIG} is missing")
    expected = "the configuration debiaslab wrote for the run (a `run` section with its method and dataset)"
    config = read_yaml_mapping(path, expected)
    run = config.get("run")
    if not isinstance(run, dict) or not all(isinstance(run.get(k), str) for k in ("method", "dataset")):
        raise DataError(f"{path} has no valid `run` section; expected {expected}")
    run.setdefault("dataset_options", {})
    if not isinstance(run["dataset_options"], dict):
        raise DataError(f"{path}: run.dataset_options is not a mapping; expected {expected}")
    return config


def evaluate_run(
    run_dir: str | os.PathLike[str],
    *,
    data_root: str | None = None,
    cache_dir: str | None = None,
    device: str = "auto",
) -> dict[str, EvalReport]:
    """Re-evaluate a finished run's model on its dataset's validation and test splits."""
    run_dir = Path(run_dir)
    check_finished(run_dir)
    config = load_run_config(run_dir)
    run = config["run"]
    bundle = build_dataset(run["dataset"], data_root, cache_dir, **run["dataset_options"])
    model = load_run_model(run_dir)
    trainer = Trainer(device=device, progress=False)
    model.to(trainer.device)
    return evaluate_splits(model, bundle, trainer)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    threads = torch.get_num_threads()
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads)"


def _plain(obj: Any) -> Any:
    """YAML/JSON-safe copy (tuples to lists, tensors to lists)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, str | Path):
        return str(obj)
    if hasattr(obj, "item") and not isinstance(obj, bool | int | float):
        return obj.item()
    return obj


def parse_key_values(pairs: list[str] | None, what: str, parse: bool = True) -> dict[str, Any]:
    """``["lr=1e-3", "model=mlp"]`` -> dict; malformed pairs are a clear error. Values are YAML-parsed, or with
    ``parse=False`` kept as text for :func:`checked_config` to convert by each field's declared type (so that text
    stays text where a field takes text: ``--hp model=on`` is ``"on"``, not YAML's True)."""
    out: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} {pair!r} is not of the form key=value")
        if not parse:
            out[key.strip()] = value
            continue
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{what} {pair!r}: value is not valid YAML") from exc
    return out
