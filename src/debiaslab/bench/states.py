"""Where the runs of a suite stand (:class:`RunState`) and what a suite invocation did (:class:`BenchResult`).

Shared by the runner, which fills them, and the report, which reads them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from debiaslab.bench.suite import PlannedRun, Suite

#: every status a planned run can have, in the order summaries count them
STATUSES = ("finished", "skipped", "failed", "blocked", "mismatch", "todo", "resume")


@dataclass
class RunState:
    """Where one planned run stands: ``todo``, ``resume``, ``failed``, ``finished`` (now), ``skipped`` (finished
    before, same identity), ``mismatch`` (its directory holds another run) or ``blocked`` (a run it needs is
    missing or did not finish); ``detail`` says why."""

    run: PlannedRun
    status: str
    detail: str = ""
    time_s: float | None = None
    log: str | None = None  # the file to read about a failed run (its bench.log, error.txt or the job's log)

    def to_dict(self) -> dict[str, Any]:
        cfg = self.run.config
        return {
            "label": self.run.label,
            "method": cfg.method,
            "dataset": cfg.dataset,
            "dataset_options": cfg.dataset_options,
            "seed": cfg.seed,
            "run_dir": str(self.run.run_dir),
            "status": self.status,
            "detail": self.detail,
            "time_s": self.time_s,
            "log": self.log,
        }


@dataclass
class BenchResult:
    """What ``run_suite`` did: every run's state, and the report files written (none on a dry run)."""

    suite: Suite
    out: Path
    states: list[RunState]
    files: dict[str, Path] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    wall_s: float | None = None  # of the training phase of this invocation (None: nothing trained)

    def count(self, *statuses: str) -> int:
        return sum(s.status in statuses for s in self.states)
