"""A rich progress bar per stage, with the latest validation score in its description."""

from __future__ import annotations

import logging
import math
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = logging.getLogger(__name__)


class ProgressReporter:
    """Shows one bar per running stage (to stderr); silent when disabled or when stderr is not a terminal."""

    def __init__(self, enabled: bool = True) -> None:
        self.console = Console(stderr=True)
        self.enabled = enabled and self.console.is_terminal
        self._progress: Progress | None = None
        self._tasks: dict[str, Any] = {}

    def start(self, stage: str, total: int, completed: int = 0) -> None:
        if not self.enabled:
            return
        if self._progress is None:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=False,
            )
            self._progress.start()
        self._tasks[stage] = self._progress.add_task(stage, total=total, completed=completed)

    def advance(self, stage: str) -> None:
        if self._progress is not None:
            self._progress.advance(self._tasks[stage])

    def epoch_done(self, stage: str, epoch: int, epochs: int, record: dict[str, Any], rule: Any) -> None:
        val = record.get("val") or {}
        summary = f"{stage} epoch {epoch}/{epochs} loss {record.get('train_loss', float('nan')):.4f}"
        for key in ("unbiased", "worst_group", "accuracy"):
            value = val.get(key)
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                summary += f" val {key} {100 * value:.1f}"
                break
        log.debug(summary)
        if self._progress is not None:
            self._progress.update(self._tasks[stage], description=summary)

    def stop(self, stage: str) -> None:
        if self._progress is None:
            return
        self._tasks.pop(stage, None)
        if not self._tasks:
            self._progress.stop()
            self._progress = None
