"""One search: what it searches (:class:`SearchSpec`), and its Optuna study (created, or re-opened and checked).

A study records its identity (method, dataset and options, fixed hyperparameters, space, objective rule, epoch
cap) in its user attributes and in ``search.yaml`` of the search directory, so a resumed search or an extra
worker joins the same study, and a search directory or storage holding another study is refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debiaslab.bench.runner import identity_diff
from debiaslab.errors import ConfigError, DataError
from debiaslab.evaluation.selection import get_rule
from debiaslab.methods.search_space import SearchSpace
from debiaslab.tune.space import describe_space
from debiaslab.tune.storage import DEFAULT_DB, open_storage, shown
from debiaslab.utils.io import atomic_write_yaml, first_line, read_yaml_mapping
from debiaslab.utils.paths import options_slug

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "none")
#: rules a search can optimise and record (``last`` selects nothing)
OBJECTIVE_RULES = ("val_worst_group", "val_unbiased", "val_worst_class", "val_classdiff", "val_accuracy")
SEARCH_FILE = "search.yaml"
#: the median pruner waits for this many complete trials; steps count epochs from 1, so it may stop a trial after
#: any epoch (Optuna prunes from step == n_warmup_steps on)
MEDIAN_STARTUP_TRIALS = 5
MEDIAN_WARMUP_STEPS = 1
#: a study name names the default search folder: one path component, no ``..``, no absolute path
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")
TRIAL_FOLDER = re.compile(r"^trial\d{4,}$")


@dataclass
class SearchSpec:
    """Everything that defines a search and how it runs. ``identity()`` must match to resume or join it."""

    method: str
    dataset: str
    space: SearchSpace
    rule: str
    trials: int
    epochs: int
    dataset_options: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    out: str = "runs/tune"
    storage: str | None = None
    study_name: str | None = None
    threads: int | None = 1
    device: str = "auto"
    precision: str = "fp32"
    data_root: str | None = None
    cache_dir: str | None = None
    #: plugin modules (registering datasets or methods) imported by every worker process before its trials
    imports: tuple[str, ...] = ()
    #: train and select every trial on inferred groups: ``{"inferrer", "hparams", "label"}`` (a bench suite's
    #: ``groups`` entry); inferred once, for the search's seed, under ``<out>/groups/<label>/``
    groups: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.rule not in OBJECTIVE_RULES:
            raise ConfigError(f"rule {self.rule!r} cannot drive a search; expected one of {', '.join(OBJECTIVE_RULES)}")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler {self.sampler!r} unknown; expected one of {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"pruner {self.pruner!r} unknown; expected one of {', '.join(PRUNERS)}")
        for name in ("trials", "epochs"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} {getattr(self, name)!r} must be >= 1")
        for key in ("epochs", "selection"):
            if key in self.fixed:
                raise ConfigError(f"hyperparameter {key!r} is set by the search (--epochs-cap, --rule); drop it")
        if self.study_name is not None and not SAFE_NAME.match(self.study_name):
            raise ConfigError(
                f"study name {self.study_name!r}: expected letters, digits and _ . + = - (it names the search "
                "folder; no '/', no '..', no absolute path)"
            )

    @property
    def name(self) -> str:
        """The study's name: given, or ``<method>-<dataset>[-<options>]``."""
        if self.study_name:
            return self.study_name
        opts = options_slug(self.dataset_options)
        groups = f"+{self.groups['label']}" if self.groups else ""
        return f"{self.method}{groups}-{self.dataset}{'-' + opts if opts else ''}"

    @property
    def direction(self) -> str:
        return "minimize" if get_rule(self.rule).mode == "min" else "maximize"

    def identity(self) -> dict[str, Any]:
        """What must match for a resumed search or another worker to join this study (budget and engine aside:
        more trials can be asked for later)."""
        return json.loads(
            json.dumps(
                {
                    "method": self.method,
                    "dataset": self.dataset,
                    "dataset_options": self.dataset_options,
                    "fixed": self.fixed,
                    "space": describe_space(self.space),
                    "rule": self.rule,
                    "epochs": self.epochs,
                    "seed": self.seed,
                    **({"groups": self.groups} if self.groups else {}),
                },
                sort_keys=True,
                default=str,
            )
        )

    def budget(self) -> dict[str, Any]:
        return {"trials": self.trials, "epochs": self.epochs, "sampler": self.sampler, "pruner": self.pruner}


def make_sampler(spec: SearchSpec, seed: int) -> Any:
    import optuna

    if spec.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(1, spec.trials // 2)))


def make_pruner(spec: SearchSpec) -> Any:
    import optuna

    if spec.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=MEDIAN_STARTUP_TRIALS, n_warmup_steps=MEDIAN_WARMUP_STEPS)
    if spec.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=spec.epochs, reduction_factor=3)
    return optuna.pruners.NopPruner()


def check_search_dir(spec: SearchSpec) -> None:
    """Refuse a search directory whose ``search.yaml`` describes another search; write it for a new one."""
    out = Path(spec.out)
    path = out / SEARCH_FILE
    if path.is_file():
        try:
            previous = read_yaml_mapping(path, "the record of a search (its identity)").get("identity")
        except DataError as exc:
            raise ConfigError(f"{exc}; restore it or choose another --out") from exc
        if previous != spec.identity():
            raise ConfigError(
                f"search directory {out} holds another search ({identity_diff(previous, spec.identity())}); "
                "choose another --out"
            )
        return
    if out.exists() and not out.is_dir():
        raise ConfigError(f"search directory {out} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create search directory {out} ({exc.strerror or exc})") from exc
    doc = {"identity": spec.identity(), "study": spec.name, "storage": shown(spec.storage or "default")}
    atomic_write_yaml(path, doc)


def open_study(spec: SearchSpec, *, sampler_seed: int | None = None, heartbeat_s: int | None = 30) -> Any:
    """The study of ``spec`` in its storage: created (identity recorded) or re-opened after checking that it is
    the same search. ``sampler_seed`` seeds this process's sampler (default: the spec's seed)."""
    import optuna

    storage = open_storage(spec.storage, spec.out, heartbeat_s=heartbeat_s)
    seed = spec.seed if sampler_seed is None else sampler_seed
    where = shown(spec.storage) if spec.storage else str(Path(spec.out) / DEFAULT_DB)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=spec.name,
            direction=spec.direction,
            sampler=make_sampler(spec, seed),
            pruner=make_pruner(spec),
            load_if_exists=True,
        )
        found = study.user_attrs.get("identity")
        known = bool(study.get_trials(deepcopy=False))
    except Exception as exc:  # a damaged database: Optuna's StorageInternalError, SQLAlchemy's DatabaseError
        raise ConfigError(
            f"study storage {where} is damaged ({first_line(exc)}); restore it from a copy or choose another --out"
        ) from exc
    trials = sorted(p.name for p in (Path(spec.out) / "trials").glob("trial*") if TRIAL_FOLDER.match(p.name))
    if not known and trials:
        raise ConfigError(
            f"study storage {where} holds no trials of study {spec.name!r}, but {Path(spec.out) / 'trials'} holds "
            f"{len(trials)} trial folder(s) ({trials[0]}...): the search's record is lost (an empty or replaced "
            "database); restore it, or choose another --out, instead of starting over on top of those trials"
        )
    if found is None:
        study.set_user_attr("identity", spec.identity())
    elif found != spec.identity():
        where = shown(spec.storage) if spec.storage else f"search directory {spec.out}"
        raise ConfigError(
            f"{where} holds another study named {spec.name!r} ({identity_diff(found, spec.identity())}); "
            "choose another --out or --study"
        )
    return study


@dataclass
class SearchResult:
    """Where a search stands: counts of its trials, and each rule's best complete trial."""

    spec: SearchSpec
    counts: dict[str, int]
    best: dict[str, dict[str, Any]] = field(default_factory=dict)
    trials: list[dict[str, Any]] = field(default_factory=list)
    wall_s: float | None = None

    def tie_note(self) -> str:
        """A sentence when every complete trial scored the same (two or more): the search learned nothing."""
        values = {round(t["value"], 6) for t in self.trials if t["state"] == "complete" and t["value"] is not None}
        complete = sum(t["state"] == "complete" for t in self.trials)
        if complete < 2 or len(values) != 1:
            return ""
        return (
            f"all {complete} complete trials scored {values.pop():.4f} under {self.spec.rule}: the search learned "
            "nothing about these hyperparameters (the score does not respond to them here); widen the space, raise "
            "--epochs-cap or optimise another --rule"
        )
