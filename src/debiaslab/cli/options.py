"""Command-line options shared by several commands, and the checks argparse cannot make alone: a whole number
of at least 1, ``--imports`` of plugin modules, and a shortcut (``--epochs``) that contradicts the same
hyperparameter given with ``--hp``."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from debiaslab.errors import ConfigError

#: ``--epochs`` and its kind: a flag that sets one hyperparameter
SHORTCUTS: dict[str, str] = {
    "epochs": "--epochs",
    "batch_size": "--batch-size",
    "lr": "--lr",
    "selection": "--selection",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse's own errors (a bad flag, a value of the wrong type) as one ``error:`` line with status 2, like
    every other error of the command line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (``--threads 0`` is refused in one line)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def add_imports(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--imports",
        nargs="+",
        metavar="MODULE",
        help="plugin modules (registering datasets, models or methods) imported first (and in every worker)",
    )


def import_plugins(modules: Sequence[str] | None) -> None:
    """Import ``--imports``; a module that does not import is one error line."""
    import importlib

    for module in modules or ():
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"--imports {module}: cannot import it ({exc}); is its folder on PYTHONPATH?") from exc


def with_shortcuts(hparams: dict[str, Any], given: Mapping[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """``hparams`` with the shortcut flags' values (``flags``: hyperparameter -> value or None) on top; a flag that
    contradicts the same hyperparameter in ``given`` (the ``--hp`` pairs) is a ConfigError naming both."""
    out = dict(hparams)
    for name, value in flags.items():
        if value is None:
            continue
        if name in given and str(given[name]).strip() != str(value):
            raise ConfigError(f"{SHORTCUTS[name]} {value} and --hp {name}={given[name]} both set {name}; give it once")
        out[name] = value
    return out


def run_places(args: argparse.Namespace) -> dict[str, Any]:
    """What every command that trains passes on from its options: where data and caches live, and progress."""
    return {"data_root": args.data_root, "cache_dir": args.cache_dir, "progress": not args.no_progress}


def from_args(args: argparse.Namespace, *names: str) -> dict[str, Any]:
    """``{name: args.name}`` for options passed on unchanged under their own names."""
    return {name: getattr(args, name) for name in names}
