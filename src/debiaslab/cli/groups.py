"""``debiaslab infer-groups``: pseudo-groups from a biased reference model, written to a groups file, with their
quality against the true groups where the dataset has attributes."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()


def add_parser(sub: Any, data_args: Any) -> None:
    p = sub.add_parser(
        "infer-groups",
        help="infer groups without attribute labels and write a groups file (for --groups)",
        description="Infer a pseudo-group for every training and validation example from a biased reference model "
        "(trained here, or a finished run's with --from), reading no attribute label; print the inference's quality "
        "where the dataset has attributes.",
    )
    p.add_argument("--method", help="the inferrer (see --list)")
    p.add_argument("--list", action="store_true", help="list the inferrers and their sources")
    p.add_argument("--dataset", help="a registered dataset")
    p.add_argument("--ratio", type=float, help="bias-conflicting ratio of the training set (Colored MNIST)")
    p.add_argument("--data-opt", action="append", metavar="KEY=VALUE", help="other dataset option")
    p.add_argument("--hp", action="append", metavar="KEY=VALUE", help="a setting of the inferrer or its reference")
    p.add_argument("--from", dest="reference_run", metavar="RUN", help="use a finished run's model as the reference")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference model's training (default 0)")
    p.add_argument("--out", help="groups file (default runs/groups/<dataset>-<options>/<method>/seed<seed>.npz)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    data_args(p)


def cmd_infer_groups(args: argparse.Namespace) -> int:
    from debiaslab.errors import ConfigError
    from debiaslab.inference.pipeline import default_groups_path, infer_groups
    from debiaslab.inference.registry import list_inferrers
    from debiaslab.run.train import parse_key_values

    if args.list:
        table = Table(title="group inferrers")
        for col in ("name", "what it does", "source"):
            table.add_column(col)
        for cls in list_inferrers():
            table.add_row(cls.name, cls.summary, cls.source)
        console.print(table)
        return 0
    for flag, value in (("--method", args.method), ("--dataset", args.dataset)):
        if not value:
            raise ConfigError(f"infer-groups needs {flag} (see `debiaslab infer-groups --list`)")
    options = parse_key_values(args.data_opt, "--data-opt", parse=False)
    if args.ratio is not None:
        options["ratio"] = args.ratio
    from debiaslab.data.registry import check_options

    options = check_options(args.dataset, options)
    out = args.out or str(default_groups_path(args.method, args.dataset, options, args.seed))
    meta = infer_groups(
        args.method,
        args.dataset,
        out,
        dataset_options=options,
        hparams=parse_key_values(args.hp, "--hp", parse=False),
        seed=args.seed,
        reference_run=args.reference_run,
        data_root=args.data_root,
        cache_dir=args.cache_dir,
        device=args.device,
        num_threads=args.threads,
    )
    print_quality(meta)
    console.print(f"groups file: {out} (sha256 {meta['sha256'][:12]})", highlight=False, soft_wrap=True)
    return 0


def print_quality(meta: dict[str, Any]) -> None:
    """The inference's quality per split (against the true groups where known) and the class x pseudo-group counts."""
    quality = meta.get("quality") or {}
    table = Table(title=f"{meta['inferrer']} on {meta['dataset']}: inferred minority vs the true groups")
    cols = ("split", "examples", "minority", "precision", "recall", "F1", "ARI", "NMI")
    for col in cols:
        table.add_column(col, justify="right")
    known = False
    for split, q in quality.items():
        known = known or "precision" in q
        table.add_row(
            split,
            str(q["n"]),
            f"{q.get('minority', round(q['minority_share'] * q['n']))} ({100 * q['minority_share']:.1f} %)",
            *(_fmt(q.get(k)) for k in ("precision", "recall", "f1", "ari", "nmi")),
        )
    console.print(table)
    if not known:
        console.print("the dataset has no attribute labels: the inference is not scored", highlight=False)
    counts = quality.get("train", {}).get("counts", [])
    if counts:
        table = Table(title="training examples per class x pseudo-group (0: the class's majority)")
        for col in ("class", "pseudo-group", "examples") + (("conflicting",) if "conflicting" in counts[0] else ()):
            table.add_column(col, justify="right")
        for row in counts:
            table.add_row(*(escape(str(row[k])) for k in ("class", "pseudo_group", "n", "conflicting") if k in row))
        console.print(table)


def _fmt(value: Any) -> str:
    return "–" if value is None or value != value else f"{value:.3f}"


COMMANDS = {"infer-groups": cmd_infer_groups}
