"""``debiaslab tune``: one method (search, then the chosen configuration on seeds) or a tuning suite."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path
from typing import Any

from debiaslab.cli.options import from_args, run_places
from debiaslab.errors import ConfigError
from debiaslab.methods.registry import get_method
from debiaslab.run.train import parse_key_values
from debiaslab.tune.final import Chosen, TuneLines, chosen_hparams, final_suite, train_chosen, unfinished
from debiaslab.tune.search import SearchResult, run_search
from debiaslab.tune.space import load_space_file, resolve_space
from debiaslab.tune.study import SearchSpec
from debiaslab.tune.values import short_value

log = logging.getLogger(__name__)

#: the options of how every trial and final run trains, passed on as they are
ENGINE = ("threads", "device", "precision")


def default_rule(
    dataset: str, options: dict[str, Any], data_root: str | None, cache_dir: str | None, inferred: bool = False
) -> str:
    """``val_worst_group`` when the validation split has groups (its own, or ``inferred`` ones), else
    ``val_worst_class``."""
    from debiaslab.data.registry import build_dataset

    if inferred:
        return "val_worst_group"

    bundle = build_dataset(dataset, data_root, cache_dir, **options)
    return "val_worst_group" if bundle.val.has_attrs else "val_worst_class"


def tune_from_args(args: argparse.Namespace) -> TuneLines:
    """Run what the command line asks; returns the lines to print (tables and where the reports are) and how many
    final runs did not finish. Everything the final runs need is checked before the search starts."""
    _check_ints(args)
    from debiaslab.bench.suite import import_plugins

    import_plugins(args.imports or ())
    if args.suite:
        if args.groups or args.groups_hp:
            raise ConfigError("--groups is for one method; a tuning suite names each entry's groups in its file")
        from debiaslab.tune.suite import load_tune_suite
        from debiaslab.tune.suite_runner import run_tune_suite

        suite = load_tune_suite(args.suite)
        passed = from_args(args, "workers", "only", "no_final", "storage")
        return run_tune_suite(suite, args.out, **passed, **run_places(args))
    if not args.dataset:
        raise ConfigError("--dataset is required with --method")
    options = parse_key_values(args.data_opt, "--data-opt")
    if args.ratio is not None:
        options["ratio"] = args.ratio
    method_cls = get_method(args.method)
    overrides = load_space_file(args.space) if args.space else None
    space, fixed = resolve_space(
        method_cls, overrides, parse_key_values(args.hp, "--hp"), source=f"space file {args.space}"
    )
    if args.final_ratios and not args.no_final:
        check_final_ratios(args.dataset, options, args.final_ratios)
    groups = groups_option(args.groups, args.groups_hp)
    rule = args.rule or default_rule(args.dataset, options, args.data_root, args.cache_dir, groups is not None)
    named = {"dataset_options": options, "fixed": fixed, "seed": args.search_seed, "study_name": args.study}
    passed = from_args(args, "sampler", "pruner", "storage", "data_root", "cache_dir", *ENGINE)
    named["imports"] = tuple(args.imports or ())
    named["groups"] = groups
    spec = SearchSpec(method_cls.name, args.dataset, space, rule, args.trials, args.epochs_cap, **named, **passed)
    spec.out = args.out or str(Path("runs") / "tune" / folder_name(spec.name))
    result = run_search(spec, workers=args.workers)
    lines = TuneLines(search_lines(result))
    if args.no_final:
        return lines
    best = result.best.get(rule)
    if best is None:
        lines.append(f"no complete trial under {rule}: no final runs")
        return lines
    ratios = args.final_ratios or ([options["ratio"]] if "ratio" in options else None)
    chosen = [Chosen(spec.method, spec.method, chosen_hparams(fixed, best, spec.epochs, rule), spec.groups)]
    suite = final_suite(
        spec.name,
        rule,
        chosen,
        dataset=spec.dataset,
        options=options,
        ratios=ratios,
        seeds=args.seeds,
        **from_args(args, *ENGINE),
        description=f"{spec.method} tuned by {rule} ({spec.trials} trials, cap {spec.epochs} epochs)",
        imports=spec.imports,
    )
    bench = train_chosen(
        suite,
        Path(spec.out) / "final" / rule,
        workers=args.workers,
        **run_places(args),
    )
    lines += [bench.tables.get("results", ""), f"final runs: {bench.out / 'report.md'}"]
    lines.failed = unfinished(bench)
    if lines.failed:
        lines.append(f"{lines.failed} final run(s) did not finish; see {bench.out / 'report.md'}")
    return lines


def groups_option(name: str | None, settings: list[str] | None) -> dict[str, Any] | None:
    """``--groups INFERRER [--groups-hp K=V ...]`` as a bench suite's groups entry, checked before any trial."""
    from debiaslab.inference.registry import get_inferrer, list_inferrers

    if name is None:
        if settings:
            raise ConfigError("--groups-hp sets an inferrer's settings; give the inferrer with --groups INFERRER")
        return None
    known = sorted(cls.name for cls in list_inferrers())
    if name not in known:
        raise ConfigError(f"--groups {name!r}: expected a registered inferrer ({', '.join(known)})")
    hparams = parse_key_values(settings, "--groups-hp")
    get_inferrer(name).check_hparams(hparams)
    return {"inferrer": name, "hparams": hparams, "label": name}


def check_final_ratios(dataset: str, options: dict[str, Any], ratios: list[float]) -> None:
    """Every ``--final-ratios`` value is a ratio in (0, 1) that the dataset takes (before any trial trains)."""
    from debiaslab.data.registry import check_options

    for ratio in ratios:
        if not 0 < ratio < 1:
            raise ConfigError(f"--final-ratios {ratio:g} is outside (0, 1); expected bias-conflicting fractions")
        check_options(dataset, {**options, "ratio": ratio})


def folder_name(name: str) -> str:
    """``name`` as one folder name: characters other than letters, digits and ``_ . + = -`` become ``_`` (a dataset
    option such as a file path must not put the default search folder elsewhere)."""
    safe = re.sub(r"[^A-Za-z0-9_.+=-]", "_", name)
    return safe if safe[:1].isalnum() else f"s{safe}"


def search_lines(result: SearchResult) -> list[str]:
    spec, counts = result.spec, result.counts
    lines = [
        f"search {spec.name}: {counts['done']}/{spec.trials} trials done ({counts['complete']} complete, "
        f"{counts['pruned']} pruned, {counts['failed']} failed)"
        + (f" in {result.wall_s:.0f} s" if result.wall_s is not None else "")
    ]
    for rule, best in result.best.items():
        values = ", ".join(f"{k}={short_value(v)}" for k, v in best["params"].items())
        lines.append(f"  {rule}: trial {best['trial']} (val {best['score']:.4f}): {values}")
    if result.tie_note():
        lines.append(f"  note: {result.tie_note()}")
    lines.append(f"report: {Path(spec.out) / 'search.md'}")
    return lines


def _check_ints(args: argparse.Namespace) -> None:
    for name in ("trials", "epochs_cap", "workers", "threads"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {value} must be >= 1")
    seeds = getattr(args, "seeds", None) or []
    if any(seed < 0 for seed in seeds) or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {' '.join(map(str, seeds))}: expected distinct seeds >= 0")
