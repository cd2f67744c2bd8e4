"""BAM — Bias AMplification (Li, Liu, Hu; TMLR 2024).

Stage ``amplify``: the network is trained together with one auxiliary logit vector b_i ∈ R^K per training
example (indexed by the dataset index, initialised to 0). Training logits are ``f(x_i) + λ·b_i``; b lets the
hard (bias-conflicting) examples be fitted by their auxiliary variables instead of by the network, so f relies
even more on the spurious cue. b never enters evaluation. The loss is the squared loss against one-hot labels,
summed over classes and averaged over the batch as in the official code (CE as an option). Error set: the
examples the epoch-T network (without b) misclassifies, from a clean eval pass.
Stage ``upweight``: continue training the same network with a fresh optimiser and CE, every error example
listed μ times per epoch (upsampling); a fresh network (JTT-like) is an option. No group labels are needed for
training; with none on validation either, the epoch is selected by the smallest ClassDiff (gap between class
accuracies), so BAM runs end to end without group labels.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.checkpoint import clone_state
from debiaslab.engine.optim import OptimConfig
from debiaslab.engine.sampling import IndexListSampler, UniformSampler, upsample_indices
from debiaslab.engine.stage import Stage, StageResult, StepContext
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError
from debiaslab.evaluation.health import Check
from debiaslab.evaluation.selection import get_rule, select_best
from debiaslab.methods.base import FitResult, Method
from debiaslab.methods.hparams import Default, HparamTable, TrainHparams, one_of
from debiaslab.methods.premises import error_set_health
from debiaslab.methods.presets import CMNIST_MLP
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, intrange, loguniform
from debiaslab.methods.stages import error_set, error_set_quality, log_error_set, method_ce_stage, optim_with

log = logging.getLogger(__name__)

BAM_SPEC = "BAM (Li, Liu, Hu, TMLR 2024), official code, Waterbirds setting"
BAM_T = "BAM official code: stageOne_T=20 trains epochs 0..20, i.e. 21 completed epochs"
BAM_README = "BAM official README, sample Waterbirds command (--stageTwo_epochs 150)"
BAM_META_CUB = "BAM official run_metaScript.py, CUB branch (stageOne_lr 1e-5, stageOne_wd 0, batch 64)"
BAM_META_CELEBA = "BAM official run_metaScript.py, CelebA branch (lr 1e-5 both stages, wd 0 / 0.1, batch 128)"
BAM_META_CELEBA_EPOCHS = (
    "BAM official run_metaScript.py: --stageTwo_epochs default 30, which the CelebA branch keeps (the README's 150 "
    "is the Waterbirds command)"
)
BAM_META_CELEBA_LAMBDA = (
    "BAM official run_metaScript.py: --aux_lambda default 0.5, which the CelebA branch keeps; the release publishes "
    "no CelebA command, so the value the paper ran could not be checked: set aux_lambda"
)
BAM_META_CELEBA_T = (
    "BAM official run_metaScript.py: --stageOne_epochs default 21 (epochs 0..20), which the CelebA branch keeps; "
    "--stageOne_T has no default and no CelebA value is published, so T is the last of them: set amplify_epochs"
)
BAM_CELEBA_MU = (
    "not published for CelebA (run_metaScript.py's --up_weights has no default; generate_downstream.py searches "
    "20-200 for CUB and CelebA): the Waterbirds command's 140, unverified for CelebA: set mu"
)
OURS_SUMMED_LOSS = (
    "ours: lr 0.05 tuned with the class-averaged squared loss, divided by K = 10 for the official class-summed "
    "loss (the same SGD steps; stage 2 keeps 0.05)"
)
BAM_OPTIMIZER = "BAM (Li, Liu, Hu 2024): momentum-SGD for the network and the auxiliary variables"
OURS_TUNED = (
    "ours: best validation unbiased accuracy of 15 BAM runs on Colored MNIST 1 %, seed 0 "
    "(benchmarks/results/cmnist-2026-11-24/bam-tune)"
)
OURS_SMOKE = "ours: SGD lr for the LfF MLP, checked to learn in a 2-epoch Colored MNIST smoke run"

AMPLIFY_LOSSES = ("mse", "ce")
STAGE2_INITS = ("continue", "fresh")


@dataclass
class BAMHparams(TrainHparams):
    """BAM's hyperparameters on top of the usual ones (``epochs`` is the upweighting stage's length; the
    optimiser settings are stage 1's and, unless overridden, stage 2's).

    Attributes:
        aux_lambda: λ, the scale of the auxiliary logits in stage-1 training steps.
        amplify_epochs: T, the number of *completed* stage-1 epochs. The official code's ``stageOne_T`` counts
            from 0, so its T = 20 is ``amplify_epochs=21`` here.
        mu: μ, how many times each error example is listed per upweighting epoch (the rest: once).
        amplify_loss: ``mse`` (squared loss against one-hot labels, the paper's default) or ``ce``.
        stage2_init: ``continue`` (the amplified network, fresh optimiser) or ``fresh`` (new initialisation).
        upweight_lr, upweight_weight_decay: stage-2 optimiser overrides (None: same as stage 1).
        keep_alternative: also keep, per alternative selection rule (ClassDiff and/or worst-group), the weights
            of the epoch that rule picks (the engine's report rules on the upweighting stage; no extra pass).
    """

    optimizer: str = "sgd"
    aux_lambda: float = 50.0
    amplify_epochs: int = 21
    mu: int = 140
    amplify_loss: str = one_of("mse", AMPLIFY_LOSSES)
    stage2_init: str = one_of("continue", STAGE2_INITS)
    upweight_lr: float | None = None
    upweight_weight_decay: float | None = None
    keep_alternative: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (isinstance(self.aux_lambda, int | float) and math.isfinite(self.aux_lambda) and self.aux_lambda >= 0):
            raise ConfigError(f"aux_lambda {self.aux_lambda!r} must be a finite number >= 0")
        for name, low in (("amplify_epochs", 1), ("mu", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value or value < low:
                raise ConfigError(f"{name} {value!r} must be an integer >= {low}")
            setattr(self, name, int(value))
        self.aux_lambda = float(self.aux_lambda)
        if self.upweight_lr is not None and not (math.isfinite(self.upweight_lr) and self.upweight_lr > 0):
            raise ConfigError(f"upweight_lr {self.upweight_lr!r} must be a positive number (or None)")
        if self.upweight_weight_decay is not None and not self.upweight_weight_decay >= 0:
            raise ConfigError(f"upweight_weight_decay {self.upweight_weight_decay!r} must be >= 0 (or None)")
        if not isinstance(self.keep_alternative, bool):
            raise ConfigError(f"keep_alternative {self.keep_alternative!r} must be true or false")


class AuxiliaryLogits(nn.Module):
    """BAM's per-example auxiliary logits ``b`` of shape (N, K), initialised to 0 and looked up by dataset index.

    ``b`` is an ordinary dense parameter trained by the stage's optimiser: a step's gradient is non-zero only on
    the rows of the batch, but with momentum the other rows keep moving along their momentum buffers (the
    behaviour of momentum-SGD on a plain parameter, as in the official code).
    """

    def __init__(self, n: int, n_classes: int) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.zeros(int(n), int(n_classes)))

    def forward(self, index: Tensor) -> Tensor:
        return self.b[index.to(self.b.device)]


def squared_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Squared loss against one-hot labels, summed over the K classes and averaged over the batch:
    ``mean_i ||z_i - e_{y_i}||²``, as in BAM's official code (``utils.squared_loss``: ``MSELoss(reduction="none")``
    then ``.sum(dim=1)``, averaged over the batch by its loss computer), so that its λ and learning rates carry
    over. Computed in float32."""
    logits = logits.float()
    target = F.one_hot(y, logits.shape[1]).to(logits.dtype)
    return (logits - target).pow(2).sum(dim=1).mean()


def amplify_stage(
    model: nn.Module,
    aux: AuxiliaryLogits,
    *,
    aux_lambda: float,
    loss: str,
    epochs: int,
    batch_size: int,
    optim: OptimConfig,
) -> Stage:
    """Stage 1: train ``model`` on the logits ``model(x) + λ·b[index]``; evaluation and selection use ``model``
    alone. ``b`` has weight decay 0, the network the configured weight decay."""
    if loss not in AMPLIFY_LOSSES:
        raise ConfigError(f"amplify loss {loss!r} unknown; expected one of {', '.join(AMPLIFY_LOSSES)}")
    criterion = squared_loss if loss == "mse" else F.cross_entropy
    n = aux.b.shape[0]

    def loss_fn(batch: Batch, ctx: StepContext) -> Tensor:
        logits = model(batch.x).float() + aux_lambda * aux(batch.index)
        return criterion(logits, batch.y)

    def param_groups() -> list[dict[str, Any]]:
        net = [p for p in model.parameters() if p.requires_grad]
        return [{"params": net, "weight_decay": optim.weight_decay}, {"params": [aux.b], "weight_decay": 0.0}]

    return Stage(
        name="amplify",
        modules=nn.ModuleDict({"model": model, "aux": aux}),
        loss_fn=loss_fn,
        predict_fn=model,
        sampler=UniformSampler(n),
        epochs=epochs,
        batch_size=batch_size,
        optim=optim,
        param_groups=param_groups,
        selection="last",
    )


def aux_memory(n: int, n_classes: int, optim: OptimConfig) -> dict[str, int]:
    """Bytes held for the auxiliary table in stage 1: the float32 parameter, its (dense) gradient and the
    optimiser state (one momentum buffer for momentum-SGD, two moments for Adam/AdamW)."""
    table = int(n) * int(n_classes) * 4
    states = 2 if optim.optimizer in ("adam", "adamw") else int(optim.momentum > 0)
    return {
        "aux_table_bytes": table,
        "aux_optimizer_state_bytes": states * table,
        "aux_grad_bytes": table,
        "aux_total_bytes": (2 + states) * table,
    }


@register_method("bam")
class BAM(Method):
    """Bias amplification with per-example auxiliary logits, then continued training with errors upsampled μ×."""

    family = "inferred minority"
    earlier_stages = (("amplify", "amplify_epochs", None, False),)
    final_stage = ("upweight", "upweight_lr")

    rule_free_training: ClassVar[bool] = True  # only the last stage selects on validation

    summary = "auxiliary-logit bias amplification, then error upsampling; label-free ClassDiff selection (Li 2024)"
    #: searched by `debiaslab tune`: λ (auxiliary scale), T (amplification epochs), μ (upsampling of errors)
    search_space: ClassVar[SearchSpace] = {
        **COMMON_SPACE,
        "aux_lambda": loguniform(0.5, 100.0),
        "amplify_epochs": intrange(1, 20),
        "mu": intrange(10, 300, log=True),
        "upweight_weight_decay": loguniform(1e-6, 1e-1),
    }
    Hparams: ClassVar[type[TrainHparams]] = BAMHparams
    hparam_table: ClassVar[HparamTable] = {
        "*": {"optimizer": Default("sgd", BAM_OPTIMIZER)},
        "waterbirds": {
            "optimizer": Default("sgd", BAM_OPTIMIZER),
            "aux_lambda": Default(50.0, BAM_SPEC),
            "amplify_epochs": Default(21, BAM_T),
            "mu": Default(140, BAM_SPEC),
            "lr": Default(1e-5, BAM_META_CUB),
            "weight_decay": Default(0.0, BAM_META_CUB),
            "upweight_lr": Default(1e-5, BAM_SPEC),
            "upweight_weight_decay": Default(1.0, BAM_SPEC),
            "batch_size": Default(64, BAM_META_CUB),
            "epochs": Default(150, BAM_README),
        },
        "celeba": {
            "optimizer": Default("sgd", BAM_OPTIMIZER),
            "lr": Default(1e-5, BAM_META_CELEBA),
            "weight_decay": Default(0.0, BAM_META_CELEBA),
            "upweight_lr": Default(1e-5, BAM_META_CELEBA),
            "upweight_weight_decay": Default(0.1, BAM_META_CELEBA),
            "batch_size": Default(128, BAM_META_CELEBA),
            "epochs": Default(30, BAM_META_CELEBA_EPOCHS),
            "aux_lambda": Default(0.5, BAM_META_CELEBA_LAMBDA),
            "amplify_epochs": Default(21, BAM_META_CELEBA_T),
            "mu": Default(140, BAM_CELEBA_MU),
        },
        "colored_mnist": {
            **CMNIST_MLP,
            "optimizer": Default("sgd", BAM_OPTIMIZER),
            "momentum": Default(0.9, BAM_OPTIMIZER),
            "lr": Default(0.005, OURS_SUMMED_LOSS),
            "upweight_lr": Default(0.05, OURS_SMOKE),
            "aux_lambda": Default(5.0, OURS_TUNED),
            "amplify_epochs": Default(10, OURS_TUNED),
            "mu": Default(300, OURS_TUNED),
            "upweight_weight_decay": Default(0.01, OURS_TUNED),
            "epochs": Default(20, OURS_TUNED + "; every selection rule picked an epoch <= 20"),
        },
    }

    def __init__(self, dataset: str | None = None, **hparams: Any) -> None:
        super().__init__(dataset, **hparams)
        self.error_set_: Tensor | None = None
        self.alternative_models_: dict[str, nn.Module] = {}

    def selection_rule(self, val: GroupDataset | None) -> str:
        """``auto``: worst-group accuracy when validation has attributes, else BAM's label-free ClassDiff."""
        if val is not None and self.hparams.selection == "auto" and not val.has_attrs:
            return "val_classdiff"
        return super().selection_rule(val)

    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        hp: BAMHparams = self.hparams  # type: ignore[assignment]
        rule = self.selection_rule(val)
        n, k = len(train), train.n_classes
        amplify_optim = hp.optim_config()

        def build_amplify() -> Stage:
            model = self.build_model(train)
            return amplify_stage(
                model,
                AuxiliaryLogits(n, k),
                aux_lambda=hp.aux_lambda,
                loss=hp.amplify_loss,
                epochs=hp.amplify_epochs,
                batch_size=hp.batch_size,
                optim=amplify_optim,
            )

        amp_stage, amplify = trainer.run_stage("amplify", build_amplify, train, val)
        amplified: nn.Module = amp_stage.modules["model"]  # type: ignore[index]
        # the epoch-T weights, whether trained now or restored from the stage's done-checkpoint
        amplified_state = clone_state(amplified)
        errors = error_set(trainer, amplified, train, amplified)
        self.error_set_ = errors
        quality = error_set_quality(train, errors)
        after = f"{len(amplify.history)} amplification epochs (λ={hp.aux_lambda:g})"
        log_error_set(log, "bam", errors, n, after, quality)
        if errors.numel() == 0:
            log.warning("bam: the amplified model makes no training errors; the upweighting stage is plain CE")

        rules = self._reported_rules(rule, val)
        alternatives = [r for r in rules if r != rule] if hp.keep_alternative and val is not None else []

        def build_upweight() -> Stage:
            model = self.build_model(train)
            if hp.stage2_init == "continue":
                # rebuilt from the saved epoch-T state, so a resumed run starts stage 2 from the same weights
                model.load_state_dict(amplified_state)
            optim = optim_with(hp, hp.upweight_lr, hp.upweight_weight_decay)
            sampler = IndexListSampler(upsample_indices(n, errors, times=hp.mu))
            stage = method_ce_stage(self, "upweight", model, train, rule, optim=optim, sampler=sampler)
            # the engine keeps (and checkpoints) the weights of the epoch each alternative rule picks
            return dataclasses.replace(stage, report_rules=tuple(alternatives))

        final, upweight = trainer.run_stage("upweight", build_upweight, train, val)
        selections = self._selections(upweight, rules, rule)
        self.alternative_models_ = self._alternative_models(train, upweight, alternatives, selections, trainer.device)
        if len(selections) > 1:
            log.info(
                "bam: epochs selected by each rule: %s",
                ", ".join(f"{r} -> {s['epoch']} (score {s['score']:.4f})" for r, s in selections.items()),
            )
        extras: dict[str, Any] = {
            "aux_lambda": hp.aux_lambda,
            "amplify_epochs": len(amplify.history),
            "official_T": len(amplify.history) - 1,
            "mu": hp.mu,
            "amplify_loss": hp.amplify_loss,
            "stage2_init": hp.stage2_init,
            "error_set_size": int(errors.numel()),
            "error_set_fraction": errors.numel() / max(n, 1),
            **quality,
            **aux_memory(n, k, amplify_optim),
            "selections": selections,
        }
        return self.fit_result(train, final.modules, [amplify, upweight], rule, extras)

    def health(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer | None = None) -> list[Check]:
        """Also: the amplified model's error set is non-empty, a minority, spread over classes."""
        return [*super().health(train, val, trainer), *error_set_health(self.error_set_, train)]

    @staticmethod
    def _reported_rules(rule: str, val: GroupDataset | None) -> list[str]:
        """The configured rule first, then BAM's label-free ClassDiff and (with validation groups) worst-group."""
        if val is None:
            return [rule]
        candidates = [rule, "val_classdiff"] + (["val_worst_group"] if val.has_attrs else [])
        return list(dict.fromkeys(candidates))

    @staticmethod
    def _selections(result: StageResult, rules: list[str], configured: str) -> dict[str, dict[str, Any]]:
        """Per rule, the stage-2 epoch it picks from the logged validation metrics, its score and metrics."""
        history = [h.get("val", {}) for h in result.history]
        if not history or not all(history):  # no validation split: nothing to compare
            return {}
        out: dict[str, dict[str, Any]] = {}
        for name in rules:
            i = select_best(history, name)
            out[name] = {
                "epoch": i + 1,
                "score": get_rule(name).score(history[i]),
                "val": dict(history[i]),
                "deployed": name == configured,
            }
        return out

    def _alternative_models(
        self,
        train: GroupDataset,
        upweight: StageResult,
        alternatives: list[str],
        selections: dict[str, dict[str, Any]],
        device: torch.device,
    ) -> dict[str, nn.Module]:
        """Models of the epochs the alternative rules pick (only with ``keep_alternative``), rebuilt from the
        weights the engine kept for the upweighting stage (``StageResult.alternatives``)."""
        models: dict[str, nn.Module] = {}
        for name in alternatives:
            kept = upweight.alternatives.get(name)
            if kept is None:
                log.warning("bam: no kept weights for rule %s (stage restored from an older run?)", name)
                continue
            model = self.build_model(train)
            model.load_state_dict(kept["state"])
            models[name] = model.to(device).eval()
            if name in selections:
                selections[name]["state_kept"] = True
        return models
