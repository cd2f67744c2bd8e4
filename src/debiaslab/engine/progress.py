"""Training progress: a rich bar per stage on a terminal, else one log line per epoch (batch jobs, log files).

The line says the stage, epoch/epochs, training loss, the selection score of the epoch, the best score so far
(and its epoch) and the epoch's seconds, so a job's log shows how training goes without a terminal.
"""

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
    """Shows one bar per running stage on stderr when it is a terminal (and ``enabled``); otherwise logs one INFO
    line per epoch."""

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

    def epoch_done(self, stage: str, epoch: int, epochs: int, record: dict[str, Any], *scores: Any) -> None:
        """Show the finished epoch (``scores``: the rule, its score, the best so far, as :func:`epoch_line` takes
        them): in the bar's description, or as a log line when there is no bar."""
        line = epoch_line(stage, epoch, epochs, record, *scores)
        if self._progress is not None:
            self._progress.update(self._tasks[stage], description=_short(stage, epoch, epochs, record))
            log.debug(line)
        else:
            log.info(line)

    def stop(self, stage: str) -> None:
        if self._progress is None:
            return
        self._tasks.pop(stage, None)
        if not self._tasks:
            self._progress.stop()
            self._progress = None


def _fmt(score: float | None) -> str:
    return "n/a" if score is None or (isinstance(score, float) and math.isnan(score)) else f"{score:.4f}"


def epoch_line(
    stage: str,
    epoch: int,
    epochs: int,
    record: dict[str, Any],
    rule: Any,
    score: float | None = None,
    best: tuple[float | None, int] | None = None,
) -> str:
    """``stage erm epoch 3/10: train loss 0.2314 | val_unbiased 0.7120 | best 0.7200 (epoch 2) | 1.3 s``."""
    name = getattr(rule, "name", str(rule))
    parts = [f"stage {stage} epoch {epoch}/{epochs}: train loss {_fmt(record.get('train_loss'))}"]
    if name == "last":
        accuracy = (record.get("val") or {}).get("accuracy")
        parts.append(f"val accuracy {_fmt(accuracy)} (the last epoch is kept)" if accuracy is not None else "")
    else:
        parts.append(f"{name} {_fmt(score)}")
        if best is not None:
            parts.append(f"best {_fmt(best[0])} (epoch {best[1]})")
    parts.append(f"{record.get('time_s', 0.0):.1f} s")
    return " | ".join(p for p in parts if p)


def _short(stage: str, epoch: int, epochs: int, record: dict[str, Any]) -> str:
    """The bar's description: the stage, its epoch and the latest validation score."""
    val = record.get("val") or {}
    summary = f"{stage} epoch {epoch}/{epochs} loss {record.get('train_loss', float('nan')):.4f}"
    for key in ("unbiased", "worst_group", "accuracy"):
        value = val.get(key)
        if value is not None and not (isinstance(value, float) and math.isnan(value)):
            return summary + f" val {key} {100 * value:.1f}"
    return summary
