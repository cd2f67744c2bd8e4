"""Benchmark suites: a declarative grid (methods x datasets x ratios x seeds) read from YAML and checked up front.

A suite names what to train; :mod:`debiaslab.bench.runner` decides what is already done and runs the rest.
Every problem in a suite file is reported with the file, the key (``methods[2].hparams``) and the value, before
anything trains. See ``docs/bench.md`` for the schema.
"""

from __future__ import annotations

import importlib
import importlib.resources
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from debiaslab.errors import ConfigError, DebiasLabError
from debiaslab.run.train import RunConfig
from debiaslab.utils import paths
from debiaslab.utils.io import yaml_problem
from debiaslab.utils.paths import options_slug

SUITE_KEYS = {
    "name": "suite name (default: the file name); the default output is runs/bench/<name>",
    "description": "one line shown in the report",
    "imports": "modules imported before the suite is checked and in every worker (plugins that register more)",
    "seeds": "list of integer seeds",
    "epochs": "epochs for every method (its `epochs` hyperparameter) unless a method sets its own",
    "selection": "deployed selection rule for every method unless a method sets its own",
    "report_rules": "further selection rules evaluated from the same training (one run, several rules)",
    "threads": "torch CPU threads per run (default 1)",
    "device": "device of every run (default auto)",
    "precision": "fp32 or bf16 (default fp32)",
    "paper_budget": "true (default) when the runs use the papers' training budget, so the report puts the published "
    "numbers beside ours; false for a shortened budget (no paper columns)",
    "datasets": "list of datasets: {name, options, ratios, seeds, dir}",
    "methods": "list of methods: a name, or {method, label, hparams}",
}
DATASET_KEYS = ("name", "options", "ratios", "seeds", "dir")
METHOD_KEYS = ("method", "label", "hparams", "groups")
GROUPS_KEYS = ("inferrer", "hparams", "label")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=-]*$")
#: a hyperparameter value ``{run:LABEL}`` is the run directory of method LABEL for the same dataset, ratio and
#: seed (a DFR base model, a DeTT teacher); the runner trains LABEL's run first
RUN_REF = re.compile(r"^\{run:([^{}]*)\}$")


def run_refs(hparams: dict[str, Any]) -> dict[str, str]:
    """``{hyperparameter: LABEL}`` for every value of ``hparams`` that is a ``{run:LABEL}`` reference."""
    refs = {}
    for name, value in hparams.items():
        match = RUN_REF.match(value) if isinstance(value, str) else None
        if match:
            refs[name] = match.group(1)
    return refs


@dataclass(frozen=True)
class MethodEntry:
    """One method of a suite: the registered name, the label naming its run directories and rows, its hparams."""

    method: str
    label: str
    hparams: dict[str, Any] = field(default_factory=dict)
    #: train and select on inferred groups: ``{"inferrer": NAME, "hparams": {...}, "label": FOLDER}``; the groups
    #: file of each dataset, ratio and seed is inferred once, under ``<out>/<dataset dir>/groups/<label>/``
    groups: dict[str, Any] | None = None


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset of a suite: fixed ``options``, optional conflicting ``ratios`` (a grid), its own ``seeds``
    (None: the suite's), the folder name."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    ratios: tuple[float, ...] | None = None
    dir: str = ""
    seeds: tuple[int, ...] | None = None


@dataclass(frozen=True)
class PlannedRun:
    """One run of a suite: where it lives and the :class:`~debiaslab.run.train.RunConfig` that trains it."""

    label: str
    dataset_dir: str
    ratio: float | None
    config: RunConfig
    #: run directories this run reads (``{run:LABEL}`` hyperparameters): trained before it
    depends_on: tuple[str, ...] = ()

    @property
    def run_dir(self) -> Path:
        return Path(str(self.config.out))

    @property
    def method(self) -> str:
        return self.config.method

    def describe(self) -> str:
        ratio = f" r{self.ratio}" if self.ratio is not None else ""
        return f"{self.label} {self.dataset_dir}{ratio} seed{self.config.seed}"


@dataclass
class SuiteHeader:
    """What every suite file (a bench suite or a tuning suite) opens with: its name, where it was read from, a
    description and the plugin modules it imports."""

    name: str
    source: str
    description: str = ""
    imports: tuple[str, ...] = ()

    def read_header(self, where: _Where, doc: dict[str, Any]) -> None:
        """Set the description and imports of ``doc`` and import those plugin modules."""
        self.description = str(doc.get("description") or "")
        self.imports = tuple(where.str_list("imports", doc.get("imports", [])))
        import_plugins(self.imports, where)


@dataclass
class Suite(SuiteHeader):
    """A parsed and validated suite file."""

    seeds: tuple[int, ...] = (0,)
    epochs: int | None = None
    selection: str | None = None
    report_rules: tuple[str, ...] = ()
    threads: int = 1
    device: str = "auto"
    precision: str = "fp32"
    #: the runs train at the papers' budget, so comparing with the published numbers is meaningful
    paper_budget: bool = True
    datasets: list[DatasetEntry] = field(default_factory=list)
    methods: list[MethodEntry] = field(default_factory=list)

    def default_out(self) -> Path:
        return Path("runs") / "bench" / self.name

    def hparams_for(self, entry: MethodEntry) -> dict[str, Any]:
        """The run's user hyperparameters: suite-wide settings, then the method's own (which win)."""
        hp: dict[str, Any] = {}
        if self.epochs is not None:
            hp["epochs"] = self.epochs
        if self.selection is not None:
            hp["selection"] = self.selection
        if self.report_rules:
            hp["report_rules"] = list(self.report_rules)
        return {**hp, **entry.hparams}

    def plan(
        self,
        out: str | Path | None = None,
        *,
        only: Sequence[str] | None = None,
        data_root: str | None = None,
        cache_dir: str | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[PlannedRun]:
        """Every run of the grid, in a stable order (dataset, ratio, method, seed); ``only`` keeps the methods
        whose label or registered name is listed, ``seeds`` the runs of those seeds (e.g. seeds added later)."""
        out = Path(out) if out is not None else self.default_out()
        if seeds:
            known_seeds = set(self.seeds).union(*(ds.seeds or () for ds in self.datasets))
            missing = sorted(set(seeds) - known_seeds)
            if missing:
                raise ConfigError(
                    f"--seeds {', '.join(map(str, missing))}: not a seed of suite {self.name!r} ({self.source}); "
                    f"expected some of: {', '.join(map(str, sorted(known_seeds)))}"
                )
        wanted = set(only or [])
        if wanted:
            known = {m.label for m in self.methods} | {m.method for m in self.methods}
            unknown = sorted(wanted - known)
            if unknown:
                raise ConfigError(
                    f"--only {', '.join(unknown)}: not a method of suite {self.name!r} ({self.source}); "
                    f"expected some of: {', '.join(m.label for m in self.methods)}"
                )
        runs = []
        for ds in self.datasets:
            for ratio in ds.ratios or (None,):
                options = dict(ds.options) if ratio is None else {**ds.options, "ratio": ratio}
                for entry in self.methods:
                    if wanted and entry.label not in wanted and entry.method not in wanted:
                        continue
                    for seed in ds.seeds or self.seeds:
                        if seeds and seed not in seeds:
                            continue
                        run_dir = _run_dir(out, ds, ratio, entry.label, seed)
                        hparams = self.hparams_for(entry)
                        refs = run_refs(hparams)
                        for name, label in refs.items():
                            hparams[name] = str(_run_dir(out, ds, ratio, label, seed))
                        cfg = RunConfig(
                            method=entry.method,
                            dataset=ds.name,
                            dataset_options=options,
                            hparams=hparams,
                            seed=seed,
                            device=self.device,
                            precision=self.precision,
                            out=str(run_dir),
                            data_root=data_root,
                            cache_dir=cache_dir,
                            resume=True,
                            progress=False,
                            num_threads=self.threads,
                        )
                        if entry.groups is not None:
                            cfg.groups = str(_groups_file(out, ds, ratio, entry.groups["label"], seed))
                            cfg.groups_recipe = {
                                "inferrer": entry.groups["inferrer"],
                                "hparams": dict(entry.groups.get("hparams") or {}),
                            }
                        deps = tuple(hparams[name] for name in refs)
                        runs.append(PlannedRun(entry.label, ds.dir, ratio, cfg, deps))
        return runs


def _groups_file(out: Path, ds: DatasetEntry, ratio: float | None, label: str, seed: int) -> Path:
    """``<out>/<dataset dir>/groups/<label>[/r<ratio>]/seed<seed>.npz``: shared by every run reading those groups."""
    folder = out / ds.dir / "groups" / label
    return (folder / f"r{ratio}" if ratio is not None else folder) / f"seed{seed}.npz"


def _run_dir(out: Path, ds: DatasetEntry, ratio: float | None, label: str, seed: int) -> Path:
    """``<out>/<dataset dir>/<label>[/r<ratio>]/seed<seed>``."""
    run_dir = out / ds.dir / label
    return (run_dir / f"r{ratio}" if ratio is not None else run_dir) / f"seed{seed}"


# ---------------------------------------------------------------------------------------------- loading
def shipped_suites() -> list[str]:
    """Names of the suites that come with debiaslab (``src/debiaslab/bench/suites/*.yaml``)."""
    return paths.shipped_suites("bench")


def load_suite(name_or_path: str | Path) -> Suite:
    """A shipped suite by name (``quick``) or a YAML file by path; every problem is a :class:`ConfigError`."""
    text, source = _suite_text(str(name_or_path))
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({yaml_problem(exc)})") from exc
    default_name = Path(source).name.rsplit(".", 1)[0]
    return parse_suite(doc, source, default_name)


def _suite_text(name_or_path: str) -> tuple[str, str]:
    text, location, shipped = paths.suite_file(name_or_path, "bench", "suite")
    return text, f"suite {name_or_path} ({location})" if shipped else location


def parse_suite(doc: Any, source: str, default_name: str = "suite") -> Suite:
    """Validate a loaded YAML document and build the :class:`Suite`."""
    where = _Where(source)
    doc = where.suite_mapping(doc, SUITE_KEYS)
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise where.error("name", name, "a name of letters, digits and _ . + = - (it names the output folder)")
    suite = Suite(name=name, source=source)
    suite.read_header(where, doc)
    suite.seeds = tuple(where.int_list("seeds", doc.get("seeds", [0]), low=0))
    if "epochs" in doc:
        suite.epochs = where.integer("epochs", doc["epochs"], low=1)
    if "selection" in doc:
        suite.selection = where.rule("selection", doc["selection"], allow_auto=True)
    suite.report_rules = tuple(
        where.rule(f"report_rules[{i}]", r)
        for i, r in enumerate(where.str_list("report_rules", doc.get("report_rules", [])))
    )
    suite.threads = where.integer("threads", doc.get("threads", 1), low=1)
    suite.device = where.string("device", doc.get("device", "auto"))
    suite.precision = where.choice("precision", doc.get("precision", "fp32"), ("fp32", "bf16"))
    suite.paper_budget = where.boolean("paper_budget", doc.get("paper_budget", True))
    suite.datasets = [_dataset(where, i, d) for i, d in enumerate(where.nonempty_list("datasets", doc.get("datasets")))]
    for i, d in enumerate(suite.datasets):
        for earlier in suite.datasets[:i]:
            if d.dir == earlier.dir and not _share_folder(d, earlier):
                raise where.error(
                    f"datasets[{i}]",
                    d.dir,
                    "datasets with distinct folders (give one a different `dir`), or the same dataset and options "
                    "with ratios in common to neither",
                )
    suite.methods = [_method(where, i, m) for i, m in enumerate(where.nonempty_list("methods", doc.get("methods")))]
    labels = [m.label for m in suite.methods]
    for i, label in enumerate(labels):
        if label in labels[:i]:
            raise where.error(
                f"methods[{i}].label", label, "a label not used by another entry (add `label:` to tell them apart)"
            )
    _check_run_refs(suite, where)
    _check_hparams(suite, where)
    return suite


def _share_folder(a: DatasetEntry, b: DatasetEntry) -> bool:
    """Two entries may share a folder when they split one dataset's ratios (e.g. more seeds at one ratio): their
    runs' folders (``r<ratio>``) never meet."""
    same = a.name == b.name and a.options == b.options
    return same and a.ratios is not None and b.ratios is not None and not set(a.ratios) & set(b.ratios)


def _check_run_refs(suite: Suite, where: _Where) -> None:
    """``{run:LABEL}`` must name another method of the suite, and the references must not form a cycle."""
    labels = [m.label for m in suite.methods]
    needs: dict[str, set[str]] = {}
    for i, entry in enumerate(suite.methods):
        for name, label in run_refs(entry.hparams).items():
            if label not in labels or label == entry.label:
                others = [x for x in labels if x != entry.label]
                raise where.error(
                    f"methods[{i}].hparams.{name}",
                    entry.hparams[name],
                    "{run:LABEL} with LABEL another method of this suite: " + ", ".join(others),
                )
            needs.setdefault(entry.label, set()).add(label)

    def visit(label: str, path: tuple[str, ...]) -> None:
        for dep in sorted(needs.get(label, ())):
            if dep in path:
                cycle = " -> ".join((*path[path.index(dep) :], dep))
                raise ConfigError(f"{where.source}: {{run:LABEL}} references form a cycle: {cycle}")
            visit(dep, (*path, dep))

    for label in labels:
        visit(label, (label,))


def import_plugins(modules: Sequence[str], where: _Where | None = None) -> None:
    """Import the suite's plugin modules (they register datasets or methods with the usual decorators)."""
    for i, module in enumerate(modules):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            if where is None:
                raise
            raise where.error(f"imports[{i}]", module, f"an importable module ({exc})") from exc


def _dataset(where: _Where, i: int, d: Any) -> DatasetEntry:
    from debiaslab.data.registry import list_datasets

    key = f"datasets[{i}]"
    specs = {s.name: s for s in list_datasets()}
    d, name = where.named_entry(key, d, "name", DATASET_KEYS, sorted(specs), "dataset")
    accepted = specs[name].options()
    options = d.get("options") or {}
    if not isinstance(options, dict):
        raise where.error(f"{key}.options", options, "a mapping of dataset options")
    for opt in options:
        if opt not in accepted:
            raise where.error(f"{key}.options.{opt}", options[opt], f"an option of {name}: {', '.join(accepted)}")
    ratios = None
    if "ratios" in d:
        if "ratio" not in accepted:
            raise where.error(f"{key}.ratios", d["ratios"], f"no ratios: dataset {name} has no `ratio` option")
        if "ratio" in options:
            raise where.error(f"{key}.options.ratio", options["ratio"], "ratios given once, in `ratios`")
        ratios = tuple(
            where.ratio(f"{key}.ratios[{j}]", r)
            for j, r in enumerate(where.nonempty_list(f"{key}.ratios", d["ratios"]))
        )
        if len(set(ratios)) != len(ratios):
            raise where.error(f"{key}.ratios", list(ratios), "distinct ratios")
    slug = options_slug(options)
    default_dir = f"{name}-{slug}" if slug else name
    folder = d.get("dir", default_dir)
    if not isinstance(folder, str) or not _SAFE_NAME.match(folder):
        raise where.error(f"{key}.dir", folder, "a folder name of letters, digits and _ . + = -")
    seeds = tuple(where.int_list(f"{key}.seeds", d["seeds"], low=0)) if "seeds" in d else None
    return DatasetEntry(name=name, options=dict(options), ratios=ratios, dir=folder, seeds=seeds)


def _method(where: _Where, i: int, m: Any) -> MethodEntry:
    from debiaslab.methods.registry import list_methods

    key = f"methods[{i}]"
    m, name = where.named_entry(key, m, "method", METHOD_KEYS, sorted(cls.name for cls in list_methods()), "method")
    label = m.get("label", name)
    if not isinstance(label, str) or not _SAFE_NAME.match(label):
        raise where.error(f"{key}.label", label, "a label of letters, digits and _ . + = - (it names a folder)")
    hparams = m.get("hparams") or {}
    if not isinstance(hparams, dict) or not all(isinstance(k, str) for k in hparams):
        raise where.error(f"{key}.hparams", hparams, "a mapping of hyperparameter names to values")
    groups = _groups_entry(where, key, m.get("groups"))
    return MethodEntry(method=name, label=label, hparams=dict(hparams), groups=groups)


def _groups_entry(where: _Where, key: str, g: Any) -> dict[str, Any] | None:
    """A method's ``groups:`` (an inferrer name, or a mapping with ``inferrer``, ``hparams`` and ``label``)."""
    from debiaslab.inference.registry import get_inferrer, list_inferrers

    if g is None:
        return None
    if isinstance(g, str):
        g = {"inferrer": g}
    if not isinstance(g, dict):
        raise where.error(f"{key}.groups", g, "an inferrer name or a mapping with keys " + ", ".join(GROUPS_KEYS))
    where.only_keys(f"{key}.groups", g, GROUPS_KEYS)
    name = where.string(f"{key}.groups.inferrer", g.get("inferrer"))
    known = sorted(cls.name for cls in list_inferrers())
    if name not in known:
        raise where.error(f"{key}.groups.inferrer", name, "a registered inferrer: " + ", ".join(known))
    hparams = g.get("hparams") or {}
    if not isinstance(hparams, dict) or not all(isinstance(k, str) for k in hparams):
        raise where.error(f"{key}.groups.hparams", hparams, "a mapping of inferrer settings to values")
    get_inferrer(name).check_hparams(hparams)
    label = g.get("label", name)
    if not isinstance(label, str) or not _SAFE_NAME.match(label):
        raise where.error(f"{key}.groups.label", label, "a label of letters, digits and _ . + = - (it names a folder)")
    return {"inferrer": name, "hparams": dict(hparams), "label": label}


def _check_hparams(suite: Suite, where: _Where) -> None:
    """Build every method once per dataset with its hyperparameters: unknown names and bad values fail now."""
    from debiaslab.methods.registry import get_method

    for i, entry in enumerate(suite.methods):
        for ds in suite.datasets:
            hparams = suite.hparams_for(entry)
            for name, label in run_refs(hparams).items():  # a stand-in path: the real one exists per run
                hparams[name] = str(suite.default_out() / ds.dir / label)
            try:
                get_method(entry.method)(dataset=ds.name, **hparams)
            except DebiasLabError as exc:
                raise ConfigError(f"{where.source}: methods[{i}] ({entry.label}) on {ds.name}: {exc}") from exc


class _Where:
    """Validation helpers whose errors name the suite file, the key and the value."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, key: str, value: Any, expected: str, unknown_key: bool = False) -> ConfigError:
        if unknown_key:
            return ConfigError(f"{self.source}: unknown key {key!r}; expected {expected}")
        at = f"key {key!r}" if key else "top level"
        return ConfigError(f"{self.source}: {at} = {value!r}; expected {expected}")

    def suite_mapping(self, doc: Any, keys: Sequence[str]) -> dict[str, Any]:
        """``doc``, the whole suite file, checked to be a mapping of some of ``keys``."""
        if not isinstance(doc, dict):
            raise self.error("", doc, "a mapping with keys " + ", ".join(keys))
        unknown = sorted(set(doc) - set(keys))
        if unknown:
            raise self.error(unknown[0], doc[unknown[0]], "one of the keys " + ", ".join(keys), unknown_key=True)
        return doc

    def only_keys(self, key: str, d: dict[str, Any], allowed: Sequence[str]) -> None:
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise self.error(f"{key}.{unknown[0]}", None, "one of " + ", ".join(allowed), unknown_key=True)

    def registered(self, key: str, name: str, known: Sequence[str], what: str) -> None:
        """Refuse a ``name`` that is not among the ``known`` (registered) ones."""
        if name not in known:
            raise self.error(key, name, f"a registered {what}: " + ", ".join(known))

    def named_entry(
        self, key: str, entry: Any, name_key: str, keys: Sequence[str], known: Sequence[str], what: str
    ) -> tuple[dict[str, Any], str]:
        """A list entry written as a registered name or as a mapping with ``keys``: the mapping and the name."""
        if isinstance(entry, str):
            entry = {name_key: entry}
        if not isinstance(entry, dict):
            raise self.error(key, entry, f"a {what} name or a mapping with keys " + ", ".join(keys))
        self.only_keys(key, entry, keys)
        name = self.string(f"{key}.{name_key}", entry.get(name_key))
        self.registered(f"{key}.{name_key}", name, known, what)
        return entry, name

    def string(self, key: str, value: Any) -> str:
        if not isinstance(value, str) or not value:
            raise self.error(key, value, "a non-empty string")
        return value

    def choice(self, key: str, value: Any, options: Sequence[str]) -> str:
        if value not in options:
            raise self.error(key, value, "one of " + ", ".join(options))
        return value

    def boolean(self, key: str, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.error(key, value, "true or false")
        return value

    def integer(self, key: str, value: Any, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self.error(key, value, f"an integer >= {low}")
        return value

    def ratio(self, key: str, value: Any) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or not 0 < value < 1:
            raise self.error(key, value, "a number in (0, 1), e.g. 0.01 (YAML reads 5e-3 as text: write 0.005)")
        return float(value)

    def rule(self, key: str, value: Any, allow_auto: bool = False) -> str:
        from debiaslab.evaluation.selection import list_rules

        names = [*list_rules(), *(["auto"] if allow_auto else [])]
        if value not in names:
            raise self.error(key, value, "a selection rule: " + ", ".join(names))
        return value

    def nonempty_list(self, key: str, value: Any) -> list[Any]:
        if not isinstance(value, list) or not value:
            raise self.error(key, value, "a non-empty list")
        return value

    def str_list(self, key: str, value: Any) -> list[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(key, value, "a list of names")
        return value

    def int_list(self, key: str, value: Any, low: int) -> list[int]:
        values = [self.integer(f"{key}[{i}]", v, low) for i, v in enumerate(self.nonempty_list(key, value))]
        if len(set(values)) != len(values):
            raise self.error(key, value, "distinct values")
        return values
