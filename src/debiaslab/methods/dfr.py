"""DFR, Deep Feature Reweighting (Kirichenko, Izmailov, Wilson; "Last Layer Re-Training is Sufficient for
Robustness to Spurious Correlations", ICLR 2023).

An ERM model learns the core features even when its head leans on a spurious one, so DFR freezes the feature
extractor φ and re-fits only the last layer on a small group-balanced set: L1 logistic regression on the
validation embeddings (standardised with the training embeddings' statistics), C chosen by worst-group accuracy
on a held-out half of validation, final head = the average of ``n_fits`` fits on fresh balanced subsamples.

Registered as ``dfr`` (balances validation by group; needs validation attributes) and ``dfr_class``
(balances by class and picks C by worst-class accuracy; needs no attribute labels at all).

The deployed model is the base backbone whose ``head`` folds the standardisation into the averaged logistic
head (W' = W/σ, b' = b − W·μ/σ), so it is a plain registry model with the base's ``model_spec``.
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.stage import StageResult
from debiaslab.engine.trainer import Trainer
from debiaslab.errors import ConfigError, MissingLabelsError
from debiaslab.evaluation.health import Check
from debiaslab.methods.base import FitResult, Method, PlannedStage, Requirements
from debiaslab.methods.hparams import Default, HparamTable, TrainHparams
from debiaslab.methods.presets import CMNIST_MLP
from debiaslab.methods.registry import register_method
from debiaslab.methods.search_space import COMMON_SPACE, SearchSpace, loguniform
from debiaslab.methods.stages import erm_stage
from debiaslab.methods.teachers import load_finished_model

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

log = logging.getLogger(__name__)

#: The official code's C grid (Waterbirds, L1 penalty); methods.md asks for exactly this grid.
C_GRID: tuple[float, ...] = (1.0, 0.7, 0.3, 0.1, 0.07, 0.03, 0.01)
VARIANTS = ("group", "class", "auto")
DFR_CODE = "DFR official code (PolinaKirichenko/deep_feature_reweighting, dfr_evaluate_spurious.py)"
DFR_BASE = "DFR official code: train_classifier.py keeps the base ERM model's final epoch (no early stopping)"
DFR_PAPER = "DFR paper (Kirichenko et al., ICLR 2023): DFR on a group-balanced validation subsample"
OURS_CLASS = "ours (methods.md): without group labels DFR balances by class and picks C by worst-class accuracy"


@dataclass
class DFRHparams(TrainHparams):
    """DFR's settings; the inherited training fields configure the base ERM stage when ``base_run`` is None.

    Attributes:
        base_run: a finished run directory (or its ``model.pt``) holding the ERM model to re-head; None trains
            the base ERM stage here.
        variant: ``group`` (balance validation by group, pick C by worst-group accuracy), ``class`` (by class,
            worst-class accuracy) or ``auto`` (group when validation has attributes, else class).
        c_grid: inverse L1 strengths tried for the logistic head.
        n_fits: fits averaged into the final head, each on a fresh balanced subsample of all of validation.
        tune_symmetric: also fit on the second half and score on the first, averaging both scores
            (the official code uses the single split only).
        max_iter: liblinear iteration limit (scikit-learn's default, as in the official code).
        n_jobs: processes for the logistic fits (joblib; -1: all cores). Results do not depend on it.
    """

    base_run: str | None = None
    variant: str = "group"
    c_grid: tuple[float, ...] = C_GRID
    n_fits: int = 20
    tune_symmetric: bool = False
    max_iter: int = 100
    n_jobs: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.variant not in VARIANTS:
            raise ConfigError(f"dfr variant {self.variant!r} unknown; expected one of {', '.join(VARIANTS)}")
        grid = (self.c_grid,) if isinstance(self.c_grid, int | float) else self.c_grid
        try:
            self.c_grid = tuple(float(c) for c in grid)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"dfr c_grid {self.c_grid!r} must be a list of positive numbers") from exc
        if not self.c_grid or any(not np.isfinite(c) or c <= 0 for c in self.c_grid):
            raise ConfigError(f"dfr c_grid {list(self.c_grid)} must be a non-empty list of positive numbers")
        if self.n_fits < 1:
            raise ConfigError(f"dfr n_fits {self.n_fits} must be >= 1")
        if self.n_jobs == 0 or self.n_jobs < -1:
            raise ConfigError(f"dfr n_jobs {self.n_jobs} must be a positive number of processes or -1 (all cores)")
        if self.max_iter < 1:
            raise ConfigError(f"dfr max_iter {self.max_iter} must be >= 1")
        if self.base_run is not None:
            self.base_run = str(self.base_run)


# ---------------------------------------------------------------------------------------------- building blocks
def balanced_subsample(units: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices keeping ``min_u n_u`` random examples of every non-empty unit (group or class).

    Units ``< 0`` (unknown) are never kept.
    """
    units = np.asarray(units)
    present = np.unique(units[units >= 0])
    if present.size == 0:
        raise ConfigError("cannot balance: no example has a known group/class")
    members = [np.flatnonzero(units == u) for u in present]
    keep = min(m.size for m in members)
    return np.sort(np.concatenate([rng.permutation(m)[:keep] for m in members]))


def split_halves(units: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split every unit in two at random: ``(fit_half, score_half)``, sorted indices.

    A unit of n examples puts ``n // 2`` in the score half and the rest in the fit half, so each half keeps every
    unit with two or more examples (the official code splits validation at random without stratifying).
    """
    units = np.asarray(units)
    fit, score = [], []
    for u in np.unique(units[units >= 0]):
        members = rng.permutation(np.flatnonzero(units == u))
        score.append(members[: members.size // 2])
        fit.append(members[members.size // 2 :])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(score))


def worst_accuracy(pred: np.ndarray, y: np.ndarray, units: np.ndarray) -> float:
    """Lowest accuracy over the non-empty units (groups or classes)."""
    correct = np.asarray(pred) == np.asarray(y)
    units = np.asarray(units)
    return float(min(correct[units == u].mean() for u in np.unique(units[units >= 0])))


def _l1_logreg(c: float, random_state: int, max_iter: int) -> LogisticRegression:
    """``LogisticRegression(penalty="l1", solver="liblinear", C=c)`` across scikit-learn versions (``penalty``
    is deprecated from 1.8 on, where ``l1_ratio=1`` says the same)."""
    from sklearn.linear_model import LogisticRegression

    kwargs: dict[str, Any] = {"C": c, "solver": "liblinear", "random_state": random_state, "max_iter": max_iter}
    if inspect.signature(LogisticRegression).parameters["penalty"].default == "l2":
        kwargs["penalty"] = "l1"
    else:
        kwargs["l1_ratio"] = 1.0
    return LogisticRegression(**kwargs)


def fit_linear_head(
    z: np.ndarray, y: np.ndarray, n_classes: int, c: float, random_state: int, max_iter: int = 100
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Fit L1 logistic regression on standardised embeddings; return it as logits ``(W (K, D), b (K,))`` and
    whether liblinear converged.

    Two classes: one model ``d = w·z + b`` becomes logits ``(−d/2, +d/2)`` (softmax = ``predict_proba``, logit
    difference = ``decision_function``). More classes: one-vs-rest, as liblinear does; logit k is the decision
    function of "k vs rest".
    """
    y = np.asarray(y)
    missing = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
    if missing:
        raise ConfigError(
            f"DFR cannot fit its head: class(es) {missing} have no example in the balanced subsample; "
            "validation is too small for this split"
        )
    targets = [y] if n_classes == 2 else [(y == k).astype(np.int64) for k in range(n_classes)]
    weights, biases, converged = [], [], True
    for target in targets:
        clf = _l1_logreg(c, random_state, max_iter).fit(z, target)
        weights.append(clf.coef_[0].astype(np.float64))
        biases.append(float(clf.intercept_[0]))
        converged &= bool(np.max(clf.n_iter_) < max_iter)
    w, b = np.stack(weights), np.asarray(biases)
    if n_classes == 2:
        w, b = np.concatenate([-w / 2, w / 2]), np.array([-b[0] / 2, b[0] / 2])
    return w, b, converged


def fold_standardisation(
    weight: np.ndarray, bias: np.ndarray, mean: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """A head on raw features equal to ``weight @ ((φ − mean) / scale) + bias``: W' = W/σ, b' = b − W·μ/σ."""
    return weight / scale, bias - weight @ (mean / scale)


def fit_heads(
    z: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    tasks: list[tuple[np.ndarray, float, int]],
    *,
    max_iter: int = 100,
    n_jobs: int = 1,
) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """:func:`fit_linear_head` for every ``(indices, C, random_state)`` task, in order; ``n_jobs`` > 1 (or -1)
    runs them in parallel processes (joblib). Every random draw is made before, so results do not depend on it.
    """
    if n_jobs == 1 or len(tasks) == 1:
        return [fit_linear_head(z[idx], y[idx], n_classes, c, seed, max_iter) for idx, c, seed in tasks]
    from joblib import Parallel, delayed

    run = delayed(fit_linear_head)
    return Parallel(n_jobs=n_jobs)(run(z[idx], y[idx], n_classes, c, seed, max_iter) for idx, c, seed in tasks)


def tune_c(
    z: np.ndarray,
    y: np.ndarray,
    units: np.ndarray,
    n_classes: int,
    c_grid: tuple[float, ...],
    rng: np.random.Generator,
    *,
    symmetric: bool = False,
    max_iter: int = 100,
    n_jobs: int = 1,
) -> tuple[float, dict[float, float], int]:
    """Choose C: fit on a balanced subsample of one half of validation, score worst-unit accuracy on the other
    (and the reverse too, averaged, when ``symmetric``). One subsample per half serves every C, as in the
    official code.

    Returns the chosen C (the first best in ``c_grid`` order, as ``np.argmax`` in the official code), the score
    of every C, and the balanced subsample size per unit of the (first) fit half.
    """
    fit_half, score_half = split_halves(units, rng)
    folds = [(fit_half, score_half)] + ([(score_half, fit_half)] if symmetric else [])
    subs = [fit_idx[balanced_subsample(units[fit_idx], rng)] for fit_idx, _ in folds]
    tasks = [(sub, c, int(rng.integers(2**31 - 1))) for sub in subs for c in c_grid]
    heads = iter(fit_heads(z, y, n_classes, tasks, max_iter=max_iter, n_jobs=n_jobs))
    scores = dict.fromkeys(c_grid, 0.0)
    for _, score_idx in folds:
        for c in c_grid:
            w, b, _ = next(heads)
            pred = np.argmax(z[score_idx] @ w.T + b, axis=1)
            scores[c] += worst_accuracy(pred, y[score_idx], units[score_idx]) / len(folds)
    best = max(c_grid, key=lambda c: (scores[c], -c_grid.index(c)))
    return best, scores, len(subs[0]) // np.unique(units[subs[0]]).size


def load_base_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """The deployed model (and its spec) of a finished run directory, or of a ``model.pt`` path."""
    return load_finished_model(path, "dfr base_run", "erm")


# ---------------------------------------------------------------------------------------------- the method
_DFR_ROW: dict[str, Default] = {
    "c_grid": Default(C_GRID, DFR_CODE + ": C_OPTIONS (Waterbirds), REG='l1'"),
    "n_fits": Default(20, DFR_CODE + ": dfr_on_validation_eval(num_retrains=20)"),
    "variant": Default("group", DFR_PAPER),
    "selection": Default("last", DFR_BASE),
}


@register_method("dfr")
class DFR(Method):
    """Deep Feature Reweighting: re-fit the last layer of a frozen ERM model on group-balanced validation."""

    family = "last-layer retraining"
    final_stage = ("erm", None)

    def stage_plan(self, val: GroupDataset | None) -> list[PlannedStage]:
        hp: DFRHparams = self.hparams  # type: ignore[assignment]
        base = [] if hp.base_run else super().stage_plan(val)
        head = f"re-fitted on validation ({hp.n_fits} logistic regressions, C chosen on validation halves)"
        return [*base, PlannedStage("last layer", None, selects=head)]

    summary = "re-fit the last layer of an ERM model on group-balanced validation (L1 logistic regression)"
    execution_hparams: ClassVar[frozenset[str]] = frozenset({"n_jobs"})
    #: searched by `debiaslab tune`: the base ERM's lr and weight decay and the head's inverse L1 strength C
    #: (a searched value of the tuple ``c_grid`` is a one-element grid: that C alone)
    search_space: ClassVar[SearchSpace] = {**COMMON_SPACE, "c_grid": loguniform(1e-2, 10.0)}
    run_inputs: ClassVar[frozenset[str]] = frozenset({"base_run"})
    deploys_last_stage: ClassVar[bool] = False  # the deployed head is re-fitted after the last stage
    Hparams: ClassVar[type[TrainHparams]] = DFRHparams
    hparam_table: ClassVar[HparamTable] = {
        "*": dict(_DFR_ROW),
        "colored_mnist": {**CMNIST_MLP, "selection": _DFR_ROW["selection"]},
    }
    requires: ClassVar[Requirements] = Requirements(val_attrs=True)

    def resolved_variant(self, val: GroupDataset | None) -> str:
        """``group`` or ``class``, with ``auto`` resolved from the labels validation has."""
        variant = self.hparams.variant
        if variant == "auto":
            return "group" if val is not None and val.has_attrs else "class"
        return variant

    def check_labels(self, train: GroupDataset, val: GroupDataset | None) -> None:
        """Also: DFR fits its head on validation, which must exist, hold every class, and (for the group
        variant) carry attribute labels."""
        super().check_labels(train, val)
        if val is None:
            raise ConfigError(f"method {self.name!r} fits its head on the validation split, but none was given")
        if val.split == "test":
            raise ConfigError(
                f"method {self.name!r} fits its last layer on the selection split, which is {val.name}/test here "
                "(--protocol paper): it would train on the test set; use --protocol default"
            )
        if self.resolved_variant(val) == "group" and not val.has_attrs:
            raise MissingLabelsError(
                f"method {self.name!r} with variant='group' balances validation by group, but "
                f"{val.name}/{val.split} has no attribute labels; use dfr_class (or variant='class')"
            )
        absent = torch.nonzero(val.class_counts == 0).flatten().tolist()
        if absent:
            raise ConfigError(
                f"method {self.name!r} fits its head on validation, but {val.name}/{val.split} has no example "
                f"of class(es) {absent}"
            )

    def health(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer | None = None) -> list[Check]:
        """Also: examples per group (class) on the validation split the head is fitted on; solver convergence."""
        checks = super().health(train, val, trainer)
        return checks + (dfr_checks(self._fitted_result().extras, train, val) if val is not None else [])

    def check_model(self, train: GroupDataset) -> None:
        """The model settings matter only when DFR trains its base model (no ``base_run``)."""
        if not self.hparams.base_run:  # type: ignore[attr-defined]
            super().check_model(train)

    def _fit(self, train: GroupDataset, val: GroupDataset | None, trainer: Trainer) -> FitResult:
        hp: DFRHparams = self.hparams  # type: ignore[assignment]
        assert val is not None  # check_labels ran
        variant = self.resolved_variant(val)
        model, spec, stages = self._base_model(train, val, trainer)
        model.eval()
        train_emb = trainer.predict(model.features, train)
        val_emb = trainer.predict(model.features, val)

        units_t = val.group if variant == "group" else val.y
        units, y = units_t.numpy(), val.y.numpy()
        with torch.no_grad():
            base_pred = model.head(val_emb.to(model.head.weight.device)).argmax(1).cpu().numpy()
        from sklearn.preprocessing import StandardScaler  # imported here: listing methods stays fast

        scaler = StandardScaler().fit(train_emb.numpy())
        mean, scale = scaler.mean_.astype(np.float64), scaler.scale_.astype(np.float64)
        z = (val_emb.numpy().astype(np.float64) - mean) / scale

        trainer.seed_stage("dfr")
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))
        log.info("dfr: choosing C among %s on halves of validation (%d examples)", list(hp.c_grid), len(y))
        best_c, scores, tune_size = tune_c(
            z,
            y,
            units,
            val.n_classes,
            hp.c_grid,
            rng,
            symmetric=hp.tune_symmetric,
            max_iter=hp.max_iter,
            n_jobs=hp.n_jobs,
        )
        subs = [balanced_subsample(units, rng) for _ in range(hp.n_fits)]
        tasks = [(sub, best_c, int(rng.integers(2**31 - 1))) for sub in subs]
        log.info("dfr: averaging %d fits with C=%g on %d balanced examples each", hp.n_fits, best_c, len(subs[0]))
        heads = fit_heads(z, y, val.n_classes, tasks, max_iter=hp.max_iter, n_jobs=hp.n_jobs)
        unconverged, size = sum(not ok for _, _, ok in heads), len(subs[0])
        if unconverged:
            log.warning("dfr: liblinear hit max_iter=%d in %d of %d final fits", hp.max_iter, unconverged, hp.n_fits)
        weights, biases = [w for w, _, _ in heads], [b for _, b, _ in heads]
        weight, bias = fold_standardisation(np.mean(weights, axis=0), np.mean(biases, axis=0), mean, scale)
        install_head(model, weight, bias)

        metric = "worst_group" if variant == "group" else "worst_class"
        per_unit = size // int(np.unique(units[units >= 0]).size)
        log.info(
            "dfr (%s): C=%g chosen by %s on half of validation (%s); head = mean of %d fits on %d examples",
            variant,
            best_c,
            metric,
            ", ".join(f"C={c:g}: {s:.4f}" for c, s in scores.items()),
            hp.n_fits,
            size,
        )
        return FitResult(
            model=model,
            model_spec=spec,
            stages=stages,
            selection="dfr_val_half",
            selected={"stage": "dfr", "C": best_c, "rule": f"{metric} on half of validation", "score": scores[best_c]},
            extras={
                "variant": variant,
                "C": best_c,
                "tune_scores": {str(c): s for c, s in scores.items()},
                "tune_metric": metric,
                "tune_balanced_per_unit": tune_size,
                "balanced_per_unit": per_unit,
                "balanced_size": size,
                "n_fits": hp.n_fits,
                "unconverged_fits": unconverged,
                "base": f"run {hp.base_run}" if hp.base_run else "trained (stage erm)",
                "base_val_accuracy": float((base_pred == y).mean()),
                f"base_val_{metric}": worst_accuracy(base_pred, y, units),
            },
        )

    def _base_model(
        self, train: GroupDataset, val: GroupDataset, trainer: Trainer
    ) -> tuple[nn.Module, dict[str, Any], list[StageResult]]:
        """The frozen ERM model: loaded from ``base_run`` (shape and classes checked) or trained as stage ``erm``
        (the stage name seeds it, so with the same seed and settings it is the model the ``erm`` method trains)."""
        hp: DFRHparams = self.hparams  # type: ignore[assignment]
        if hp.base_run:
            model, spec = load_base_model(hp.base_run)
            shape, k = tuple(int(d) for d in spec["input_shape"]), int(spec["n_classes"])
            if shape != tuple(train.input_shape) or k != train.n_classes:
                raise ConfigError(
                    f"dfr base_run {hp.base_run!r} holds a model for inputs {shape} with {k} classes, but "
                    f"{train.name}/{train.split} has inputs {tuple(train.input_shape)} with {train.n_classes} "
                    "classes"
                )
            _check_backbone(model, hp.base_run)
            log.info("dfr: base model loaded from %s (training hyperparameters unused)", hp.base_run)
            return model.to(trainer.device), spec, []
        stage, result = trainer.run_stage("erm", erm_stage(self, train, self.selection_rule(val)), train, val)
        _check_backbone(stage.modules, "the base ERM model")
        return stage.modules, self.model_spec(train), [result]


@register_method("dfr_class")
class DFRClass(DFR):
    """DFR without group labels: balance validation by class and choose C by worst-class accuracy."""

    summary = "DFR balanced by class, C by worst-class accuracy (no attribute labels needed)"
    hparam_table: ClassVar[HparamTable] = {
        "*": {**_DFR_ROW, "variant": Default("class", OURS_CLASS)},
        "colored_mnist": {**CMNIST_MLP, "selection": _DFR_ROW["selection"]},
    }
    requires: ClassVar[Requirements] = Requirements()


#: fewer examples than this per group (class) in the balanced subsample make DFR's head a guess
DFR_MIN_PER_UNIT = 10


def dfr_checks(extras: dict[str, Any], train: GroupDataset, val: GroupDataset) -> list[Check]:
    """DFR's premises: enough examples of every group (``class`` variant: class) on validation, where the head is
    fitted, every training group present there, and liblinear converged in the final fits."""
    labelled = extras.get("variant", "group") == "group"
    unit = "group" if labelled else "class"
    units, n_units = (val.group, val.n_groups) if labelled else (val.y, val.n_classes)
    counts = torch.bincount(units[units >= 0], minlength=n_units)
    trained = train.group_counts if labelled and train.has_attrs else train.class_counts
    absent = [int(u) for u in torch.nonzero((trained > 0) & (counts[: trained.numel()] == 0)).flatten()]
    per_unit = int(extras.get("balanced_per_unit", 0))
    value = {"per_unit_in_subsample": per_unit, "val_counts": counts.tolist(), "absent_from_val": absent}
    problems = []
    if per_unit < DFR_MIN_PER_UNIT:
        problems.append(
            f"the head is fitted on {per_unit} validation example(s) per {unit}, too few for a stable head "
            f"(fewer than {DFR_MIN_PER_UNIT})"
        )
    if absent:
        problems.append(f"training {unit}(s) {absent} have no validation example: the head never sees them")
    text = "; ".join(problems) or f"{per_unit} validation examples per {unit}"
    size = Check("dfr_examples_per_group", "warn" if problems else "ok", value, text, uses_labels=labelled)
    unconverged, n_fits = int(extras.get("unconverged_fits", 0)), int(extras.get("n_fits", 0))
    solver = Check(
        "dfr_solver_converged",
        "warn" if unconverged else "ok",
        {"unconverged_fits": unconverged, "n_fits": n_fits},
        f"liblinear hit max_iter in {unconverged} of {n_fits} final fits (raise max_iter)"
        if unconverged
        else f"all {n_fits} final fits converged",
    )
    return [size, solver]


def _check_backbone(model: nn.Module, what: str) -> None:
    if not callable(getattr(model, "features", None)) or not isinstance(getattr(model, "head", None), nn.Linear):
        raise ConfigError(f"dfr needs a backbone with features(x) and a linear head; {what} has none")


@torch.no_grad()
def install_head(model: nn.Module, weight: np.ndarray, bias: np.ndarray) -> nn.Linear:
    """Replace ``model.head`` by a Linear holding ``weight`` (K, D) and ``bias`` (K,), on the head's device."""
    old: nn.Linear = model.head  # type: ignore[assignment]
    head = nn.Linear(old.in_features, weight.shape[0], device=old.weight.device, dtype=old.weight.dtype)
    head.weight.copy_(_tensor(weight, head.weight))
    head.bias.copy_(_tensor(bias, head.bias))
    model.head = head
    return head


def _tensor(array: np.ndarray, like: Tensor) -> Tensor:
    return torch.as_tensor(array, dtype=like.dtype, device=like.device)
