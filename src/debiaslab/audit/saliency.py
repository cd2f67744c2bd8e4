"""Input-gradient saliency: where in its input a model finds the evidence for an example's class, and which way.

The gradient is ULE's (:func:`debiaslab.methods.ule.logits_and_input_grad`): ``g = ∂ s(x) / ∂x`` of the
true-class logit by default, per example, in eval mode. Two readings: its magnitude ``|g|`` summed over an image's
channels (where the model reads; for inputs that are not images, per feature), and ``g`` itself, signed, which on
colour images is itself a colour: the colour change that raises the class's score most. A colour shortcut shows as
a map tinted with the class's colour, a shape cue as a grey pattern of the shape.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from debiaslab.data.core import GroupDataset
from debiaslab.engine.sampling import iterate_batches
from debiaslab.engine.trainer import Trainer, eval_mode
from debiaslab.methods.ule import logits_and_input_grad

DEFAULT_SALIENCY = "true_logit"


def is_image(input_shape: tuple[int, ...]) -> bool:
    """Channels x height x width (or height x width) inputs, each side at least 2 pixels."""
    return len(input_shape) in (2, 3) and all(s >= 2 for s in input_shape[-2:])


def input_gradients(
    model: nn.Module,
    data: GroupDataset,
    index: Tensor,
    trainer: Trainer,
    *,
    saliency: str = DEFAULT_SALIENCY,
    batch_size: int = 256,
) -> Tensor:
    """``∂ score / ∂x`` for the examples ``index`` of ``data``, shape ``(len(index), *input_shape)``, float32 CPU.

    ``saliency`` is ULE's choice of scalar (``true_logit``, ``pred_logit``, ``loss``); the parameters' ``.grad``
    are never touched.
    """
    out = []
    index = torch.as_tensor(index, dtype=torch.long)
    with eval_mode(model):
        for idx in iterate_batches(index, batch_size):
            x = trainer.prepare_inputs(data.inputs(idx))
            y = data.y[idx].to(trainer.device)
            target = None if saliency == "pred_logit" else y
            _, grad = logits_and_input_grad(model, x, target, saliency, create_graph=False)
            out.append(grad.float().cpu())
    if not out:
        return torch.empty(0, *data.input_shape)
    return torch.cat(out)


def magnitude_maps(grads: Tensor) -> Tensor:
    """One map of ``|g|`` per example: channels summed for ``(N, C, H, W)`` images, ``(N, H, W)`` as given, other
    inputs flattened to ``(N, D)``."""
    grads = grads.abs()
    if grads.dim() == 4:
        return grads.sum(dim=1)
    if grads.dim() == 3:
        return grads
    return grads.flatten(1)


def class_means(maps: Tensor, y: Tensor, n_classes: int) -> Tensor:
    """Mean map per class, ``(n_classes, *map_shape)`` (zeros for a class without examples)."""
    out = torch.zeros(n_classes, *maps.shape[1:])
    for c in range(n_classes):
        rows = y == c
        if bool(rows.any()):
            out[c] = maps[rows].mean(dim=0)
    return out


def per_class_sample(y: Tensor, n_classes: int, per_class: int, seed: int) -> Tensor:
    """Up to ``per_class`` indices of each class, drawn without replacement by ``seed``, in class order."""
    g = torch.Generator().manual_seed(int(seed))
    picked = []
    for c in range(n_classes):
        rows = torch.nonzero(y == c).flatten()
        picked.append(rows[torch.randperm(rows.numel(), generator=g)[:per_class]].sort().values)
    return torch.cat(picked) if picked else torch.empty(0, dtype=torch.long)
