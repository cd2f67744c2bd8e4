"""The one training loop: device, precision, batching, optimiser steps, per-epoch validation, selection,
atomic checkpoints and resume. Methods describe stages (:mod:`debiaslab.engine.stage`); this runs them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.checkpoint import clone_state, load_checkpoint, load_weights, save_checkpoint
from debiaslab.engine.data_parallel import (
    GradSync,
    all_finite,
    check_global_batch,
    local_batches,
    reduce_sums,
    steps_per_epoch,
)
from debiaslab.engine.optim import build_optimizer, build_scheduler
from debiaslab.engine.progress import ProgressReporter
from debiaslab.engine.rule_keeper import RuleKeeper
from debiaslab.engine.sampling import iterate_batches
from debiaslab.engine.sparse import SparseTraining
from debiaslab.engine.stage import Stage, StageResult, StepContext
from debiaslab.errors import ConfigError, TrainingError
from debiaslab.evaluation.metrics import EvalReport, PredictionCollector
from debiaslab.evaluation.selection import check_rule_applicable, get_rule
from debiaslab.utils import dist
from debiaslab.utils.io import atomic_write_text, finite_or_none
from debiaslab.utils.logs import OncePerRun, show_progress_logs
from debiaslab.utils.seed import derive_seed, rng_state, seed_everything, set_rng_state

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
#: a step's loss this many times the stage's reference loss (its first epoch's mean, at least 1) means training
#: diverged: the run stops instead of deploying what it has become (a finite blow-up that NaN checks miss). Ours:
#: far above what a loss with an annealed penalty reaches (IRM's λ goes up to 1e5 in its search space)
EXPLODED = 1e6


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"device {device!r} is not a valid torch device (e.g. cpu, cuda, cuda:1)") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


@contextlib.contextmanager
def eval_mode(modules: nn.Module | None) -> Iterator[None]:
    """Put ``modules`` in eval mode for the block and back in training mode after it if they were (None: no-op)."""
    was_training = modules is not None and modules.training
    if modules is not None:
        modules.eval()
    try:
        yield
    finally:
        if was_training:
            modules.train()


class Trainer:
    """Runs stages. One instance per run; it owns the device, precision, seed, checkpoints and logs.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"``, ...
        precision: ``"fp32"`` or ``"bf16"`` (autocast for forward and loss; optimiser state stays fp32).
        seed: master seed; stage initialisation and every epoch's sampling derive from it.
        run_dir: where checkpoints and ``metrics.jsonl`` go (None: nothing is written).
        resume: continue from checkpoints found in ``run_dir``.
        progress: show a progress bar.
        eval_batch_size: batch size for evaluation passes.
        channels_last: feed 4-D inputs in channels-last memory format (faster convs on CPU and GPU).
        num_threads: torch intra-op threads (None: leave torch's default).
        report_rules: further selection rules under which every stage that selects on validation (rule other
            than ``last``; not a stage with ``run_rules=False``) also keeps its best epoch's weights
            (``StageResult.alternatives``), beside the rule it deploys; one training then reports several rules.
        epoch_hook: called after every validated epoch of a stage that selects on validation, with the stage
            name, the 1-based epoch and the validation metrics its rule scores; it may stop the run by raising
            (a tuning trial reports the score and is pruned this way, after the epoch's checkpoint is written).
        callbacks: objects with ``on_epoch_end(record)``, called with every epoch's record (the line written to
            ``metrics.jsonl``) on the main process, e.g. the experiment trackers of :mod:`debiaslab.engine.tracking`.
        config_hash: the hash of the run's configuration, recorded in every checkpoint; a checkpoint recording
            another is refused on resume (None: not checked).
    """

    def __init__(
        self,
        *,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        seed: int = 0,
        run_dir: str | os.PathLike[str] | None = None,
        resume: bool = False,
        progress: bool = True,
        eval_batch_size: int = 2048,
        channels_last: bool = False,
        num_threads: int | None = None,
        report_rules: Sequence[str] = (),
        epoch_hook: Callable[[str, int, dict[str, Any]], None] | None = None,
        callbacks: Sequence[Any] = (),
        config_hash: str | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r} unknown; expected one of {', '.join(PRECISIONS)}")
        self.device = resolve_device(device)
        self.precision = precision
        self.seed = int(seed)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.resume = resume
        self.eval_batch_size = int(eval_batch_size)
        self.channels_last = channels_last
        self.progress = ProgressReporter(enabled=progress and dist.is_main_process())
        self.history: list[dict[str, Any]] = []
        self.sparse: dict[str, SparseTraining] = {}  # stage name -> masks of the stages that trained sparse
        self.report_rules = tuple(get_rule(r).name for r in report_rules)
        self.last_stage: Stage | None = None  # the stage run last (its modules hold the weights it selected)
        self._sync: GradSync | None = None  # the training stage's loss and gradient averaging
        self.epoch_hook = epoch_hook
        self.callbacks = list(callbacks)
        self.config_hash = config_hash
        self._loss_ref: float | None = None  # the running stage's reference loss (see EXPLODED)
        if num_threads is not None:
            if isinstance(num_threads, bool) or int(num_threads) < 1:
                raise ConfigError(f"num_threads {num_threads!r} must be an integer >= 1 (torch CPU threads)")
            torch.set_num_threads(int(num_threads))
        self._repeats = OncePerRun()  # an evaluation warning that every epoch repeats is shown once
        if progress:
            show_progress_logs()

    # ------------------------------------------------------------------ helpers
    @property
    def checkpoint_dir(self) -> Path | None:
        return self.run_dir / "checkpoints" if self.run_dir is not None else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def prepare_inputs(self, x: Tensor) -> Tensor:
        x = x.to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def save(self, path: Path, state: dict[str, Any]) -> None:
        """Write a checkpoint of this run (checksummed, with the run's configuration hash)."""
        save_checkpoint(path, state, self.config_hash)

    def load(self, path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Read and verify a checkpoint of this run (see :func:`~debiaslab.engine.checkpoint.load_checkpoint`)."""
        redo = "start the run again with --overwrite (or delete the file to train its stage again)"
        return load_checkpoint(path, map_location=map_location, config=self.config_hash, redo=redo)

    def seed_stage(self, name: str) -> None:
        """Seed all RNGs from (seed, stage): a stage builds identical modules whether or not earlier ones ran."""
        seed_everything(derive_seed(self.seed, "stage", name))

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def predict(self, predict_fn: Callable[[Tensor], Tensor], dataset: GroupDataset) -> Tensor:
        """Logits for every example of ``dataset``, in order, as float32 on the CPU."""
        out = []
        for idx in iterate_batches(torch.arange(len(dataset)), self.eval_batch_size):
            with self.autocast():
                out.append(predict_fn(self.prepare_inputs(dataset.inputs(idx))).float().cpu())
        return torch.cat(out) if out else torch.empty(0, dataset.n_classes)

    def evaluate(
        self,
        predict_fn: Callable[[Tensor], Tensor],
        dataset: GroupDataset,
        modules: nn.Module | None = None,
        **report_kwargs: Any,
    ) -> EvalReport:
        """Evaluate in eval mode (restoring the previous mode of ``modules`` afterwards)."""
        with eval_mode(modules):
            logits = self.predict(predict_fn, dataset)
        collector = PredictionCollector()
        collector.add(logits, dataset.y, dataset.attr)
        return collector.report(
            n_classes=dataset.n_classes,
            n_attrs=dataset.n_attrs,
            aligned_groups=dataset.aligned_groups,
            **report_kwargs,
        )

    # ------------------------------------------------------------------ stages
    def run_stage(
        self,
        name: str,
        build: Callable[[], Stage],
        train: GroupDataset,
        val: GroupDataset | None = None,
    ) -> tuple[Stage, StageResult]:
        """Seed, build and train one stage (or restore it from checkpoints); returns the stage with its
        modules holding the selected weights, and the stage's result."""
        self.seed_stage(name)
        stage = build()
        if stage.name != name:
            raise ValueError(f"stage built as {stage.name!r} but run as {name!r}")
        rule = get_rule(stage.selection)
        if val is None and rule.name != "last":
            raise ConfigError(f"stage {name!r} selects by {rule.name} but no validation split was given")
        if val is not None and rule.needs_groups:
            check_rule_applicable(rule, val.has_attrs)
        stage.modules.to(self.device)
        dist.broadcast_module(stage.modules)

        self.last_stage = stage
        done = self._ckpt_path(name, "done")
        if self.resume and done is not None and done.exists():
            return stage, self._restore_done(stage, done)
        result = self._train(stage, rule, train, val)
        return stage, result

    def _extra_rules(self, stage: Stage, rule: Any, val: GroupDataset | None) -> list[str]:
        """The rules kept beside ``rule``: the stage's own, and the trainer's for stages that select."""
        if val is None:
            return []
        names = [*stage.report_rules, *(self.report_rules if rule.name != "last" and stage.run_rules else ())]
        names = [n for n in dict.fromkeys(get_rule(n).name for n in names) if n != rule.name]
        for name in names:
            check_rule_applicable(name, val.has_attrs)
        return names

    def _ckpt_path(self, name: str, kind: str) -> Path | None:
        return self.checkpoint_dir / f"{name}.{kind}.pt" if self.checkpoint_dir is not None else None

    def _start_sparse(self, stage: Stage, trainable: list[nn.Parameter]) -> SparseTraining | None:
        """Masks for a stage that trains sparse (random from the run seed and stage name), else None."""
        self.sparse.pop(stage.name, None)
        if stage.sparsity is None:
            return None
        seed = derive_seed(self.seed, stage.name, "sparse")
        self.sparse[stage.name] = SparseTraining(stage.modules, stage.sparsity, trainable=trainable, seed=seed)
        return self.sparse[stage.name]

    def _restore_done(self, stage: Stage, path: Path) -> StageResult:
        state = self.load(path, map_location=self.device)
        load_weights(stage.modules, state["modules"], path)
        result = StageResult(**state["result"], resumed=True)
        self.history.extend(result.history)
        log.info("stage %s restored from %s (selected epoch %d)", stage.name, path, result.selected_epoch)
        return result

    def _train(self, stage: Stage, rule: Any, train: GroupDataset, val: GroupDataset | None) -> StageResult:
        check_global_batch(stage)
        params = stage.parameters_to_optimize()
        optimizer = build_optimizer(params, stage.optim)
        plateau_mode = "min" if rule.mode == "min" else "max"
        scheduler = build_scheduler(optimizer, stage.optim, stage.epochs, plateau_mode)
        flat_params = [p for group in optimizer.param_groups for p in group["params"]]
        sparse = self._start_sparse(stage, flat_params)
        history: list[dict[str, Any]] = []
        best_score: float | None = None
        best_epoch = 0
        best_state: dict[str, Tensor] | None = None
        start_epoch = 0
        wall = 0.0

        last_path = self._ckpt_path(stage.name, "last")
        best_path = self._ckpt_path(stage.name, "best")
        rules_path = self._ckpt_path(stage.name, "rules")
        resuming = self.resume and last_path is not None and last_path.exists()
        keeper = RuleKeeper(self._extra_rules(stage, rule, val), rules_path, resume=resuming, trainer=self)
        if resuming:
            assert last_path is not None
            state = self.load(last_path, map_location=self.device)
            load_weights(stage.modules, state["modules"], last_path)
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            if sparse is not None:
                sparse.load_state_dict(state["sparse"])
            history = list(state["history"])
            start_epoch, best_epoch, best_score, wall = (
                state["epoch"],
                state["best_epoch"],
                state["best_score"],
                state["wall_time_s"],
            )
            if best_path is not None and best_path.exists() and rule.name != "last":
                best_state = self.load(best_path)["modules"]
            log.info("stage %s resumed after epoch %d from %s", stage.name, start_epoch, last_path)

        first = history[0].get("train_loss") if history else None
        self._loss_ref = float(first) if isinstance(first, int | float) and math.isfinite(first) else None
        n_steps = steps_per_epoch(len(stage.sampler), stage.batch_size, stage.drop_last)
        ctx = StepContext(stage.name, start_epoch, start_epoch * n_steps, stage.epochs, n_steps)
        self._sync = GradSync(stage, flat_params)  # after loading: every process starts from the same weights
        self.progress.start(stage.name, total=stage.epochs * n_steps, completed=ctx.step)
        try:
            for epoch in range(start_epoch, stage.epochs):
                ctx.epoch = epoch
                t0 = time.perf_counter()
                train_logs = self._train_epoch(stage, train, optimizer, flat_params, ctx)
                record: dict[str, Any] = {"stage": stage.name, "epoch": epoch + 1, **train_logs}
                record["train_time_s"] = round(time.perf_counter() - t0, 4)
                record["lr"] = optimizer.param_groups[0]["lr"]
                if sparse is not None:
                    record.update(sparse.log_values())
                if stage.on_epoch_end is not None:
                    record.update(stage.on_epoch_end(ctx) or {})
                score = None
                if val is not None:
                    score = self._validate(stage, rule, val, record)
                wall += time.perf_counter() - t0
                record["time_s"] = round(time.perf_counter() - t0, 4)
                if rule.name != "last" and rule.is_better(score, best_score):
                    best_score, best_epoch = score, epoch + 1
                    best_state = clone_state(stage.modules)
                    if best_path is not None and dist.is_main_process():
                        self.save(best_path, {"modules": best_state, "epoch": epoch + 1})
                elif rule.name == "last":
                    best_epoch, best_score = epoch + 1, score
                keeper.update(epoch + 1, _scored_metrics(stage, record), stage.modules)
                if scheduler is not None:
                    if stage.optim.scheduler == "plateau":
                        worst = math.inf if plateau_mode == "min" else -math.inf
                        scheduler.step(score if score is not None and math.isfinite(score) else worst)
                    else:
                        scheduler.step()
                history.append(record)
                self.progress.epoch_done(
                    stage.name, epoch + 1, stage.epochs, record, rule, score, (best_score, best_epoch)
                )
                if last_path is not None and dist.is_main_process():
                    self.save(
                        last_path,
                        {
                            "modules": stage.modules.state_dict(),
                            "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict() if scheduler is not None else None,
                            "rng": rng_state(),
                            "sparse": sparse.state_dict() if sparse is not None else None,
                            "history": history,
                            "epoch": epoch + 1,
                            "best_epoch": best_epoch,
                            "best_score": best_score,
                            "wall_time_s": wall,
                        },
                    )
                    self._write_metrics(self.history + history)
                if dist.is_main_process():  # after the checkpoint, so a resumed run does not log an epoch twice
                    for callback in self.callbacks:
                        callback.on_epoch_end(record)
                if self.epoch_hook is not None and val is not None and rule.name != "last":
                    self.epoch_hook(stage.name, epoch + 1, _scored_metrics(stage, record) or {})
        finally:
            self.progress.stop(stage.name)

        if rule.name != "last" and best_state is not None:
            stage.modules.load_state_dict(best_state)
        result = StageResult(stage.name, history, best_epoch, rule.name, best_score, round(wall, 3), keeper.best)
        self.history.extend(history)
        done = self._ckpt_path(stage.name, "done")
        if done is not None and dist.is_main_process():
            result_state = {k: v for k, v in vars(result).items() if k != "resumed"}
            self.save(done, {"modules": stage.modules.state_dict(), "result": result_state})
            for stale in (last_path, best_path, rules_path):
                if stale is not None and stale.exists():
                    stale.unlink()
            self._write_metrics(self.history)
        log.info(
            "stage %s done: selected epoch %d by %s (score %s) in %.1fs",
            stage.name,
            best_epoch,
            rule.name,
            "n/a" if best_score is None else f"{best_score:.4f}",
            wall,
        )
        return result

    def _train_epoch(
        self,
        stage: Stage,
        train: GroupDataset,
        optimizer: torch.optim.Optimizer,
        flat_params: list[nn.Parameter],
        ctx: StepContext,
    ) -> dict[str, float]:
        if stage.train_mode is not None:
            stage.train_mode(stage.modules)
        else:
            stage.modules.train()
        generator = torch.Generator().manual_seed(derive_seed(self.seed, stage.name, "epoch", ctx.epoch))
        indices = stage.sampler.epoch_indices(ctx.epoch, generator)
        sums: dict[str, Tensor] = {}
        n_steps = 0
        clip = stage.optim.grad_clip
        sparse, total_steps = self.sparse.get(stage.name), ctx.epochs * ctx.steps_per_epoch
        world, sync = dist.world_size(), self._sync
        assert sync is not None, "_train_epoch runs inside _train"
        for idx, global_size, scale in local_batches(indices, stage.batch_size, stage.drop_last):
            batch = train.batch(idx)
            batch = batch._replace(x=self.prepare_inputs(batch.x))
            if self.device.type != "cpu":
                batch = batch._replace(**{f: getattr(batch, f).to(self.device) for f in ("y", "attr", "group")})
            with self.autocast():
                out = sync.loss(batch, ctx)
            loss = out["loss"] if isinstance(out, dict) else out
            if not all_finite(loss):
                where = f"stage {stage.name!r}, epoch {ctx.epoch + 1}, step {ctx.step + 1}"
                kept = self._ckpt_path(stage.name, "last")
                keep = f"; last good checkpoint kept at {kept}" if kept is not None and kept.exists() else ""
                raise TrainingError(f"non-finite loss ({float(loss.detach()):.4g}) at {where}{keep}")
            self._check_exploded(loss, stage.name, ctx)
            optimizer.zero_grad(set_to_none=True)
            sync.backward(loss, scale)  # the gradient of the global batch's mean loss, on every process
            if sparse is not None:  # keeps the dense gradient for a mask update, then masks the gradients
                sparse.before_step(ctx.step + 1, total_steps)
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(flat_params, clip)
            optimizer.step()
            if sparse is not None:  # inactive weights to 0; drop/regrow every update_every steps
                sparse.after_step(ctx.step + 1, total_steps, optimizer, global_size)
            ctx.step += 1
            if stage.after_step is not None:
                stage.after_step(ctx)
            share = scale / world  # this process's share of the global batch: the logged means add up over them
            for k, v in out.items() if isinstance(out, dict) else [("loss", loss)]:
                term = v.detach().float()
                sums[k] = sums.get(k, 0.0) + (term * share if share != 1.0 else term)
            n_steps += 1
            self.progress.advance(stage.name)
        sums = reduce_sums(sums)
        return {("train_" + k): float(v) / max(n_steps, 1) for k, v in sums.items()}

    def _check_exploded(self, loss: Tensor, stage: str, ctx: StepContext) -> None:
        """Stop with one line when a step's loss is :data:`EXPLODED` times the stage's reference loss (its first
        epoch's mean, or this training's first step; at least 1): the weights have diverged."""
        value = float(loss.detach().float().max())
        if self._loss_ref is None:
            self._loss_ref = value
            return
        limit = EXPLODED * max(abs(self._loss_ref), 1.0)
        if value > limit:
            kept = self._ckpt_path(stage, "last")
            keep = f"; last checkpoint kept at {kept}" if kept is not None and kept.exists() else ""
            raise TrainingError(
                f"the loss exploded ({value:.3g}, over {EXPLODED:g} x the stage's first-epoch loss "
                f"{self._loss_ref:.3g}) at stage {stage!r}, epoch {ctx.epoch + 1}, step {ctx.step + 1}: training "
                f"diverged and was stopped (lower the learning rate or set grad_clip){keep}"
            )

    def _validate(self, stage: Stage, rule: Any, val: GroupDataset, record: dict[str, Any]) -> float | None:
        with self._repeats.on("debiaslab.evaluation.metrics", "debiaslab.evaluation.selection"):
            return self._validate_once(stage, rule, val, record)

    def _validate_once(self, stage: Stage, rule: Any, val: GroupDataset, record: dict[str, Any]) -> float | None:
        main = self.evaluate(stage.predict_fn, val, stage.modules)
        record["val"] = main.metrics
        scored = main
        for key, fn in stage.extra_predictors.items():
            report = self.evaluate(fn, val, stage.modules)
            record[f"val_{key}"] = report.metrics
            if key == stage.selection_predictor:
                scored = report
        return rule.score(scored.metrics) if rule.name != "last" else None

    def _write_metrics(self, lines: list[dict[str, Any]]) -> None:
        if self.run_dir is None:
            return
        import json

        text = "".join(json.dumps(finite_or_none(line)) + "\n" for line in lines)
        atomic_write_text(self.run_dir / "metrics.jsonl", text)


def _scored_metrics(stage: Stage, record: dict[str, Any]) -> dict[str, Any] | None:
    """The validation metrics the stage's rule scores (those of ``selection_predictor`` when it names one)."""
    if stage.selection_predictor is not None and stage.selection_predictor in stage.extra_predictors:
        return record.get(f"val_{stage.selection_predictor}")
    return record.get("val")
