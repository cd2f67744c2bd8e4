"""A transformers encoder (BERT, DistilBERT, ...) from a local directory, fine-tuned end to end with a linear head.

Inputs are the token tensors the text datasets make with ``encoder="tokens"``: int ``(N, 3, L)`` holding input
ids, attention mask and token type ids. ``features(x)`` runs the encoder and pools one vector per example:
``pooler`` (the model's pooler output, as BertForSequenceClassification), ``cls`` (the first token's last hidden
state) or ``mean`` (mask-weighted mean of the last hidden states); dropout follows, then ``head``. Columns that
are padding in every example of a batch are cut off first, so short batches run faster.

``transformers`` is optional (``pip install 'debiaslab[text]'``); weights load with ``local_files_only``: this
model never downloads anything.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from debiaslab.errors import ConfigError
from debiaslab.models.base import Backbone
from debiaslab.models.registry import register_model

Pooling = Literal["pooler", "cls", "mean"]
POOLINGS: tuple[str, ...] = ("pooler", "cls", "mean")


def load_encoder(path: str | Path) -> nn.Module:
    """``transformers.AutoModel`` from a local directory; clear errors for a missing package or directory."""
    try:
        transformers: Any = importlib.import_module("transformers")
    except ImportError as exc:
        raise ConfigError(
            "model 'transformer' needs the Python package 'transformers', not installed; "
            "install the optional text dependencies: pip install 'debiaslab[text]'"
        ) from exc
    p = Path(path).expanduser()
    if not (p / "config.json").is_file():
        raise ConfigError(
            f"model 'transformer': {p} is not a transformers model directory (no config.json); "
            "save one with model.save_pretrained(path) and tokenizer.save_pretrained(path)"
        )
    try:
        return transformers.AutoModel.from_pretrained(str(p), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"model 'transformer': cannot load the model in {p}: {first}") from exc


class TransformerClassifier(Backbone):
    """A local transformers encoder, pooled to ``hidden_size`` features, dropout, and a linear head."""

    def __init__(self, encoder: nn.Module, n_classes: int, pooling: Pooling = "pooler", dropout: float = 0.1) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"model 'transformer': pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}")
        if pooling == "pooler" and getattr(encoder, "pooler", None) is None:
            raise ConfigError(
                f"model 'transformer': {type(encoder).__name__} has no pooler; use pooling='cls' or 'mean'"
            )
        if not 0.0 <= float(dropout) < 1.0:
            raise ConfigError(f"model 'transformer': dropout must be in [0, 1); got {dropout}")
        self.encoder = encoder
        self.pooling = pooling
        self.feature_dim = int(encoder.config.hidden_size)
        self.dropout = nn.Dropout(float(dropout))
        self.head = nn.Linear(self.feature_dim, n_classes)
        self._token_types = "token_type_ids" in inspect.signature(encoder.forward).parameters

    def features(self, x: Tensor) -> Tensor:
        x = x.long()
        mask = x[:, 1]
        used = torch.nonzero(mask.any(dim=0))
        length = int(used.max()) + 1 if used.numel() else 1  # drop columns that are padding everywhere
        kwargs = {"input_ids": x[:, 0, :length], "attention_mask": mask[:, :length]}
        if self._token_types:
            kwargs["token_type_ids"] = x[:, 2, :length]
        out = self.encoder(**kwargs)
        if self.pooling == "pooler":
            pooled = out.pooler_output
        elif self.pooling == "cls":
            pooled = out.last_hidden_state[:, 0]
        else:
            m = kwargs["attention_mask"].unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.dropout(pooled)


def token_shape(input_shape: Sequence[int]) -> tuple[int, int]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 2 or shape[0] != 3 or shape[1] < 1:
        raise ConfigError(
            "model 'transformer' needs token inputs of shape (3, max_length) from a text dataset built with "
            f"--data-opt encoder=tokens; got input_shape={shape}"
        )
    return shape  # type: ignore[return-value]


@register_model("transformer")
def transformer(
    input_shape: tuple[int, ...],
    n_classes: int,
    *,
    path: str | None = None,
    pooling: Pooling = "pooler",
    dropout: float = 0.1,
) -> TransformerClassifier:
    """Fine-tune a local transformers model (``path``: directory with config.json and weights) with a linear head.

    Example: ``--data-opt encoder=tokens --data-opt tokenizer=DIR --hp model=transformer
    --hp "model_kwargs={path: DIR}"``.
    """
    token_shape(input_shape)
    if not path:
        raise ConfigError(
            "model 'transformer' needs path=<local transformers model directory>, e.g. "
            "--hp 'model_kwargs={path: /models/bert-base-uncased}'"
        )
    return TransformerClassifier(load_encoder(path), n_classes, pooling=pooling, dropout=dropout)


__all__ = ["TransformerClassifier", "load_encoder", "transformer"]
