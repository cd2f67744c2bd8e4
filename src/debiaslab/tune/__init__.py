"""Hyperparameter search on validation with Optuna (``debiaslab tune``): equal budgets, no test during a search.

Optuna is the optional ``tune`` extra (``pip install 'debiaslab[tune]'``); importing this package without it
fails with one clear error.
"""

from __future__ import annotations

import importlib.util

from debiaslab.errors import ConfigError

if importlib.util.find_spec("optuna") is None:
    raise ConfigError(
        "debiaslab tune needs the `optuna` package, which is not installed: pip install 'debiaslab[tune]'"
    )
