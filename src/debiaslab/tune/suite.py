"""Tuning suites: many methods searched with the same budget (trials, epoch cap, sampler, pruner) on one dataset,
then each rule's chosen configurations trained at several ratios and seeds. Read from YAML and checked up front
(every problem names the file, the key and the value). Schema: ``docs/tuning.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from debiaslab.bench.suite import SuiteHeader, _groups_entry, _Where
from debiaslab.errors import ConfigError
from debiaslab.methods.search_space import SearchSpace
from debiaslab.tune.space import resolve_space
from debiaslab.tune.study import OBJECTIVE_RULES, PRUNERS, SAFE_NAME, SAMPLERS
from debiaslab.utils import paths
from debiaslab.utils.io import yaml_problem

KEYS = (
    "name",
    "description",
    "imports",
    "trials",
    "epochs",
    "sampler",
    "pruner",
    "objective",
    "rules",
    "seed",
    "threads",
    "device",
    "dataset",
    "final",
    "methods",
)
METHOD_KEYS = ("method", "label", "hparams", "space", "groups")


@dataclass(frozen=True)
class TuneEntry:
    """One method of a tuning suite: its row label, the fixed hyperparameters, the space searched."""

    method: str
    label: str
    fixed: dict[str, Any]
    space: SearchSpace
    #: train and select on inferred groups (a bench suite's ``groups`` entry: inferrer, hparams, label)
    groups: dict[str, Any] | None = None


@dataclass
class TuneSuite(SuiteHeader):
    """A parsed and validated tuning suite file."""

    trials: int = 20
    epochs: int = 10
    sampler: str = "tpe"
    pruner: str = "median"
    objective: str = "val_worst_group"
    rules: tuple[str, ...] = ("val_worst_group",)
    seed: int = 0
    threads: int = 1
    device: str = "auto"
    dataset: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    ratio: float | None = None
    dataset_dir: str = ""
    final_ratios: tuple[float, ...] | None = None
    final_seeds: tuple[int, ...] = (0, 1, 2)
    methods: list[TuneEntry] = field(default_factory=list)

    @property
    def search_options(self) -> dict[str, Any]:
        return {**self.options, **({"ratio": self.ratio} if self.ratio is not None else {})}


def shipped_tune_suites() -> list[str]:
    return paths.shipped_suites("tune")


def load_tune_suite(name_or_path: str) -> TuneSuite:
    text, location, shipped = paths.suite_file(name_or_path, "tune", "tuning suite")
    default_name = Path(location).stem
    # a shipped suite is named inside the package: an installation's absolute path means nothing in a report read
    # elsewhere
    source = f"shipped tuning suite {name_or_path} (debiaslab/tune/suites/{name_or_path}.yaml)" if shipped else location
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({yaml_problem(exc)})") from exc
    return parse_tune_suite(doc, source, default_name)


def parse_tune_suite(doc: Any, source: str, default_name: str = "tune") -> TuneSuite:
    from debiaslab.data.registry import list_datasets
    from debiaslab.methods.registry import get_method, list_methods

    where = _Where(source)
    doc = where.suite_mapping(doc, KEYS)
    s = TuneSuite(name=_folder(where, "name", doc.get("name", default_name)), source=source)
    s.read_header(where, doc)
    s.trials = where.integer("trials", doc.get("trials", 20), low=1)
    s.epochs = where.integer("epochs", doc.get("epochs", 10), low=1)
    s.sampler = where.choice("sampler", doc.get("sampler", "tpe"), SAMPLERS)
    s.pruner = where.choice("pruner", doc.get("pruner", "median"), PRUNERS)
    s.objective = where.choice("objective", doc.get("objective", "val_worst_group"), OBJECTIVE_RULES)
    rules = where.str_list("rules", doc.get("rules", [s.objective]))
    s.rules = tuple(where.choice(f"rules[{i}]", r, OBJECTIVE_RULES) for i, r in enumerate(rules))
    s.seed = where.integer("seed", doc.get("seed", 0), low=0)
    s.threads = where.integer("threads", doc.get("threads", 1), low=1)
    s.device = where.string("device", doc.get("device", "auto"))

    d = doc.get("dataset")
    if not isinstance(d, dict):
        raise where.error("dataset", d, "a mapping {name, options, ratio, dir}")
    where.only_keys("dataset", d, ("name", "options", "ratio", "dir"))
    s.dataset = where.string("dataset.name", d.get("name"))
    specs = {x.name: x for x in list_datasets()}
    where.registered("dataset.name", s.dataset, sorted(specs), "dataset")
    s.options = d.get("options") or {}
    if not isinstance(s.options, dict):
        raise where.error("dataset.options", s.options, "a mapping of dataset options")
    accepted = specs[s.dataset].options()
    for opt in s.options:
        if opt not in accepted or opt == "ratio":
            raise where.error(f"dataset.options.{opt}", s.options[opt], f"an option of {s.dataset} other than ratio")
    if "ratio" in d:
        s.ratio = where.ratio("dataset.ratio", d["ratio"])
    s.dataset_dir = _folder(where, "dataset.dir", d.get("dir", s.dataset))

    final = doc.get("final") or {}
    if not isinstance(final, dict):
        raise where.error("final", final, "a mapping {ratios, seeds}")
    where.only_keys("final", final, ("ratios", "seeds"))
    if "ratios" in final:
        s.final_ratios = tuple(
            where.ratio(f"final.ratios[{i}]", r)
            for i, r in enumerate(where.nonempty_list("final.ratios", final["ratios"]))
        )
    elif s.ratio is not None:
        s.final_ratios = (s.ratio,)
    s.final_seeds = tuple(where.int_list("final.seeds", final.get("seeds", [0, 1, 2]), low=0))

    known = sorted(c.name for c in list_methods())
    for i, m in enumerate(where.nonempty_list("methods", doc.get("methods"))):
        key = f"methods[{i}]"
        m, name = where.named_entry(key, m, "method", METHOD_KEYS, known, "method")
        label = _folder(where, f"{key}.label", m.get("label", name))
        hparams, space = m.get("hparams") or {}, m.get("space") or {}
        for k, v in (("hparams", hparams), ("space", space)):
            if not isinstance(v, dict):
                raise where.error(f"{key}.{k}", v, "a mapping of hyperparameter names")
        cls = get_method(name)
        resolved, fixed = resolve_space(cls, space, hparams, source=f"{source}: {key}.space")
        for k in ("epochs", "selection"):
            if k in fixed:
                raise where.error(f"{key}.hparams.{k}", fixed[k], "no value: the suite sets it (epochs, rules)")
        try:
            cls(dataset=s.dataset, **fixed)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {key} ({label}): {exc}") from exc
        if label in [e.label for e in s.methods]:
            raise where.error(f"{key}.label", label, "a label not used by another entry")
        s.methods.append(TuneEntry(name, label, fixed, resolved, _groups_entry(where, key, m.get("groups"))))
    return s


def _folder(where: _Where, key: str, value: Any) -> str:
    """A value that names a folder under the output folder: one path component (no '/', '..' or absolute path)."""
    if not isinstance(value, str) or not SAFE_NAME.match(value):
        raise where.error(key, value, "a name of letters, digits and _ . + = - (it names a folder under --out)")
    return value
