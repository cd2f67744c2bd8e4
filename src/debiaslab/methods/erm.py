"""ERM: minimise the mean cross-entropy. The baseline every method is judged against."""

from __future__ import annotations

from typing import ClassVar

from debiaslab.data.core import GroupDataset
from debiaslab.engine.trainer import Trainer
from debiaslab.methods.base import FitResult, Method
from debiaslab.methods.hparams import HparamTable
from debiaslab.methods.presets import CMNIST_MLP
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace
from debiaslab.methods.stages import erm_stage


@register_method("erm")
class ERM(Method):
    """Empirical risk minimisation with the engine's selection rule."""

    family = "baseline"

    rule_free_training: ClassVar[bool] = True  # only the last stage selects on validation

    summary = "plain cross-entropy training (baseline)"
    #: searched by `debiaslab tune`: learning rate and weight decay only
    search_space: ClassVar[SearchSpace] = dict(COMMON_SPACE)
    hparam_table: ClassVar[HparamTable] = {"colored_mnist": dict(CMNIST_MLP)}

    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        rule = self.selection_rule(val)
        stage, result = trainer.run_stage("erm", erm_stage(self, train, rule), train, val)
        return self.fit_result(train, stage.modules, [result], rule)
