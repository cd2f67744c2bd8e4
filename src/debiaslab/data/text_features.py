"""From a :class:`TextCorpus` to a :class:`DatasetBundle`: frozen-encoder embeddings, or token ids to fine-tune.

The text datasets share these options (``--data-opt KEY=VALUE`` on the command line):

- ``encoder``: ``"minilm"`` (default) or another registered encoder: each distinct text is embedded once by the
  frozen encoder (cached), and any method trains a head on the embeddings (model ``mlp``; ``depth=0`` is a
  linear head). ``"tokens"``: token ids for fine-tuning the ``transformer`` model on a local model directory.
- ``tokenizer``: the local transformers model directory whose tokenizer makes the token ids (``tokens`` only).
- ``max_length``: tokens per example (``tokens`` only).
- ``encode_device``, ``encode_batch_size``: where and in what batches the frozen encoder runs.
"""

from __future__ import annotations

import logging
import numbers
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from debiaslab.data.core import BatchTransform, DatasetBundle, GroupDataset
from debiaslab.data.overlap import OverlappingGroupDataset
from debiaslab.data.text_corpus import SPLITS, TextCorpus
from debiaslab.data.text_embed import embed_corpus
from debiaslab.data.text_encoders import ENCODERS, get_encoder
from debiaslab.data.text_tokens import tokenize_corpus
from debiaslab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

TOKENS = "tokens"


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{name} {value!r} is not a positive integer")
    return int(value)


@dataclass(frozen=True)
class TextOptions:
    """Validated featurisation options (see the module docstring)."""

    encoder: str = "minilm"
    tokenizer: str | None = None
    max_length: int = 128
    encode_device: str = "auto"
    encode_batch_size: int = 128

    def __post_init__(self) -> None:
        known = [*ENCODERS.names(), TOKENS]
        if not isinstance(self.encoder, str) or self.encoder not in known:
            raise ConfigError(
                f"unknown text encoder {self.encoder!r}; expected one of: {', '.join(known)} "
                f"({TOKENS!r} tokenises for fine-tuning a local transformers model)"
            )
        if self.encoder == TOKENS and not self.tokenizer:
            raise ConfigError(
                "encoder 'tokens' needs tokenizer=<local transformers model directory> (the model you will "
                "fine-tune with --hp model=transformer)"
            )
        if self.encoder != TOKENS and self.tokenizer:
            raise ConfigError(f"tokenizer is only used with encoder='tokens'; got encoder={self.encoder!r}")
        if self.tokenizer is not None and not isinstance(self.tokenizer, str):
            raise ConfigError(f"tokenizer {self.tokenizer!r} is not a directory path")
        _positive_int("max_length", self.max_length)
        if self.max_length < 4:
            raise ConfigError(f"max_length {self.max_length} is too small; expected at least 4 tokens")
        _positive_int("encode_batch_size", self.encode_batch_size)
        if not isinstance(self.encode_device, str):
            raise ConfigError(f"encode_device {self.encode_device!r} is not a device name such as cpu or cuda")


def build_text_bundle(corpus: TextCorpus, cache_dir: Path, options: TextOptions) -> DatasetBundle:
    """Featurise every split (cached) and wrap them as a bundle that selects on the validation split."""
    empty = [s for s in SPLITS if len(corpus.splits.get(s, ())) == 0]
    if empty:
        source = corpus.recipe.get("metadata") or corpus.recipe.get("file") or corpus.recipe.get("files")
        raise DataError(
            f"{corpus.name}: no examples in split {', '.join(empty)} (read from {source}); "
            "expected train, val and test examples"
        )
    corpus.warn_empty_groups()
    transform: BatchTransform
    if options.encoder == TOKENS:
        xs, transform, meta = tokenize_corpus(corpus, cache_dir, str(options.tokenizer), options.max_length)
        default_model = "transformer"
    else:
        encoder = get_encoder(options.encoder, device=options.encode_device, batch_size=options.encode_batch_size)
        xs, transform, meta = embed_corpus(corpus, cache_dir, encoder)
        default_model = "mlp"
    splits = {name: _split(corpus, name, xs[name], transform) for name in SPLITS}
    recipe = {
        **corpus.recipe,
        "class_names": corpus.class_names,
        "attr_names": corpus.attr_names,
        "splits": corpus.describe(),
        "text_options": asdict(options),
        "text_fields": list(corpus.text_fields),
        **meta,
    }
    return DatasetBundle(
        name=corpus.name,
        train=splits["train"],
        val=splits["val"],
        test=splits["test"],
        recipe=recipe,
        default_model=default_model,
        notes=list(corpus.notes),
    )


def _split(corpus: TextCorpus, name: str, x: Tensor, transform: BatchTransform) -> GroupDataset:
    s = corpus.splits[name]
    kwargs: dict[str, Any] = {
        "x": x,
        "y": torch.from_numpy(s.y),
        "attr": torch.from_numpy(s.attr),
        "n_classes": corpus.n_classes,
        "n_attrs": corpus.n_attrs,
        "transform": transform,
        "aligned_groups": corpus.aligned_groups,
        "name": corpus.name,
        "split": name,
    }
    if s.memberships is None:
        return GroupDataset(**kwargs)
    return OverlappingGroupDataset(
        memberships=torch.from_numpy(s.memberships),
        membership_names=corpus.membership_names or [],
        **kwargs,
    )
