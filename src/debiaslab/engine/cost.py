"""What a (sparse) model costs, measured rather than assumed.

- **Parameters**: all parameters and their non-zeros, per Linear/Conv layer and in total (counted on the weights).
- **Inference multiply-adds (MACs) per example**: forward hooks on every Linear/Conv record the dense MACs of
  one forward pass of a single example (a conv: output positions × ``C_in/groups × kernel`` per output channel; a
  linear layer: rows × ``in × out``). Each layer's sparse MACs are its dense MACs × its measured density (exact:
  every weight is used once per output position). Normalisation, activations and pooling are not counted (they
  are small and unchanged by sparsity).
- **Training MACs** (RigL's accounting): a normal step costs ≈ 3× the forward per example (forward, gradient
  w.r.t. the inputs, gradient w.r.t. the weights), so ``3 · f_S`` sparse and ``3 · f_D`` dense. A step whose dense
  gradient feeds a mask update computes the weight gradient densely: ``2 · f_S + f_D``. Hence
  ``train_S = 3 · f_S · examples + (f_D − f_S) · update_examples`` against ``train_D = 3 · f_D · examples``,
  with the counters the Trainer logs for sparse stages (:func:`debiaslab.engine.sparse.stage_counts`).
- **Checkpoint size**: bytes on disk of the state dict saved dense and in the sparse form of
  :mod:`debiaslab.engine.sparse_io`.

The masks live on dense tensors, so this implementation's wall time and memory are those of dense training;
the sparse MACs are what kernels that skip zeros would execute.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from debiaslab.engine.sparse import MASKABLE_TYPES, stage_counts
from debiaslab.engine.sparse_io import pack_state_dict, saved_size
from debiaslab.engine.stage import StageResult

_CONV_TRANSPOSE = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _macs_of_call(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> int:
    """Dense multiply-adds of one call of a Linear/Conv module, for the whole batch."""
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    kernel = math.prod(module.kernel_size)  # type: ignore[arg-type]
    if isinstance(module, _CONV_TRANSPOSE):  # every input entry meets out_channels/groups x kernel weights
        return inputs[0].numel() * (module.out_channels // module.groups) * kernel  # type: ignore[operator]
    return output.numel() * (module.in_channels // module.groups) * kernel  # type: ignore[operator]


@torch.no_grad()
def layer_macs(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Dense MACs per example of every Linear/Conv module that a forward pass of one example reaches
    (summed over calls), by qualified module name; ``model`` is left in the mode it was in."""
    counts: dict[str, int] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, MASKABLE_TYPES):

            def hook(mod: nn.Module, inputs: tuple[Tensor, ...], output: Tensor, name: str = name) -> None:
                counts[name] = counts.get(name, 0) + _macs_of_call(mod, inputs, output)

            handles.append(module.register_forward_hook(hook))
    param = next(model.parameters(), None)
    x = torch.zeros(1, *input_shape, device=param.device if param is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return counts


def inference_cost(model: nn.Module, input_shape: Sequence[int]) -> dict[str, Any]:
    """Parameters, non-zeros and per-example inference MACs, dense and sparse, per layer and in total."""
    macs = layer_macs(model, input_shape)
    layers = []
    for name, module in model.named_modules():
        if not isinstance(module, MASKABLE_TYPES) or not isinstance(getattr(module, "weight", None), Tensor):
            continue
        weight = module.weight
        numel, nonzero = weight.numel(), int(torch.count_nonzero(weight))
        dense = macs.get(name, 0)
        layers.append(
            {
                "name": name,
                "type": type(module).__name__,
                "shape": list(weight.shape),
                "params": numel,
                "nonzero": nonzero,
                "density": nonzero / numel if numel else 1.0,
                "macs_dense": dense,
                "macs_sparse": dense // numel * nonzero if numel else 0,  # dense = positions x numel, exactly
            }
        )
    unique = {id(p): p for p in model.parameters()}.values()
    params = sum(p.numel() for p in unique)
    nonzero = sum(int(torch.count_nonzero(p)) for p in unique)
    maskable = sum(layer["params"] for layer in layers)
    maskable_nonzero = sum(layer["nonzero"] for layer in layers)
    macs_dense = sum(layer["macs_dense"] for layer in layers)
    macs_sparse = sum(layer["macs_sparse"] for layer in layers)
    return {
        "params_total": params,
        "params_nonzero": nonzero,
        "params_nonzero_fraction": nonzero / params if params else 1.0,
        "weights_maskable": maskable,
        "weights_nonzero": maskable_nonzero,
        "weights_density": maskable_nonzero / maskable if maskable else 1.0,
        "inference_macs_dense": macs_dense,
        "inference_macs_sparse": macs_sparse,
        "inference_macs_ratio": macs_sparse / macs_dense if macs_dense else 1.0,
        "layers": layers,
    }


def training_macs(macs_dense: int, macs_sparse: int, examples: int, update_examples: int = 0) -> dict[str, int]:
    """Training MACs of ``examples`` examples, ``update_examples`` of them in mask-update steps (module docstring)."""
    return {
        "train_macs_sparse": 3 * macs_sparse * examples + (macs_dense - macs_sparse) * update_examples,
        "train_macs_dense": 3 * macs_dense * examples,
    }


def checkpoint_sizes(model: nn.Module) -> dict[str, Any]:
    """Bytes on disk of ``model``'s state dict saved dense and in the sparse form (measured)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    dense, sparse = saved_size(state), saved_size(pack_state_dict(state))
    return {"checkpoint_bytes_dense": dense, "checkpoint_bytes_sparse": sparse, "checkpoint_ratio": sparse / dense}


def run_cost(
    model: nn.Module,
    input_shape: Sequence[int],
    stages: Sequence[StageResult],
    dense_examples: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Inference, training and storage cost of a fitted method: ``model`` is the deployed model, ``stages`` the
    stages that trained it. A sparse stage's counters come from its history; a dense stage is counted only when
    ``dense_examples`` gives its number of training examples (its mask updates are 0). Training MACs assume every
    stage trained a network of the deployed architecture (methods that train several networks per step count
    only one) and use the deployed per-layer non-zeros (at most the mask counts, which training keeps fixed)."""
    cost = inference_cost(model, input_shape)
    f_dense, f_sparse = cost["inference_macs_dense"], cost["inference_macs_sparse"]
    per_stage, not_counted = [], []
    for stage in stages:
        counts = stage_counts(stage.history)
        if counts is None and dense_examples is not None and stage.name in dense_examples:
            counts = {"updates": 0, "steps": None, "examples": int(dense_examples[stage.name]), "update_examples": 0}
            f_stage = f_dense  # trained dense: the weights only became sparse later, if at all
        elif counts is None:
            not_counted.append(stage.name)
            continue
        else:
            f_stage = f_sparse
        per_stage.append(
            {
                "stage": stage.name,
                **counts,
                **training_macs(f_dense, f_stage, counts["examples"], counts["update_examples"]),
            }
        )
    train_sparse = sum(s["train_macs_sparse"] for s in per_stage)
    train_dense = sum(s["train_macs_dense"] for s in per_stage)
    cost.update(
        {
            "train_macs_sparse": train_sparse,
            "train_macs_dense": train_dense,
            "train_macs_ratio": train_sparse / train_dense if train_dense else None,
            "train_stages": per_stage,
            "train_stages_not_counted": not_counted,
        }
    )
    cost.update(checkpoint_sizes(model))
    return cost
