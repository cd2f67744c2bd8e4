"""Frozen-encoder features for text datasets: each distinct text embedded once, cached, looked up per batch.

All texts of a corpus (every split, every field) are deduplicated and sorted; their embeddings are cached in
``<cache_dir>/text_embeddings/<dataset>/<key>.npz`` with key = SHA-256 of (dataset, format version, encoder
identity with its package version, SHA-256 of the sorted distinct texts). Changing which texts there are, or the
encoder or its version, changes the key; changing only labels or the group definition does not (the embeddings
are the same, so they are reused).

A split holds, per example, row indices into the table: ``(N, k)`` for k text fields. The batch transform
:class:`EmbeddingLookup` turns them into features: the embedding itself for one field, and
``[u, v, |u - v|, u * v]`` for a sentence pair (premise u, hypothesis v), the classification features of
InferSent and Sentence-BERT. The table is stored once, however many examples share a text.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from debiaslab.data.text_cache import cache_path, load_cache, progress, save_cache
from debiaslab.data.text_corpus import TextCorpus, texts_digest
from debiaslab.data.text_encoders import TextEncoder
from debiaslab.errors import DataError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KIND = "text_embeddings"
_CHUNK = 4096  # texts per encode call (the encoder batches inside; the progress bar advances per chunk)


class EmbeddingLookup:
    """Batch transform: table row indices ``(B, k)`` -> float32 features ``(B, D)`` (k = 1) or ``(B, 4D)`` (k = 2)."""

    def __init__(self, table: Tensor) -> None:
        self.table = table

    def __call__(self, index: Tensor) -> Tensor:
        index = index.long()
        if index.shape[1] == 1:
            return self.table[index[:, 0]]
        if index.shape[1] != 2:
            raise ValueError(f"expected one or two texts per example; got index shape {tuple(index.shape)}")
        u, v = self.table[index[:, 0]], self.table[index[:, 1]]
        return torch.cat([u, v, (u - v).abs(), u * v], dim=1)


def embedding_recipe(corpus: TextCorpus, encoder: TextEncoder, distinct: list[str]) -> dict[str, Any]:
    return {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "dataset": corpus.name,
        "encoder": encoder.identity(),
        "n_texts": len(distinct),
        "texts_sha256": texts_digest(distinct),
    }


def encode_all(texts: list[str], encoder: TextEncoder, description: str) -> np.ndarray:
    """Embeddings of ``texts`` in order; encoded longest-first so batches hold texts of similar length."""
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)
    with progress(description, len(texts)) as advance:
        for start in range(0, len(texts), _CHUNK):
            rows = order[start : start + _CHUNK]
            emb = encoder.encode([texts[i] for i in rows])
            if emb.shape != (len(rows), encoder.dim) or not np.isfinite(emb).all():
                raise DataError(
                    f"text encoder {encoder.name!r} returned {emb.shape} embeddings (or non-finite values) for "
                    f"{len(rows)} texts; expected ({len(rows)}, {encoder.dim}) finite values"
                )
            out[rows] = emb
            advance(len(rows))
    return out


def embed_corpus(
    corpus: TextCorpus, cache_dir: Path, encoder: TextEncoder
) -> tuple[dict[str, Tensor], EmbeddingLookup, dict[str, Any]]:
    """Per-split index tensors ``(N, k)``, the lookup transform, and what to record in the dataset recipe."""
    distinct = sorted({t for split in corpus.splits.values() for field in split.texts for t in field})
    recipe = embedding_recipe(corpus, encoder, distinct)
    path = cache_path(cache_dir, KIND, corpus.name, recipe)
    arrays = load_cache(path, recipe, {"embeddings": (np.float32, (len(distinct), encoder.dim))})
    if arrays is not None:
        table = arrays["embeddings"]
        log.debug("loaded %d %s embeddings from %s", len(distinct), encoder.name, path)
    else:
        log.info(
            "embedding %d distinct texts of %s with %s (cached in %s)", len(distinct), corpus.name, encoder.name, path
        )
        table = encode_all(distinct, encoder, f"{corpus.name}: embedding with {encoder.name}")
        save_cache(path, recipe, {"embeddings": table})
    row = {t: i for i, t in enumerate(distinct)}
    index = {
        name: torch.from_numpy(
            np.stack([np.fromiter((row[t] for t in field), np.int64, len(field)) for field in split.texts], axis=1)
        )
        for name, split in corpus.splits.items()
    }
    pair = "; pair features [u, v, |u-v|, u*v]" if len(corpus.text_fields) == 2 else ""
    meta = {
        "features": f"frozen {encoder.name} embeddings{pair}",
        "encoder": encoder.identity(),
        "embedding_cache": str(path),
        "embedding_recipe_sha256": path.stem,
        "distinct_texts": len(distinct),
    }
    return index, EmbeddingLookup(torch.from_numpy(np.ascontiguousarray(table))), meta
