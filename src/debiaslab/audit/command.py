"""``debiaslab audit RUN | --dataset D``: the command's options and their reading into an :class:`AuditConfig`.

Nothing heavy is imported here: the CLI builds its parser on every call.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

HELP = "a page of figures: group counts, the biased reference's hardest images, saliency, per-group accuracy"


def add_parser(sub: Any, data_args: Callable[[argparse.ArgumentParser], None]) -> None:
    audit = sub.add_parser("audit", help=HELP)
    audit.add_argument("run_dir", nargs="?", metavar="RUN", help="a finished run directory to audit")
    audit.add_argument("--dataset", help="audit a dataset alone (no run): its groups and its biased reference")
    audit.add_argument("--ratio", type=float, help="with --dataset: bias-conflicting ratio (Colored MNIST)")
    audit.add_argument("--data-opt", action="append", metavar="KEY=VALUE", help="with --dataset: a dataset option")
    audit.add_argument("--out", help="output folder (default <RUN>/audit, or runs/audit/<dataset>-<options>)")
    audit.add_argument("--groups", metavar="FILE", help="show a groups file's inferred groups (debiaslab infer-groups)")
    audit.add_argument(
        "--inferrer",
        default="error_set",
        help="the group inferrer giving the biased reference and its groups (default error_set: JTT's "
        "identification model and its right / wrong split)",
    )
    audit.add_argument(
        "--reference", metavar="RUN", help="use this finished run's model as the biased reference (none trained)"
    )
    audit.add_argument(
        "--reference-hp",
        action="append",
        metavar="KEY=VALUE",
        help="a setting of the inferrer or its reference model (error_set: identify_epochs, identify_lr, model, ...)",
    )
    audit.add_argument("--seed", type=int, help="seed of the reference and the samples (default: the run's, else 0)")
    audit.add_argument("--threads", type=int, help="torch CPU threads")
    audit.add_argument("--device", default="auto")
    data_args(audit)


def audit_config(args: argparse.Namespace) -> Any:
    """The :class:`~debiaslab.audit.core.AuditConfig` of the parsed command line."""
    from debiaslab.audit.core import AuditConfig
    from debiaslab.errors import ConfigError
    from debiaslab.run.train import parse_key_values

    options = parse_key_values(args.data_opt, "--data-opt", parse=False)
    if args.ratio is not None:
        options["ratio"] = args.ratio
    if args.run_dir is not None and (args.dataset is not None or options):
        raise ConfigError("audit takes a run directory or --dataset with its options, not both")
    if args.run_dir is None and args.dataset is None:
        raise ConfigError("audit needs a finished run directory or --dataset NAME")
    return AuditConfig(
        run_dir=args.run_dir,
        dataset=args.dataset,
        dataset_options=options,
        out=args.out,
        groups=args.groups,
        inferrer=args.inferrer,
        reference_run=args.reference,
        reference_hparams=parse_key_values(args.reference_hp, "--reference-hp", parse=False),
        seed=args.seed,
        device=args.device,
        num_threads=args.threads,
        data_root=args.data_root,
        cache_dir=args.cache_dir,
    )


def cmd_audit(args: argparse.Namespace) -> list[str]:
    """Run the audit; the lines for the CLI to print."""
    from debiaslab.audit.core import run_audit

    result = run_audit(audit_config(args))
    return [
        f"audit page: {result.page} ({len(result.figures)} figures, {result.facts['time_s']:.0f} s)",
    ]
