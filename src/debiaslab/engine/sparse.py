"""Dynamic sparse training (RigL-style drop and regrow, as REST uses it) for any stage.

A stage asks for it with ``Stage.sparsity = SparseConfig(...)``; the :class:`~debiaslab.engine.trainer.Trainer`
then drives one :class:`SparseTraining` per stage:

- **What is masked.** The ``weight`` of every ``nn.Linear`` and convolution (``nn.Conv{1,2,3}d``,
  ``nn.ConvTranspose{1,2,3}d``) among the parameters the stage's optimiser trains. Biases, normalisation
  parameters (all 1-D), embeddings, frozen parameters and free-standing parameters (e.g. BAM's auxiliary logit
  table) stay dense: these are the layers whose multiply-adds dominate the cost (:mod:`debiaslab.engine.cost`).
- **Initial masks.** Per-layer densities by ERK (``density_l ∝ Σ dims / Π dims``, scaled so the active weights
  total the global density ``D`` of the maskable weights; layers that would exceed 1 are made dense and the rest
  re-scaled, repeatedly) or uniform (every layer ``D``). Counts are integers allocated by largest remainder, so
  the total is exactly ``round(D · N)`` (every layer keeps at least one weight). Positions are drawn at random
  from the stage's seed, and the weights outside the mask are set to 0.
- **Every step.** After backward (and gradient averaging) and before clipping and the optimiser step, the
  gradients of inactive weights are zeroed, so the optimiser never moves them and their momentum / Adam moments
  stay 0; after the step the weights are multiplied by their masks (inactive ones exactly 0).
- **Mask updates.** Every ``update_every`` (ΔT) steps while ``step < end_fraction · total_steps``, each layer
  drops its ``k = ⌈ζ(t) · n_active⌉`` active weights of smallest magnitude and regrows the ``k`` positions that
  were inactive *before this update* with the largest dense-gradient magnitude (a weight dropped now is not
  regrown in the same update; the REST release lets it be, which amounts to resetting it to 0). The dense gradient
  is the one of the current step, kept before the gradients are masked. Regrown weights and the optimiser state
  of every changed position start at 0. ``k`` is capped by the number of inactive positions, so per-layer counts
  never change. ``ζ(t) = ζ_min + (ζ_0 − ζ_min)(1 + cos(π t / T_end)) / 2`` with ``T_end = end_fraction ·
  total_steps`` (the release: ζ_0 = 0.5, ζ_min = 0.005, cosine over all of training, i.e. ``end_fraction=1``;
  RigL stops at 0.75). ``static=True`` keeps the initial masks.

The masks and counters travel in the stage's checkpoint (:meth:`SparseTraining.state_dict`), so a resumed run
continues bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from debiaslab.errors import ConfigError, DataError

SPARSE_INITS = ("erk", "uniform")

#: module types whose ``weight`` is masked (and whose multiply-adds :mod:`debiaslab.engine.cost` counts)
MASKABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear,
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
)


@dataclass(frozen=True)
class SparseConfig:
    """How a stage trains sparse.

    Attributes:
        density: global fraction D of active maskable weights, in (0, 1].
        init: ``erk`` or ``uniform`` per-layer densities.
        update_every: ΔT, optimiser steps between mask updates.
        static: keep the initial masks (no drop/regrow).
        drop_fraction: ζ_0, the fraction of each layer's active weights replaced at the first update.
        drop_fraction_min: ζ_min, where the cosine ends.
        end_fraction: no update once ``step >= end_fraction · total_steps`` (1.0: the REST release; RigL: 0.75).
    """

    density: float = 0.05
    init: str = "erk"
    update_every: int = 1000
    static: bool = False
    drop_fraction: float = 0.5
    drop_fraction_min: float = 0.005
    end_fraction: float = 1.0

    def __post_init__(self) -> None:
        if not (0.0 < self.density <= 1.0):
            raise ConfigError(f"density {self.density!r} must be in (0, 1] (the fraction of weights kept)")
        if self.init not in SPARSE_INITS:
            raise ConfigError(f"sparse_init {self.init!r} unknown; expected one of {', '.join(SPARSE_INITS)}")
        if int(self.update_every) != self.update_every or self.update_every < 1:
            raise ConfigError(f"sparse_update_every {self.update_every!r} must be an integer >= 1 (optimiser steps)")
        if not (0.0 < self.drop_fraction <= 1.0):
            raise ConfigError(f"sparse_drop_fraction {self.drop_fraction!r} must be in (0, 1]")
        if not (0.0 <= self.drop_fraction_min <= self.drop_fraction):
            raise ConfigError(
                f"drop_fraction_min {self.drop_fraction_min!r} must be in [0, drop_fraction={self.drop_fraction}]"
            )
        if not (0.0 <= self.end_fraction <= 1.0):
            raise ConfigError(f"sparse_end_fraction {self.end_fraction!r} must be in [0, 1] (fraction of training)")

    def drop_fraction_at(self, step: int, total_steps: int) -> float:
        """ζ(t): cosine from ``drop_fraction`` at t=0 to ``drop_fraction_min`` at ``end_fraction · total_steps``."""
        t_end = max(self.end_fraction * total_steps, 1.0)
        progress = min(step / t_end, 1.0)
        return self.drop_fraction_min + (self.drop_fraction - self.drop_fraction_min) * 0.5 * (
            1.0 + math.cos(math.pi * progress)
        )

    def is_update_step(self, step: int, total_steps: int) -> bool:
        """Whether the masks are updated after 1-based optimiser step ``step``."""
        return not self.static and step % self.update_every == 0 and step < self.end_fraction * total_steps


# ---------------------------------------------------------------------------------------------- what is masked
def maskable_weights(module: nn.Module, trainable: Iterable[Tensor] | None = None) -> dict[str, nn.Parameter]:
    """``{qualified name: weight}`` of the Linear/Conv modules in ``module`` (each parameter once), restricted to
    ``trainable`` (e.g. the optimiser's parameters) when given, and to parameters requiring grad."""
    allowed = None if trainable is None else {id(p) for p in trainable}
    found: dict[str, nn.Parameter] = {}
    seen: set[int] = set()
    for name, sub in module.named_modules():
        weight = getattr(sub, "weight", None)
        if not isinstance(sub, MASKABLE_TYPES) or not isinstance(weight, nn.Parameter):
            continue
        if not weight.requires_grad or id(weight) in seen or (allowed is not None and id(weight) not in allowed):
            continue
        seen.add(id(weight))
        found[f"{name}.weight" if name else "weight"] = weight
    return found


# ---------------------------------------------------------------------------------------------- layer densities
def erk_densities(shapes: Mapping[str, Sequence[int]], density: float) -> dict[str, float]:
    """Erdős–Rényi-kernel densities: ``ε · Σ dims / Π dims`` per layer, ε chosen so the active weights total
    ``density`` of all weights; layers whose density would exceed 1 are dense and ε is solved again."""
    numel = {k: math.prod(s) for k, s in shapes.items()}
    raw = {k: sum(s) / numel[k] for k, s in shapes.items()}
    target = density * sum(numel.values())
    dense: set[str] = set()
    while True:
        rest = [k for k in shapes if k not in dense]
        if not rest:
            return {k: 1.0 for k in shapes}
        budget = target - sum(numel[k] for k in dense)
        eps = budget / sum(raw[k] * numel[k] for k in rest)
        over = {k for k in rest if eps * raw[k] > 1.0}
        if not over:
            return {k: 1.0 if k in dense else eps * raw[k] for k in shapes}
        dense |= over  # each layer made dense frees budget, so ε only grows: layers over 1 stay over 1


def uniform_densities(shapes: Mapping[str, Sequence[int]], density: float) -> dict[str, float]:
    """Every layer at the global density."""
    return {k: float(density) for k in shapes}


def layer_counts(numels: Mapping[str, int], densities: Mapping[str, float], density: float) -> dict[str, int]:
    """Integer active-weight counts: ``densities`` rounded by largest remainder so they total
    ``round(density · Σ numel)``; at least 1 and at most ``numel`` per layer."""
    total = round(density * sum(numels.values()))
    exact = {k: min(densities[k], 1.0) * numels[k] for k in numels}
    counts = {k: min(math.floor(v), numels[k]) for k, v in exact.items()}
    short = total - sum(counts.values())
    order = sorted(numels, key=lambda k: (counts[k] - exact[k], k))  # largest remainder first
    for k in order:
        if short <= 0:
            break
        if counts[k] < numels[k]:
            counts[k] += 1
            short -= 1
    return {k: max(c, 1) for k, c in counts.items()}


def random_mask(shape: Sequence[int], count: int, generator: torch.Generator) -> Tensor:
    """A boolean tensor of ``shape`` with exactly ``count`` True positions drawn uniformly."""
    flat = torch.zeros(math.prod(shape), dtype=torch.bool)
    flat[torch.randperm(flat.numel(), generator=generator)[:count]] = True
    return flat.reshape(tuple(shape))


# ---------------------------------------------------------------------------------------------- the mechanism
class SparseTraining:
    """Masks of one stage's weights and the hooks the Trainer calls around every optimiser step.

    Args:
        module: the stage's modules.
        cfg: the sparse configuration.
        trainable: parameters the optimiser trains (only those are masked); default: all requiring grad.
        seed: seeds the random initial masks.
    """

    def __init__(
        self, module: nn.Module, cfg: SparseConfig, *, trainable: Iterable[Tensor] | None = None, seed: int = 0
    ) -> None:
        self.cfg = cfg
        self.weights = maskable_weights(module, trainable)
        if not self.weights:
            raise ConfigError(
                f"sparse training (density {cfg.density}) asked for, but the stage trains no Linear or Conv weight "
                f"to mask; expected a model with at least one of {', '.join(t.__name__ for t in MASKABLE_TYPES)}"
            )
        shapes = {k: tuple(w.shape) for k, w in self.weights.items()}
        make = erk_densities if cfg.init == "erk" else uniform_densities
        counts = layer_counts({k: w.numel() for k, w in self.weights.items()}, make(shapes, cfg.density), cfg.density)
        generator = torch.Generator().manual_seed(int(seed))
        self.masks: dict[str, Tensor] = {
            k: random_mask(shapes[k], counts[k], generator).to(w.device) for k, w in self.weights.items()
        }
        self.updates = 0  # mask updates done
        self.regrown = 0  # weights regrown over all updates
        self.steps = 0  # optimiser steps taken under these masks
        self.examples = 0  # training examples those steps processed
        self.update_examples = 0  # examples of the steps whose dense gradient fed an update
        self._grad_scores: dict[str, Tensor] | None = None
        self.apply_masks()

    # ------------------------------------------------------------------ hooks
    @torch.no_grad()
    def before_step(self, step: int, total_steps: int) -> None:
        """After backward, before clipping and ``optimizer.step()`` of 1-based step ``step``: keep the dense
        gradient magnitudes if this step updates the masks, then zero the gradients of inactive weights."""
        if self.cfg.is_update_step(step, total_steps):
            self._grad_scores = {k: w.grad.detach().abs() for k, w in self.weights.items() if w.grad is not None}
        for k, w in self.weights.items():
            if w.grad is not None:
                w.grad.mul_(self.masks[k])

    @torch.no_grad()
    def after_step(self, step: int, total_steps: int, optimizer: torch.optim.Optimizer, batch_size: int) -> None:
        """After ``optimizer.step()`` of step ``step``: inactive weights to exactly 0, then drop/regrow on an
        update step."""
        self.apply_masks()
        self.steps += 1
        self.examples += int(batch_size)
        if self._grad_scores is not None:
            self._update(self.cfg.drop_fraction_at(step, total_steps), self._grad_scores, optimizer)
            self._grad_scores = None
            self.update_examples += int(batch_size)

    @torch.no_grad()
    def apply_masks(self) -> None:
        for k, w in self.weights.items():
            w.mul_(self.masks[k])

    @torch.no_grad()
    def _update(self, zeta: float, scores: dict[str, Tensor], optimizer: torch.optim.Optimizer) -> None:
        for k, w in self.weights.items():
            if k not in scores:  # no gradient reached this layer at this step: nothing to regrow by
                continue
            mask = self.masks[k].view(-1)  # masks are contiguous: edits of the view edit the mask
            n_active = int(mask.sum())
            n = min(math.ceil(zeta * n_active), n_active, mask.numel() - n_active)
            if n <= 0:
                continue
            magnitude = w.detach().abs().reshape(-1).masked_fill(~mask, math.inf)
            drop = torch.topk(magnitude, n, largest=False).indices
            grad = scores[k].reshape(-1).masked_fill(mask, -math.inf)
            grow = torch.topk(grad, n, largest=True).indices
            changed = torch.zeros_like(mask)
            changed[drop] = True
            changed[grow] = True
            mask[drop] = False
            mask[grow] = True
            changed = changed.view(w.shape)
            w.masked_fill_(changed, 0.0)  # dropped weights vanish, regrown ones start at 0
            for value in optimizer.state.get(w, {}).values():
                if isinstance(value, Tensor) and value.shape == w.shape:  # momentum, Adam moments
                    value.masked_fill_(changed, 0.0)
            self.regrown += n
        self.updates += 1

    # ------------------------------------------------------------------ reporting and checkpoints
    @property
    def n_active(self) -> int:
        return sum(int(m.sum()) for m in self.masks.values())

    @property
    def n_maskable(self) -> int:
        return sum(m.numel() for m in self.masks.values())

    def layer_stats(self) -> list[dict[str, Any]]:
        """Per masked layer: name, shape, size, active weights, density."""
        return [
            {
                "name": k,
                "shape": list(m.shape),
                "numel": m.numel(),
                "active": int(m.sum()),
                "density": int(m.sum()) / m.numel(),
            }
            for k, m in self.masks.items()
        ]

    def log_values(self) -> dict[str, float | int]:
        """What the Trainer adds to each epoch's record (cumulative counters; cost accounting reads them)."""
        return {
            "sparse_density": self.n_active / self.n_maskable,
            "sparse_updates": self.updates,
            "sparse_regrown": self.regrown,
            "sparse_steps": self.steps,
            "sparse_examples": self.examples,
            "sparse_update_examples": self.update_examples,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "masks": {k: m.detach().cpu().clone() for k, m in self.masks.items()},
            "updates": self.updates,
            "regrown": self.regrown,
            "steps": self.steps,
            "examples": self.examples,
            "update_examples": self.update_examples,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        masks = state.get("masks") if isinstance(state, Mapping) else None
        if not isinstance(masks, Mapping) or set(masks) != set(self.weights):
            found = sorted(masks) if isinstance(masks, Mapping) else None
            raise DataError(
                f"checkpoint's sparse masks cover layers {found}, but the stage masks {sorted(self.weights)}; "
                "expected a checkpoint of the same model and sparse settings"
            )
        for k, w in self.weights.items():
            mask = torch.as_tensor(masks[k])
            if tuple(mask.shape) != tuple(w.shape):
                raise DataError(
                    f"checkpoint's sparse mask of {k} has shape {tuple(mask.shape)}, expected {tuple(w.shape)}"
                )
            self.masks[k] = mask.to(device=w.device, dtype=torch.bool)
        for key in ("updates", "regrown", "steps", "examples", "update_examples"):
            setattr(self, key, int(state[key]))
        self.apply_masks()


def stage_counts(history: Iterable[Mapping[str, Any]]) -> dict[str, int] | None:
    """The sparse counters of a stage's last epoch record (None when the stage did not train sparse)."""
    last = None
    for record in history:
        if "sparse_steps" in record:
            last = record
    if last is None:
        return None
    keys = ("sparse_updates", "sparse_steps", "sparse_examples", "sparse_update_examples")
    return {k.removeprefix("sparse_"): int(last[k]) for k in keys}
