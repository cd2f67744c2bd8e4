"""A suite plugin for the benchmark tests (``imports: [bench_plugin]``): a tiny registered dataset and two methods
that fail on purpose, one by raising and one by killing its worker process.

Imported by the test process and by every spawned worker (they inherit ``sys.path``, which holds tests/).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from debiaslab.data.core import DatasetBundle, GroupDataset
from debiaslab.data.registry import DATASETS, register_dataset
from debiaslab.engine.trainer import Trainer
from debiaslab.methods.base import FitResult, Method
from debiaslab.methods.registry import METHODS, register_method
from toys import make_split

TOY = "toy_bench"


if TOY not in DATASETS:

    @register_dataset(TOY, "three-class toy data with a spurious feature (benchmark tests)")
    def build_toy_bench(data_root: Path, cache_dir: Path, ratio: float = 0.05, n: int = 384) -> DatasetBundle:
        """Train at ``ratio`` conflicting; balanced validation and test splits."""
        kw: dict[str, Any] = {"n_classes": 3, "one_hot": True}
        return DatasetBundle(
            name=TOY,
            train=make_split(n, 0, "train", ratio, **kw),
            val=make_split(n // 2, 1, "val", 0.5, **kw),
            test=make_split(n // 2, 2, "test", 0.5, **kw),
            recipe={"dataset": TOY, "ratio": ratio, "n": n},
        )


if "bench_raise" not in METHODS:

    @register_method("bench_raise")
    class RaisingMethod(Method):
        """Raises in fit (a run that fails with a Python exception)."""

        def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
            raise RuntimeError("deliberate failure for the benchmark tests")

    @register_method("bench_crash")
    class CrashingMethod(Method):
        """Kills its own process in fit (a worker crash: no exception, no traceback)."""

        def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
            os._exit(3)


if "bench_flaky" not in METHODS:
    from debiaslab.methods.erm import ERM

    @register_method("bench_flaky")
    class FlakyMethod(ERM):
        """ERM whose first attempt in a run directory fails (a run that a resubmitted suite trains after all)."""

        def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
            marker = trainer.run_dir / "first-attempt" if trainer.run_dir is not None else None
            if marker is not None and not marker.exists():
                marker.write_text("failed once")
                raise RuntimeError("deliberate failure on the first attempt")
            return super()._fit(train, val, trainer)


if "bench_slow" not in METHODS:
    import time

    from debiaslab.methods.erm import ERM

    @register_method("bench_slow")
    class SlowMethod(ERM):
        """ERM that first waits ``$BENCH_SLOW_S`` seconds (default 2): a run or trial long enough to be killed."""

        def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
            time.sleep(float(os.environ.get("BENCH_SLOW_S", "2")))
            return super()._fit(train, val, trainer)
