"""Command line: ``debiaslab train | evaluate | predict | export | bench | tune | report | datasets | methods``.

Problems with the input (unknown names, missing files, bad values, a finished run directory) are printed as one
line starting with ``error:`` and exit with status 2; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table

from debiaslab.audit import command as audit_command
from debiaslab.cli import deploy as cli_deploy
from debiaslab.cli import groups as cli_groups
from debiaslab.cli.options import (
    OneLineParser,
    add_imports,
    from_args,
    import_plugins,
    positive_int,
    run_places,
    with_shortcuts,
)
from debiaslab.errors import DebiasLabError

console = Console()
err_console = Console(stderr=True)


def _shipped(package: str) -> str:
    from debiaslab.utils.paths import shipped_suites

    return ", ".join(shipped_suites(package))


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="debiaslab", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"debiaslab {_version()}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train one method on one dataset and write a run directory")
    train.add_argument(
        "--config",
        metavar="FILE",
        help="a run file in the schema of a run's config.yaml; the options below override it",
    )
    train.add_argument("--method", help="a registered method (see `debiaslab methods`)")
    train.add_argument("--dataset", help="a registered dataset (see `debiaslab datasets`)")
    train.add_argument("--ratio", type=float, help="bias-conflicting ratio of the training set (Colored MNIST)")
    train.add_argument("--protocol", help="dataset protocol: default (select on validation) or paper")
    train.add_argument("--data-opt", action="append", metavar="KEY=VALUE", help="other dataset option")
    train.add_argument("--seed", type=int, help="random seed (default 0)")
    train.add_argument("--epochs", type=int, help="shortcut for --hp epochs=N")
    train.add_argument(
        "--batch-size", type=int, help="shortcut for --hp batch_size=N (the global batch under torchrun)"
    )
    train.add_argument("--lr", type=float, help="shortcut for --hp lr=X")
    train.add_argument("--selection", help="selection rule: val_worst_group, val_unbiased, val_worst_class, ...")
    train.add_argument("--hp", action="append", metavar="KEY=VALUE", help="a method hyperparameter")
    train.add_argument("--out", help="run directory (default runs/<dataset>-<options>/<method>/seed<seed>)")
    train.add_argument("--device", help="auto (default), cpu, cuda, cuda:1, ...")
    train.add_argument("--precision", choices=["fp32", "bf16"], help="default fp32")
    train.add_argument("--threads", type=positive_int, help="torch CPU threads")
    again = train.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    again.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    train.add_argument("--no-progress", action="store_true")
    train.add_argument(
        "--groups", metavar="FILE", help="train and select on a groups file's inferred groups (infer-groups)"
    )
    add_imports(train)
    cli_deploy.add_tracking_args(train)
    _data_args(train)

    evaluate = sub.add_parser(
        "evaluate", help="re-evaluate a finished run directory (or score it on another dataset or split)"
    )
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--device", default="auto")
    cli_deploy.add_evaluate_args(evaluate)
    _data_args(evaluate)
    cli_deploy.add_parsers(sub, _data_args)

    report = sub.add_parser(
        "report",
        help="summarise finished run directories: 95 %% intervals over seeds and test examples, labels read, and a "
        "mark for the runs' premise checks (runs that recorded none are re-scored from their final.json)",
    )
    report.add_argument("roots", nargs="+", help="folders searched for run directories (final.json)")
    report.add_argument("--split", default="test", choices=["val", "test"])
    report.add_argument("--pivot", metavar="METRIC", help="methods x ratios table of one metric, e.g. unbiased")
    report.add_argument("--paper", action="store_true", help="with --pivot: add published CMNIST numbers")
    report.add_argument(
        "--reference",
        metavar="METHOD",
        default="erm",
        help="paired differences with this method's runs of the same seeds (default erm; 'none' for no column)",
    )

    bench = sub.add_parser("bench", help="run a benchmark suite (methods x datasets x ratios x seeds) and report it")
    bench.add_argument("suite", help=f"a shipped suite ({_shipped('bench')}) or a path to a suite YAML file")
    bench.add_argument("--out", help="output folder (default runs/bench/<suite>)")
    bench.add_argument("--workers", type=int, help="runs at a time (default min(2, cpu count))")
    bench.add_argument(
        "--executor",
        default="process",
        choices=["process", "ray", "slurm"],
        help="process pool (default), Ray ($RAY_ADDRESS or a local Ray), or Slurm through submitit",
    )
    bench.add_argument("--gpus-per-run", type=int, default=0, help="GPUs of each run (ray, slurm; default 0)")
    bench.add_argument("--slurm-partition", help="Slurm partition (default: the cluster's)")
    bench.add_argument("--slurm-time", type=int, default=240, metavar="MIN", help="time limit per job (default 240)")
    bench.add_argument(
        "--slurm-array-parallelism", type=int, default=64, metavar="N", help="jobs of the array running at once"
    )
    bench.add_argument("--slurm-mem-gb", type=int, help="memory per job (default: the partition's)")
    bench.add_argument("--slurm-folder", help="submitit's job files and logs (default <out>/slurm)")
    bench.add_argument("--only", nargs="+", metavar="METHOD", help="only these methods (labels or names)")
    bench.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="only the runs of these seeds")
    bench.add_argument("--dry-run", action="store_true", help="list the runs and their status; train nothing")
    bench.add_argument("--report-only", action="store_true", help="aggregate finished runs; train nothing")
    bench.add_argument("--no-progress", action="store_true")
    _data_args(bench)

    _tune_parser(sub)
    cli_groups.add_parser(sub, _data_args)
    audit_command.add_parser(sub, _data_args)

    add_imports(sub.add_parser("datasets", help="list registered datasets and their options"))
    methods = sub.add_parser("methods", help="list registered methods by family and the labels they need")
    methods.add_argument("name", nargs="?", help="one method: each preset's hyperparameter values and sources")
    methods.add_argument("--dataset", help="with NAME: only the preset for this dataset")
    methods.add_argument(
        "--by",
        choices=("family", "labels"),
        default="family",
        help="group the list by method family (default) or by the labels a method trains with",
    )
    methods.add_argument("--format", choices=("table", "json"), default="table", help="output format")
    add_imports(methods)
    return parser


def _tune_parser(sub: Any) -> None:
    tune = sub.add_parser(
        "tune",
        help="search hyperparameters on validation (Optuna), then train the chosen configuration on seeds",
    )
    what = tune.add_mutually_exclusive_group(required=True)
    what.add_argument("--method", help="the method to tune (see `debiaslab methods`)")
    what.add_argument("--suite", help=f"a shipped tuning suite ({_shipped('tune')}) or a YAML file; tunes every method")
    tune.add_argument("--dataset", help="the dataset searched on (with --method)")
    tune.add_argument("--ratio", type=float, help="bias-conflicting ratio searched on (Colored MNIST)")
    tune.add_argument("--data-opt", action="append", metavar="KEY=VALUE", help="other dataset option")
    tune.add_argument("--hp", action="append", metavar="KEY=VALUE", help="a fixed (not searched) hyperparameter")
    tune.add_argument("--space", help="YAML file overriding the method's search space (name: distribution)")
    tune.add_argument(
        "--groups",
        metavar="INFERRER",
        help="train and select every trial and final run on groups inferred by INFERRER (see `debiaslab "
        "infer-groups`): once for the search's seed, once per ratio and seed for the final runs",
    )
    tune.add_argument("--groups-hp", action="append", metavar="KEY=VALUE", help="a setting of the --groups inferrer")
    tune.add_argument("--trials", type=int, default=20, help="finished trials in the budget (default 20)")
    tune.add_argument("--epochs-cap", type=int, default=10, help="epochs of every trial (default 10)")
    tune.add_argument(
        "--rule",
        help="validation rule optimised (default val_worst_group, or val_worst_class "
        "when validation has no group labels)",
    )
    tune.add_argument("--sampler", default="tpe", choices=["tpe", "random"])
    tune.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"])
    tune.add_argument(
        "--storage", help="Optuna storage: a database URL or journal:PATH (default: sqlite file study.db in --out)"
    )
    tune.add_argument("--study", help="study name in the storage (default <method>-<dataset>-<options>)")
    tune.add_argument("--out", help="search directory (default runs/tune/<study>; suites: runs/tune/<suite>)")
    tune.add_argument("--workers", type=int, default=1, help="processes running trials (and final runs) at once")
    tune.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of the final runs")
    tune.add_argument("--final-ratios", type=float, nargs="+", help="ratios of the final runs (default: --ratio)")
    tune.add_argument("--no-final", action="store_true", help="search only; train no final runs")
    tune.add_argument("--search-seed", type=int, default=0, help="seed of the sampler and of every trial")
    tune.add_argument("--only", nargs="+", metavar="METHOD", help="with --suite: only these methods")
    add_imports(tune)
    tune.add_argument("--threads", type=positive_int, default=1, help="torch CPU threads per trial (default 1)")
    tune.add_argument("--device", default="auto")
    tune.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    tune.add_argument("--no-progress", action="store_true")
    _data_args(tune)


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", help="where datasets live (default $DEBIASLAB_DATA, then the user cache)")
    p.add_argument("--cache-dir", help="where derived datasets are cached (default $DEBIASLAB_CACHE, then ...)")


def train_config(args: argparse.Namespace) -> Any:
    """The :class:`~debiaslab.run.train.RunConfig` of ``debiaslab train``: the run file of ``--config`` (if any), with
    the command line's options on top."""
    from debiaslab.errors import ConfigError
    from debiaslab.run.config_file import read_run_file
    from debiaslab.run.train import RunConfig, parse_key_values

    base = read_run_file(args.config) if args.config else None
    run = base.run if base is not None else None
    dataset_options = dict(run.dataset_options) if run else {}
    dataset_options.update(parse_key_values(args.data_opt, "--data-opt", parse=False))
    if args.ratio is not None:
        dataset_options["ratio"] = args.ratio
    if args.protocol is not None:
        dataset_options["protocol"] = args.protocol
    hparams = dict(run.hparams) if run else {}
    given = parse_key_values(args.hp, "--hp", parse=False)
    flags = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "selection": args.selection}
    hparams = with_shortcuts({**hparams, **given}, given, flags)
    method = args.method or (run.method if run else None)
    dataset = args.dataset or (run.dataset if run else None)
    for flag, value in (("--method", method), ("--dataset", dataset)):
        if not value:
            raise ConfigError(f"train needs {flag} (or a --config run file that names it)")

    def pick(cli: Any, recorded: Any, default: Any) -> Any:
        return cli if cli is not None else (recorded if recorded is not None else default)

    return RunConfig(
        method=method,
        dataset=dataset,
        dataset_options=dataset_options,
        hparams=hparams,
        seed=pick(args.seed, run.seed if run else None, 0),
        device=pick(args.device, base.device if base else None, "auto"),
        precision=pick(args.precision, run.precision if run else None, "fp32"),
        out=args.out,
        overwrite=args.overwrite,
        resume=args.resume,
        num_threads=args.threads,
        tensorboard=args.tensorboard,
        mlflow=args.mlflow,
        groups=args.groups or (run.groups if run else None),
        groups_recipe=None if args.groups else (run.groups_recipe if run else None),
        **run_places(args),
    )


def cmd_train(args: argparse.Namespace) -> int:
    from debiaslab.run.train import checked_config, train_run

    import_plugins(args.imports)
    cfg = checked_config(train_config(args))
    from debiaslab.utils import dist

    dist.init_from_env()  # launched by torchrun: one process per device, gradients averaged across them
    if not dist.is_main_process():  # rank 0 logs, writes and reports; the others only say what went wrong
        logging.getLogger().setLevel(logging.ERROR)
    final = train_run(cfg)
    if not final:  # not rank 0
        return 0
    from debiaslab.evaluation.metrics import EvalReport

    report = EvalReport.from_dict(final["test_report"])
    console.print(report.render_auto())
    console.print(
        f"[bold]{final['method']}[/] test ({final['protocol']} protocol, selected on {final['selection_split']} "
        f"by {final['selection']}): {report.summary_line()}",
        soft_wrap=True,
    )
    console.print(f"run directory: {cfg.run_dir()}", soft_wrap=True, highlight=False)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    return cli_deploy.cmd_evaluate(args)


def cmd_report(args: argparse.Namespace) -> int:
    from debiaslab.bench.aggregate import add_differences, find_runs, markdown_table, summarise, table_notes
    from debiaslab.bench.stats import Stats

    records = find_runs(args.roots, rescore=True)
    if not records:
        err_console.print(f"no finished runs under {', '.join(args.roots)}")
        return 1
    stats = Stats()
    rows = summarise(records, split=args.split, stats=stats)
    if args.reference != "none" and args.split == "test":
        metrics = (
            (args.pivot,) if args.pivot in ("unbiased", "worst_group", "conflicting") else ("unbiased", "worst_group")
        )
        add_differences(rows, args.reference, stats, metrics)
    if args.pivot:
        from debiaslab.bench.aggregate import pivot_markdown
        from debiaslab.bench.paper import cmnist_reference

        text = pivot_markdown(rows, args.pivot, reference=cmnist_reference if args.paper else None)
    else:
        text = markdown_table(rows)
    console.print(text + "\n\n" + table_notes(rows), markup=False, highlight=False, soft_wrap=True)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from debiaslab.bench.executors import SlurmOptions
    from debiaslab.bench.runner import STATUSES, run_suite
    from debiaslab.bench.suite import load_suite

    suite = load_suite(args.suite)
    slurm = SlurmOptions(  # in the order of its fields: partition, time, GPUs, array parallelism, memory, folder
        args.slurm_partition, args.slurm_time, args.gpus_per_run, args.slurm_array_parallelism, args.slurm_mem_gb,
        args.slurm_folder,
    )  # fmt: skip
    passed = from_args(args, "workers", "executor", "only", "seeds", "dry_run", "report_only", "gpus_per_run")
    result = run_suite(suite, args.out, slurm=slurm, **passed, **run_places(args))
    if args.dry_run:
        table = Table(title=f"suite {suite.name}: {len(result.states)} runs under {result.out}")
        for col in ("run", "status", "directory"):
            table.add_column(col)
        for state in result.states:
            status = {"finished": "skip (finished)", "todo": "train", "resume": "resume", "failed": "retry (failed)"}
            text = status.get(state.status, state.status) + (f": {state.detail}" if state.detail else "")
            table.add_row(state.run.describe(), text, str(state.run.run_dir))
        console.print(table)
        return 0
    console.print(result.tables.get("results", ""), markup=False, highlight=False, soft_wrap=True)
    counts = {k: result.count(k) for k in STATUSES}
    console.print(
        f"suite {suite.name}: "
        + ", ".join(f"{n} {k}" for k, n in counts.items() if n)
        + (f" in {result.wall_s:.0f} s" if result.wall_s is not None else "")
    )
    console.print(f"report: {result.out / 'report.md'}")
    return 1 if counts["failed"] or counts["mismatch"] or counts["blocked"] else 0


def cmd_tune(args: argparse.Namespace) -> int:
    from debiaslab.tune.command import tune_from_args

    lines = tune_from_args(args)
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 1 if lines.failed else 0


def cmd_audit(args: argparse.Namespace) -> int:
    for line in audit_command.cmd_audit(args):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from debiaslab.data.registry import list_datasets

    import_plugins(args.imports)
    table = Table(title="datasets")
    table.add_column("name", no_wrap=True)  # what a user types next: never cut
    for col in ("description", "options (defaults)"):
        table.add_column(col, overflow="fold")  # folded, not cut with an ellipsis
    for spec in list_datasets():
        opts = ", ".join(f"{k}={v!r}" for k, v in spec.options().items())
        table.add_row(spec.name, spec.description, opts)
    console.print(table)
    return 0


def cmd_methods(args: argparse.Namespace) -> int:
    import json
    from collections import Counter

    from debiaslab.methods.catalog import (
        family_of,
        grouped,
        label_needs,
        method_card,
        selection_summary,
        training_labels,
    )
    from debiaslab.methods.registry import get_method, list_methods

    import_plugins(args.imports)
    if args.name is not None:
        from debiaslab.data.registry import dataset_name

        card = method_card(get_method(args.name), dataset_name(args.dataset) if args.dataset else None)
        if args.format == "json":
            console.print_json(json.dumps(card, default=str))
            return 0
        console.print(f"[bold]{card['name']}[/]: {escape(card['summary'])}\nlabels: {escape(card['labels'])}")
        for dataset, values in card["presets"].items():
            table = Table(title=f"{card['name']} on {dataset}", title_justify="left")
            for col in ("hyperparameter", "value", "source"):
                table.add_column(col, overflow="fold")  # a long value or source folds, never cut
            defaults = []
            for name, entry in values.items():
                if entry["source"] == "default":
                    defaults.append(f"{name}={entry['value']!r}")
                else:
                    table.add_row(name, escape(repr(entry["value"])), escape(entry["source"]))
            console.print(table)
            console.print(f"  class defaults (no table sets them): {escape(', '.join(defaults))}", highlight=False)
        return 0
    methods = list_methods()
    if args.format == "json":
        rows = [
            {
                "name": m.name,
                "summary": m.summary,
                "family": family_of(m),
                "training_labels": training_labels(m),
                "labels": label_needs(m),
            }
            for m in methods
        ]
        console.print_json(json.dumps(rows))
        return 0
    by_family = args.by == "family"
    selections = {m.name: selection_summary(m) for m in methods}
    usual = Counter(selections.values()).most_common(1)[0][0] if methods else ""
    groups = grouped(methods, args.by)
    heading = "family" if by_family else "training labels"
    other = "training labels" if by_family else "family"
    name_width = max((len(m.name) for m in methods), default=4)

    def table_of(title: str, sections: list, with_heading: bool) -> Table:
        table = Table(title=title, title_justify="left" if not with_heading else "center")
        for col in ([heading] if with_heading else []) + ["name", "what it does", other, "selection if unusual"]:
            if col == "name":  # a name is what a user types next: never cut, whatever the terminal's width
                table.add_column(col, no_wrap=True, min_width=name_width)
            else:
                table.add_column(col, overflow="fold")  # folded, not cut with an ellipsis
        for group, _, members in sections:
            table.add_section()
            for i, method in enumerate(members):
                summary = method.summary or (method.__doc__ or "").split("\n")[0]
                label = training_labels(method) if by_family else family_of(method)
                selection = selections[method.name]
                cells = [escape(summary), label, "" if selection == usual else escape(selection)]
                table.add_row(*([escape(group) if i == 0 else ""] if with_heading else []), method.name, *cells)
        return table

    whole = table_of(f"methods by {'family' if by_family else 'the labels they train with'}", groups, True)
    unbounded = console.options.update(max_width=10_000)  # the width it needs, not the one it is given
    if Measurement.get(console, unbounded, whole).minimum <= console.width:
        console.print(whole)
    else:  # too narrow for one table without breaking words: one table per group, its name as the title
        for section in groups:
            console.print(table_of(f"[bold]{heading}: {escape(section[0])}[/]", [section], False))
    for group, description, _ in groups:
        console.print(f"  [bold]{escape(group)}[/]: {escape(description)}")
    console.print(
        f"  usual selection: {escape(usual)} (auto = val_worst_group when validation has attribute labels, else the"
        " label-free val_worst_class). `debiaslab methods NAME` shows every preset with its sources.",
        highlight=False,
    )
    return 0


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "bench": cmd_bench,
    "tune": cmd_tune,
    "report": cmd_report,
    "audit": cmd_audit,
    "datasets": cmd_datasets,
    "methods": cmd_methods,
    **cli_deploy.COMMANDS,
    **cli_groups.COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # a usage error, already printed as one line; --help and --version exit 0
        if not exc.code:
            raise
        return int(exc.code)
    setup_logging(logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO))
    try:
        return COMMANDS[args.command](args)
    except DebiasLabError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2
    except (OSError, RuntimeError) as exc:  # a full disk wherever a write was not through debiaslab.utils.io
        from debiaslab.utils.io import disk_full_error

        full = disk_full_error(getattr(exc, "filename", None) or "a file", exc)
        if full is None:
            raise
        err_console.print(f"[red]error:[/] {escape(str(full))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        if args.command in ("bench", "tune"):
            err_console.print("interrupted; run the same command again to resume (finished runs are kept)")
        else:
            err_console.print("interrupted; continue the run with the same command plus --resume")
        return 130


class CurrentStderrHandler(logging.StreamHandler):
    """A stream handler that writes to ``sys.stderr`` as it is when a message is logged, not when the handler
    was made (a program that embeds the CLI, or a test, may swap or close the stream in between)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def setup_logging(level: int) -> None:
    """Rich log lines on a terminal; on anything else (a batch job's log file, a pipe) plain lines with a time
    stamp and the level, never wrapped, one per message."""
    if err_console.is_terminal:
        handler: logging.Handler = RichHandler(console=err_console, show_path=False, show_time=False)
        fmt = "%(message)s"
    else:
        handler = CurrentStderrHandler()
        fmt = "%(asctime)s %(levelname)s %(message)s"
    handler.setFormatter(logging.Formatter(fmt, datefmt="%Y-%m-%d %H:%M:%S"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


def _version() -> str:
    from debiaslab import __version__

    return __version__


def run(argv: Any = None) -> None:
    sys.exit(main(argv))
