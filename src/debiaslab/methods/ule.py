"""ULE — UnLearning from Experience (Mitchell, Martínez del Rincón, McLaughlin, 2024). A reconstruction.

What is verified (the paper's abstract; its full text was not available to us): a student S and a teacher T are
trained in parallel on the same minibatches; S is trained with no constraints (plain ERM) and picks up the
spurious correlation; T solves the same task while "using the gradient of the student's output with respect to
its input to unlearn mistakes made by the student"; training uses no group labels; T is deployed. (Here T's
epoch is chosen by the validation rule; the presets' ``val_unbiased`` reads validation group labels.)

**The exact published teacher loss was not available**, so the teacher's loss is a reconstruction with a
pluggable regulariser Ω that always depends on the student's input gradient g (the paper's mechanism)::

    L = CE(S(x), y) + [ CE(T(x), y) + λ · Ω(T, g, x, y) ],   g = ∂s_S(x)/∂x  (detached)

- ``mask``: Ω = mean_i w_i · CE(T(x_i with its top-k |g_i| entries set to 0), y_i): T must stay right once the
  inputs S relies on most are removed. 0 is black on Colored MNIST and the mean grey of Biased MNIST's
  normalised inputs.
- ``perturb``: Ω = mean_i w_i · CE(T(x_i − ε·g_i/‖g_i‖), y_i): T must stay right once S's evidence is pushed away.
- ``align``: Ω = mean_i w_i · cos²(h_i, g_i), h = ∂s_T(x)/∂x with ``create_graph`` (double backprop): T is
  pushed to use input directions S does not use.

``saliency`` says which scalar is differentiated: the true-class logit, S's *predicted*-class logit (on S's
mistakes, the evidence that produced the mistake) or the log-probability of the true class. w_i is 1
(``uniform``) or comes from S's mistakes (``student_wrong``, ``student_loss``, ``student_confidence``; or a
per-example record of its past mistakes, ``student_wrong_rate`` / ``student_wrong_ema``, :class:`MistakeMemory`).

**Default, chosen on validation only**: ``mask`` the 10 % of input entries with the largest |g| of the student's
*predicted*-class logit, Ω weighted by the student's current mistakes (``student_wrong``), λ = 1: the teacher must
stay right on the examples the student gets wrong once the evidence behind the student's wrong answer is removed.
It had the highest mean validation unbiased accuracy over Colored MNIST 1 % and Biased MNIST ρ 0.99 (seed 0,
20 epochs, LfF MLP; run records ``benchmarks/results/ule-search``, table in docs/ule.md): 69.4 / 62.4 against
ERM's 58.1 / 59.9, and 64.4 / 62.5 for the same mask on the true-class saliency with uniform weights, a reading
that never looks at the student's mistakes. The evidence is one seed per benchmark, and the gain is on Colored
MNIST (worst-group 17.2 against 0.0 there); on Biased MNIST the two tie. With λ = 5 or k = 25 % the mistake
readings fell far below ERM on Biased MNIST (46.3-46.6), and ``perturb`` and ``align`` (λ 10) scored below ERM
there.

The teacher's CE up-weighted on the student's mistakes *without* the gradient is a different method, registered
as ``mistake_reweight`` (:mod:`debiaslab.methods.mistake_reweight`).

The student's gradient g and the weights w_i are constants for the teacher: the teacher's terms have no path to
the student's parameters, so S receives exactly the ERM gradient (tests check this bit for bit). The student is
plain ERM by default; ``student_loss="gce"`` and ``student_weight_decay`` are named departures.

"Separate optimisers": the engine builds one optimiser per stage; ULE gives it two parameter groups (teacher
first, then student, each with its own lr / weight decay). For SGD, Adam and AdamW this is the same as two
optimisers, since their state is per parameter and each update reads only its own parameter's gradient and
state. One exception: ``grad_clip`` clips the joint norm of both models.

Notes: ``perturb``/``mask`` run the teacher twice per step, so with BatchNorm models its running statistics also
see the perturbed batch. Cost per epoch (``make bench-cost``): 3.7-4.6× ERM (``align`` needs double backprop,
``mask`` a per-example top-k). Both models are restored to the teacher's selected epoch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from debiaslab.data.core import Batch, GroupDataset
from debiaslab.engine.stage import Stage, StepContext
from debiaslab.engine.trainer import Trainer, eval_mode
from debiaslab.errors import ConfigError
from debiaslab.evaluation.health import Check, disagreement_checks, saliency_mass_check, student_error_check
from debiaslab.methods.base import FitResult, Method
from debiaslab.methods.hparams import Bounds, Default, HparamTable, TrainHparams, bounded, one_of
from debiaslab.methods.lff import generalized_cross_entropy
from debiaslab.methods.premises import conflicting_mask, predictions
from debiaslab.methods.presets import CMNIST_MLP
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, categorical, loguniform, uniform
from debiaslab.methods.stages import method_stage
from debiaslab.utils import dist

log = logging.getLogger(__name__)

#: the gradient readings of ULE; ``reweight`` (no gradient) belongs to ``mistake_reweight``
GRADIENT_OMEGAS = ("align", "perturb", "mask")
OMEGAS = (*GRADIENT_OMEGAS, "reweight")
SALIENCIES = ("true_logit", "pred_logit", "loss")
BATCH_WEIGHTINGS = ("uniform", "student_wrong", "student_loss", "student_confidence")
MEMORY_WEIGHTINGS = ("student_wrong_rate", "student_wrong_ema")
WEIGHTINGS = BATCH_WEIGHTINGS + MEMORY_WEIGHTINGS
MASK_UNITS = ("entry", "pixel")
STUDENT_LOSSES = ("ce", "gce")

ULE_CHOICE = (
    "ours (the paper gives no value; a reconstruction): chosen on validation (unbiased accuracy, Colored MNIST 1 % "
    "and Biased MNIST rho 0.99; run records benchmarks/results/ule-search)"
)
PAPER_STUDENT = "ULE paper (abstract): the student is trained with no constraints (plain ERM)"
SPEC_PROBE_EPS = (
    "ours (the paper gives no value; used by the perturb reading only): eps=5 scored 46.1 after 5 epochs on "
    "Colored MNIST 1 %"
)
COS_EPS = 1e-8
#: training examples whose student saliency the premise check measures
SALIENCY_EXAMPLES = 512


# ---------------------------------------------------------------------------------------------- the pieces
def saliency_score(logits: Tensor, target: Tensor, saliency: str) -> Tensor:
    """Per-example scalar whose input gradient is the saliency, signed as "evidence for ``target``".

    ``true_logit`` / ``pred_logit``: the logit of ``target`` (the caller passes y or S's predicted class).
    ``loss``: the negative cross-entropy, log p(target | x), so that −g removes evidence for every option.
    """
    if saliency == "loss":
        return -F.cross_entropy(logits.float(), target, reduction="none")
    if saliency in ("true_logit", "pred_logit"):
        return logits.float().gather(1, target.reshape(-1, 1)).squeeze(1)
    raise ConfigError(f"saliency {saliency!r} unknown; expected one of {', '.join(SALIENCIES)}")


def logits_and_input_grad(
    model: nn.Module, x: Tensor, target: Tensor | None, saliency: str, *, create_graph: bool
) -> tuple[Tensor, Tensor]:
    """One forward of ``model`` on a fresh leaf copy of ``x``: its logits (graph kept for the caller's loss) and
    ``∂score/∂x`` per example. ``target=None`` means "the model's own predicted class".

    ``create_graph=False`` gives a plain tensor (no graph; ULE detaches it too); ``True`` keeps the graph so a
    loss on the gradient reaches the model's parameters (double backprop). Only the input's gradient is
    computed: ``autograd.grad`` never writes ``.grad`` of any parameter.
    """
    x = x.detach().requires_grad_(True)
    logits = model(x)
    if target is None:
        target = logits.detach().argmax(dim=1)
    score = saliency_score(logits, target, saliency).sum()
    (grad,) = torch.autograd.grad(score, x, create_graph=create_graph, retain_graph=True)
    return logits, grad if create_graph else grad.detach()


def squared_cosine(h: Tensor, g: Tensor, eps: float = COS_EPS) -> Tensor:
    """Per-example cos²(h_i, g_i) over the flattened inputs, in float32 (0 where either vector is zero)."""
    h, g = h.flatten(1).float(), g.flatten(1).float()
    dot = (h * g).sum(dim=1)
    return dot.square() / (h.square().sum(dim=1) * g.square().sum(dim=1)).clamp_min(eps)


def perturb_along_gradient(x: Tensor, g: Tensor, eps: float) -> Tensor:
    """``x − eps · g/‖g‖`` per example (L2 norm over all input entries); examples with g = 0 do not move."""
    flat = g.detach().flatten(1).float()
    norm = flat.norm(dim=1, keepdim=True)
    step = torch.where(norm > 0, flat / norm.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return x - (eps * step).reshape(x.shape).to(x.dtype)


def mask_count(units: int, fraction: float) -> int:
    """k = round(fraction · units), at least 1 and at most ``units``."""
    return min(units, max(1, round(fraction * units)))


def mask_top_saliency(x: Tensor, g: Tensor, fraction: float, unit: str = "entry") -> Tensor:
    """Zero the k inputs of largest |g| per example (k = ``mask_count``), a copy of ``x``.

    ``unit="entry"``: k of the ``x[i].numel()`` entries. ``unit="pixel"`` (4-D image inputs only; other inputs
    fall back to entries): |g| is summed over channels and the k top pixels are zeroed in every channel.
    """
    n = x.shape[0]
    score = g.detach().abs().float()
    if unit == "pixel" and x.dim() == 4:
        score = score.sum(dim=1).flatten(1)  # (N, H*W)
        k = mask_count(score.shape[1], fraction)
        keep = torch.ones_like(score, dtype=torch.bool)
        keep.scatter_(1, score.topk(k, dim=1, sorted=False).indices, False)
        return x * keep.reshape(n, 1, *x.shape[2:]).to(x.dtype)
    if unit not in MASK_UNITS:
        raise ConfigError(f"mask_unit {unit!r} unknown; expected one of {', '.join(MASK_UNITS)}")
    score = score.reshape(n, -1)
    k = mask_count(score.shape[1], fraction)
    keep = torch.ones_like(score, dtype=torch.bool)
    keep.scatter_(1, score.topk(k, dim=1, sorted=False).indices, False)
    return x * keep.reshape(x.shape).to(x.dtype)


def saliency_units(g: Tensor, unit: str = "entry") -> Tensor:
    """|g| per maskable unit, shape ``(N, units)``: per input entry, or (``pixel``, 4-D images) summed over
    channels, as :func:`mask_top_saliency` ranks them."""
    score = g.detach().abs().float()
    if unit == "pixel" and score.dim() == 4:
        return score.sum(dim=1).flatten(1)
    return score.reshape(score.shape[0], -1)


def normalise_to_batch_mean(raw: Tensor) -> Tensor:
    """``raw / mean(raw)``: weights with mean 1 over the batch (all 0 when every raw weight is 0). In a
    multi-process run the mean is that of the global batch, as one process would compute it."""
    mean = dist.global_mean(raw)
    return torch.where(mean > 0, raw / mean.clamp_min(torch.finfo(raw.dtype).tiny), torch.zeros_like(raw))


def example_weights(weighting: str, student_logits: Tensor, y: Tensor) -> Tensor:
    """Detached per-example weights w_i for Ω from this batch alone, normalised to mean 1 over the batch.

    ``uniform``: 1. ``student_wrong``: ∝ 1[S mispredicts i]. ``student_loss``: ∝ S's CE on i.
    ``student_confidence``: ∝ S's probability of the true class (remove evidence where S is sure of it).
    The memory weightings (``student_wrong_rate`` / ``_ema``) need a :class:`MistakeMemory` instead.
    """
    logits = student_logits.detach().float()
    if weighting == "uniform":
        return torch.ones(y.shape[0], device=logits.device)
    if weighting == "student_wrong":
        raw = (logits.argmax(dim=1) != y).float()
    elif weighting == "student_loss":
        raw = F.cross_entropy(logits, y, reduction="none")
    elif weighting == "student_confidence":
        raw = torch.softmax(logits, dim=1).gather(1, y.reshape(-1, 1)).squeeze(1)
    elif weighting in MEMORY_WEIGHTINGS:
        raise ConfigError(f"weighting {weighting!r} reads the student's mistake memory; pass a MistakeMemory")
    else:
        raise ConfigError(f"weighting {weighting!r} unknown; expected one of {', '.join(WEIGHTINGS)}")
    return normalise_to_batch_mean(raw)


class MistakeMemory(nn.Module):
    """How often the student got each training example wrong, indexed by the dataset index.

    The per-batch ``student_wrong`` weighting forgets an example as soon as the ERM student memorises it, which
    on Colored MNIST happens to most bias-conflicting images within a few epochs; this record keeps them.
    ``alpha=None``: the share of the example's visits so far on which S mispredicted it (a running mean).
    ``alpha`` in [0, 1): an exponential moving average of 1[S wrong], first visit sets it (LfF's EMA rule).
    ``value`` and ``visits`` are buffers, so stage checkpoints carry them and resumed runs continue exactly.
    """

    value: Tensor
    visits: Tensor

    def __init__(self, n_examples: int, alpha: float | None = None) -> None:
        super().__init__()
        if alpha is not None and not 0 <= alpha < 1:
            raise ConfigError(f"memory alpha {alpha!r} must be in [0, 1) (or None for the running mean)")
        self.alpha = alpha
        self.register_buffer("value", torch.zeros(int(n_examples), dtype=torch.float32))
        self.register_buffer("visits", torch.zeros(int(n_examples), dtype=torch.float32))

    @torch.no_grad()
    def update(self, index: Tensor, wrong: Tensor) -> None:
        """Fold one observation per index (0/1, or any float) into the record. Indices must be unique per call."""
        index = index.to(self.value.device)
        wrong = wrong.detach().to(self.value.device, torch.float32)
        visits = self.visits[index] + 1.0
        old = self.value[index]
        if self.alpha is None:
            new = old + (wrong - old) / visits
        else:
            new = torch.where(visits > 1, self.alpha * old + (1.0 - self.alpha) * wrong, wrong)
        self.value[index], self.visits[index] = new, visits

    @torch.no_grad()
    def weights(self, index: Tensor) -> Tensor:
        """The recorded mistake scores of ``index``, normalised to mean 1 over them (0 if all are 0)."""
        return normalise_to_batch_mean(self.value[index.to(self.value.device)])


# ---------------------------------------------------------------------------------------------- hparams
@dataclass
class ULEHparams(TrainHparams):
    """ULE's hyperparameters on top of the usual ones (``lr`` / ``weight_decay`` are the teacher's).

    Attributes:
        omega: the teacher's regulariser Ω on the student's input gradient: ``mask``, ``perturb`` or ``align``
            (module docstring).
        omega_weight: λ, the weight of Ω in the teacher's loss (0: teacher is a second ERM model).
        saliency: the scalar whose input gradient is g: ``true_logit``, ``pred_logit`` (S's predicted class,
            also used for T's gradient in ``align``) or ``loss`` (log-probability of the true class).
        weighting: per-example w_i in Ω, from this batch: ``uniform``, ``student_wrong``, ``student_loss``,
            ``student_confidence``; or from a per-example record of the student's past mistakes (``MistakeMemory``):
            ``student_wrong_rate`` (share of visits S got wrong), ``student_wrong_ema`` (EMA of 1[S wrong]).
        memory_alpha: the EMA factor of ``student_wrong_ema`` (one update per visit, i.e. per epoch).
        perturb_eps: ε, the L2 length of the step against g (``perturb``).
        mask_fraction: share of the input units zeroed per example (``mask``).
        mask_unit: ``entry`` (each input value) or ``pixel`` (|g| summed over channels, whole pixels zeroed).
        student_loss: ``ce`` (plain ERM, the paper's unconstrained student) or ``gce`` (generalised CE with
            ``student_gce_q``, LfF's bias amplifier: the student keeps the shortcut and keeps its mistakes on
            conflicting examples instead of memorising them).
        student_lr, student_weight_decay: the student's optimiser settings (None: the teacher's).
        eval_student: also evaluate (and log) the student on validation every epoch.
    """

    #: the Ω readings this method accepts
    allowed_omegas: ClassVar[tuple[str, ...]] = GRADIENT_OMEGAS

    omega: str = "mask"
    omega_weight: float = 1.0
    saliency: str = one_of("true_logit", SALIENCIES)
    weighting: str = one_of("uniform", WEIGHTINGS)
    memory_alpha: float = bounded(0.9, Bounds(0.0, 1.0, high_open=True))
    perturb_eps: float = 5.0
    mask_fraction: float = 0.25
    mask_unit: str = one_of("entry", MASK_UNITS)
    student_loss: str = one_of("ce", STUDENT_LOSSES)
    student_gce_q: float = 0.7
    student_lr: float | None = None
    student_weight_decay: float | None = None
    eval_student: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.omega not in self.allowed_omegas:
            hint = "; the teacher's CE up-weighted on the student's mistakes is `--method mistake_reweight`"
            raise ConfigError(
                f"omega {self.omega!r} unknown; expected one of {', '.join(self.allowed_omegas)}"
                + (hint if self.omega == "reweight" else "")
            )
        if self.omega == "reweight" and self.weighting == "uniform":
            raise ConfigError(
                "omega 'reweight' with weighting 'uniform' only rescales the teacher's CE; choose a student weighting "
                f"({', '.join(w for w in WEIGHTINGS if w != 'uniform')})"
            )
        if not (math.isfinite(self.omega_weight) and self.omega_weight >= 0):
            raise ConfigError(f"omega_weight {self.omega_weight!r} must be a finite number >= 0")
        if not (math.isfinite(self.perturb_eps) and self.perturb_eps > 0):
            raise ConfigError(f"perturb_eps {self.perturb_eps!r} must be a positive number")
        if not 0 < self.mask_fraction < 1:
            raise ConfigError(f"mask_fraction {self.mask_fraction!r} must be in (0, 1)")
        if not 0 < self.student_gce_q <= 1:
            raise ConfigError(f"student_gce_q {self.student_gce_q!r} must be in (0, 1]")
        if self.student_lr is not None and not (math.isfinite(self.student_lr) and self.student_lr > 0):
            raise ConfigError(f"student_lr {self.student_lr!r} must be a positive number (or None)")
        if self.student_weight_decay is not None and self.student_weight_decay < 0:
            raise ConfigError(f"student_weight_decay {self.student_weight_decay!r} must be >= 0 (or None)")

    def omega_settings(self) -> dict[str, Any]:
        """The Ω settings that matter for the chosen variant (recorded with the result)."""
        out: dict[str, Any] = {
            "omega": self.omega,
            "omega_weight": self.omega_weight,
            "saliency": self.saliency,
            "weighting": self.weighting,
            "student_loss": self.student_loss,
        }
        if self.student_loss == "gce":
            out["student_gce_q"] = self.student_gce_q
        if self.weighting == "student_wrong_ema":
            out["memory_alpha"] = self.memory_alpha
        if self.omega == "perturb":
            out["perturb_eps"] = self.perturb_eps
        if self.omega == "mask":
            out["mask_fraction"], out["mask_unit"] = self.mask_fraction, self.mask_unit
        return out


def ule_loss_terms(
    student: nn.Module,
    teacher: nn.Module,
    x: Tensor,
    y: Tensor,
    hp: ULEHparams,
    index: Tensor | None = None,
    memory: MistakeMemory | None = None,
) -> dict[str, Tensor]:
    """The terms of one ULE step on a batch.

    ``loss`` = ``student`` + ``teacher``: ``student`` = CE(S(x), y) (GCE with ``student_loss="gce"``) is the
    only term with a path to S's parameters; ``teacher`` = ``ce_teacher`` + λ·``omega`` (``omega`` =
    mean_i w_i·ω_i, with graph, for tests and logging). ``student_wrong`` is the batch share S mispredicts.
    The memory weightings first record this batch's mistakes in ``memory`` (at the dataset ``index``, gathered
    over data-parallel ranks so every rank keeps the same record), then read w_i from it.
    """
    pred_target = hp.saliency == "pred_logit"
    if hp.omega == "reweight":  # no evidence removal: S's input gradient is not needed
        logits_s, g = student(x), None
    else:
        logits_s, g = logits_and_input_grad(student, x, None if pred_target else y, hp.saliency, create_graph=False)
    if hp.student_loss == "gce":
        ce_s = generalized_cross_entropy(logits_s, y, hp.student_gce_q).mean()
    else:
        ce_s = F.cross_entropy(logits_s.float(), y)
    wrong = (logits_s.detach().argmax(dim=1) != y).float()
    if hp.weighting in MEMORY_WEIGHTINGS:
        if memory is None or index is None:
            raise ConfigError(f"weighting {hp.weighting!r} needs the batch's dataset index and a MistakeMemory")
        index = index.to(wrong.device)
        memory.update(*dist.gather_cat(index, wrong))
        w = memory.weights(index).to(wrong.device)
    else:
        w = example_weights(hp.weighting, logits_s, y)
    if hp.omega == "align":
        assert g is not None
        target_t = logits_s.detach().argmax(dim=1) if pred_target else y
        logits_t, h = logits_and_input_grad(teacher, x, target_t, hp.saliency, create_graph=True)
        per_example = squared_cosine(h, g)
    else:
        logits_t = teacher(x)
        if hp.omega == "reweight":
            per_example = F.cross_entropy(logits_t.float(), y, reduction="none")
        else:
            assert g is not None
            if hp.omega == "perturb":
                x_removed = perturb_along_gradient(x, g, hp.perturb_eps)
            else:
                x_removed = mask_top_saliency(x, g, hp.mask_fraction, hp.mask_unit)
            per_example = F.cross_entropy(teacher(x_removed).float(), y, reduction="none")
    ce_t = F.cross_entropy(logits_t.float(), y)
    omega = (w * per_example).mean()
    teacher_loss = ce_t + hp.omega_weight * omega
    return {
        "loss": ce_s + teacher_loss,
        "student": ce_s,
        "teacher": teacher_loss,
        "ce_teacher": ce_t,
        "omega": omega,
        "student_wrong": wrong.mean(),
    }


# ---------------------------------------------------------------------------------------------- method
@register_method("ule")
class ULE(Method):
    """UnLearning from Experience (reconstruction): a plain-ERM student and a teacher trained beside it whose extra
    loss depends on the student's input gradient; the teacher is deployed (``model_``), the trained student is kept
    as ``student_``. Exact published loss unavailable (module docstring)."""

    family = "inferred minority"

    rule_free_training: ClassVar[bool] = True  # only the last stage selects on validation

    summary = "teacher unlearns a parallel ERM student's input-gradient evidence (Mitchell et al. 2024, reconstructed)"
    #: searched by `debiaslab tune`: λ, the regulariser Ω on the student's input gradient and its knobs, the
    #: saliency, the per-example weighting, and the student's L2
    search_space: ClassVar[SearchSpace] = {
        **COMMON_SPACE,
        "omega": categorical(*GRADIENT_OMEGAS),
        "omega_weight": loguniform(0.1, 100.0),
        "saliency": categorical(*SALIENCIES),
        "weighting": categorical(*WEIGHTINGS),
        "mask_fraction": uniform(0.05, 0.5),
        "perturb_eps": loguniform(0.5, 20.0),
        # the student stays plain ERM (the paper trains it "with no constraints"): its weight decay is not searched
    }
    Hparams: ClassVar[type[TrainHparams]] = ULEHparams
    hparam_table: ClassVar[HparamTable] = {
        "*": {
            "omega": Default("mask", ULE_CHOICE),
            "omega_weight": Default(1.0, ULE_CHOICE),
            "weighting": Default("student_wrong", ULE_CHOICE),
            "mask_fraction": Default(0.1, ULE_CHOICE),
            "mask_unit": Default("entry", ULE_CHOICE),
            "saliency": Default("pred_logit", ULE_CHOICE),
            "perturb_eps": Default(5.0, SPEC_PROBE_EPS),
            "student_loss": Default("ce", PAPER_STUDENT),
            "student_weight_decay": Default(0.0, PAPER_STUDENT),
        },
        "colored_mnist": dict(CMNIST_MLP),
    }

    def __init__(self, dataset: str | None = None, **hparams: Any) -> None:
        super().__init__(dataset, **hparams)
        self.student_: nn.Module | None = None

    def health(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer | None = None) -> list[Check]:
        """Also: the student's training error over the epochs (it should keep erring on a minority), how often
        teacher and student disagree (on validation, else training; with attributes, on conflicting against
        aligned examples) and, for ``mask``, how much of the student's saliency the masked inputs held."""
        trainer = trainer or Trainer(progress=False)
        checks = super().health(train, val, trainer)
        wrong = [h["train_student_wrong"] for h in self._fitted_result().history if "train_student_wrong" in h]
        if wrong:
            checks.append(student_error_check(wrong))
        if self.student_ is None:
            return checks
        split = val if val is not None else train
        teacher_pred = predictions(trainer, self._fitted_model(), split)
        checks += disagreement_checks(teacher_pred, predictions(trainer, self.student_, split), conflicting_mask(split))
        if self.hparams.omega == "mask":  # type: ignore[attr-defined]
            checks.append(self._saliency_check(train, trainer))
        return checks

    def _saliency_check(self, train: GroupDataset, trainer: Trainer) -> Check:
        """The share of the student's input-gradient mass in the entries ``mask`` zeroes, on the first
        :data:`SALIENCY_EXAMPLES` training examples (eval mode)."""
        hp: ULEHparams = self.hparams  # type: ignore[assignment]
        assert self.student_ is not None
        index = torch.arange(min(len(train), SALIENCY_EXAMPLES))
        x = trainer.prepare_inputs(train.inputs(index))
        y = train.y[index].to(x.device)
        with eval_mode(self.student_):
            target = None if hp.saliency == "pred_logit" else y
            _, g = logits_and_input_grad(self.student_, x, target, hp.saliency, create_graph=False)
        scores = saliency_units(g, hp.mask_unit)
        return saliency_mass_check(scores, mask_count(scores.shape[1], hp.mask_fraction))

    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        hp: ULEHparams = self.hparams  # type: ignore[assignment]
        rule = self.selection_rule(val)
        # diagnostics only (never used for training): which examples are bias-conflicting
        conflicting = conflicting_mask(train)

        def build() -> Stage:
            teacher, student = self.build_model(train), self.build_model(train)
            modules = nn.ModuleDict({"teacher": teacher, "student": student})
            memory = None
            if hp.weighting in MEMORY_WEIGHTINGS:
                alpha = hp.memory_alpha if hp.weighting == "student_wrong_ema" else None
                memory = MistakeMemory(len(train), alpha)
                modules["memory"] = memory

            def loss(batch: Batch, ctx: StepContext) -> dict[str, Tensor]:
                terms = ule_loss_terms(student, teacher, batch.x, batch.y, hp, batch.index, memory)
                logged = {("ce_student" if k == "student" else k): v.detach() for k, v in terms.items()}
                return {**logged, "loss": terms["loss"]}

            def memory_report(ctx: StepContext) -> dict[str, float]:
                """Mean recorded mistake score on conflicting vs aligned examples (diagnostics only)."""
                if memory is None or conflicting is None:
                    return {}
                seen = memory.visits > 0
                out = {}
                for kind, rows in (("conflicting", conflicting), ("aligned", ~conflicting)):
                    rows = rows.to(seen.device) & seen
                    if rows.any():
                        out[f"train_memory_{kind}"] = float(memory.value[rows].mean())
                return out

            def param_groups() -> list[dict[str, Any]]:
                wd_s = hp.weight_decay if hp.student_weight_decay is None else hp.student_weight_decay
                return [
                    {"params": [p for p in teacher.parameters() if p.requires_grad]},
                    {
                        "params": [p for p in student.parameters() if p.requires_grad],
                        "lr": hp.lr if hp.student_lr is None else hp.student_lr,
                        "weight_decay": wd_s,
                    },
                ]

            return method_stage(
                self,
                self.name,
                train,
                rule,
                modules=modules,
                loss_fn=loss,
                predict_fn=teacher,
                param_groups=param_groups,
                extra_predictors={"student": student} if hp.eval_student else {},
                on_epoch_end=memory_report,
                # the loss takes input gradients (autograd.grad; double backprop for align), which DDP's
                # gradient hooks do not support: one coalesced all-reduce after backward instead
                grad_sync="allreduce",
            )

        stage, result = trainer.run_stage(self.name, build, train, val)
        extras: dict[str, Any] = {
            **hp.omega_settings(),
            "student_lr": hp.lr if hp.student_lr is None else hp.student_lr,
        }
        if result.history:
            last = result.history[-1]
            selected = result.history[result.selected_epoch - 1] if result.selected_epoch >= 1 else last
            if "val_student" in last:
                extras["student_val_final"] = last["val_student"]
                extras["student_val_selected_epoch"] = selected["val_student"]
        self.student_ = stage.modules["student"]
        log.info("%s: omega=%s", self.name, hp.omega_settings())
        return self.fit_result(train, stage.modules["teacher"], [result], rule, extras)
