"""Keep, beside the deployed selection, the best weights under further selection rules.

Which selection rule is used moves reported numbers a lot, and a study of rules should not retrain once per rule:
every rule scores the same per-epoch validation metrics, so one training can remember, per rule, the epoch it
picks and that epoch's weights. The kept states are checkpointed whenever one changes, so a resumed stage ends
with the same selections as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from debiaslab.engine.checkpoint import clone_state, load_checkpoint, save_checkpoint
from debiaslab.evaluation.selection import get_rule
from debiaslab.utils import dist


class RuleKeeper:
    """Per rule, ``{"epoch", "score", "state"}`` of the best epoch so far (ties keep the earlier epoch).

    Args:
        rules: selection-rule names (duplicates ignored).
        path: checkpoint file (None: kept in memory only).
        resume: load the kept states from ``path`` when it exists.
        trainer: the trainer whose run the checkpoint belongs to (its ``save`` / ``load`` record and check the
            run's configuration hash); None: plain checksummed checkpoints.
    """

    def __init__(
        self, rules: Sequence[str], path: Path | None = None, resume: bool = False, trainer: Any = None
    ) -> None:
        self.rules = [get_rule(r) for r in dict.fromkeys(rules)]
        self.path = path
        self._save = trainer.save if trainer is not None else save_checkpoint
        self.best: dict[str, dict[str, Any]] = {}
        if resume and path is not None and path.exists():
            saved = (trainer.load(path) if trainer is not None else load_checkpoint(path))["best"]
            self.best = {name: kept for name, kept in saved.items() if name in {r.name for r in self.rules}}

    def __bool__(self) -> bool:
        return bool(self.rules)

    def update(self, epoch: int, metrics: Mapping[str, float] | None, modules: nn.Module) -> None:
        """Score ``metrics`` (the validation metrics of 1-based ``epoch``) under every rule and keep improvements."""
        if not self.rules or metrics is None:
            return
        state: dict[str, Any] | None = None
        for rule in self.rules:
            score = rule.score(metrics)
            kept = self.best.get(rule.name)
            if rule.is_better(score, None if kept is None else kept["score"]):
                state = clone_state(modules) if state is None else state  # one copy shared by the rules
                self.best[rule.name] = {"epoch": int(epoch), "score": score, "state": state}
        if state is not None and self.path is not None and dist.is_main_process():
            self._save(self.path, {"best": self.best})

    def summary(self) -> dict[str, dict[str, Any]]:
        """``{rule: {"epoch", "score"}}`` without the weights (for logs)."""
        return {name: {"epoch": k["epoch"], "score": k["score"]} for name, k in self.best.items()}
