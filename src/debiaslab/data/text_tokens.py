"""Token ids for fine-tuning a local transformers model: tokenised once, in the data layer, and cached.

The tokenizer is the one saved in the user's model directory (``AutoTokenizer``, ``local_files_only``). Each
example becomes int32 ``(3, max_length)``: input ids, attention mask and token type ids (zeros when the tokenizer
has none), padded to ``max_length`` and truncated (a pair: longest first), as JTT and GroupDRO feed BERT. The
batch transform :class:`AsLong` casts a batch to int64 for the model (int32 halves the memory of the split).

Cached in ``<cache_dir>/text_tokens/<dataset>/<key>.npz``, keyed by the tokenizer files' SHA-256, ``max_length``
and the texts of each split in order.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from debiaslab.data.text_cache import cache_path, load_cache, progress, save_cache
from debiaslab.data.text_corpus import TextCorpus, texts_digest
from debiaslab.data.text_encoders import import_optional
from debiaslab.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KIND = "text_tokens"
#: Files that define a tokenizer (whichever of them the directory has enter the cache key).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
)
_CHUNK = 2048


class AsLong:
    """Batch transform: stored int32 token ids -> int64."""

    def __call__(self, x: Tensor) -> Tensor:
        return x.long()


def tokenizer_identity(path: Path) -> dict[str, Any]:
    """SHA-256 of each tokenizer file in ``path``; a ConfigError when the directory has none."""
    if not path.is_dir():
        raise ConfigError(f"tokenizer directory {path} does not exist; give a local transformers model directory")
    files = {
        name: hashlib.sha256((path / name).read_bytes()).hexdigest()
        for name in TOKENIZER_FILES
        if (path / name).is_file()
    }
    if not files:
        raise ConfigError(
            f"{path} holds no tokenizer files (expected some of: {', '.join(TOKENIZER_FILES)}); "
            "save the tokenizer with tokenizer.save_pretrained(path)"
        )
    return {"path": str(path), "files": files}


def load_tokenizer(path: Path) -> Any:
    transformers = import_optional("transformers", "encoder 'tokens' (tokenising for fine-tuning)")
    try:
        return transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot load a tokenizer from {path}: {first}") from exc


def tokenize_split(tokenizer: Any, texts: tuple[list[str], ...], max_length: int, description: str) -> np.ndarray:
    n = len(texts[0])
    out = np.zeros((n, 3, max_length), dtype=np.int32)
    with progress(description, n) as advance:
        for start in range(0, n, _CHUNK):
            stop = min(start + _CHUNK, n)
            first = texts[0][start:stop]
            second = texts[1][start:stop] if len(texts) == 2 else None
            try:
                enc = tokenizer(
                    first,
                    second,
                    padding="max_length",
                    truncation=True,
                    max_length=max_length,
                    return_tensors="np",
                    return_token_type_ids=True,
                    return_attention_mask=True,
                )
            except ValueError as exc:  # e.g. a tokenizer without a padding token
                raise ConfigError(f"tokenizer {tokenizer.name_or_path} cannot pad/truncate: {exc}") from exc
            out[start:stop, 0] = enc["input_ids"]
            out[start:stop, 1] = enc["attention_mask"]
            if "token_type_ids" in enc:
                out[start:stop, 2] = enc["token_type_ids"]
            advance(stop - start)
    return out


def tokenize_corpus(
    corpus: TextCorpus, cache_dir: Path, tokenizer_dir: str, max_length: int
) -> tuple[dict[str, Tensor], AsLong, dict[str, Any]]:
    """Per-split int32 ``(N, 3, max_length)`` token tensors, the int64 transform, and what to record."""
    path = Path(tokenizer_dir).expanduser()
    recipe = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "dataset": corpus.name,
        "tokenizer": tokenizer_identity(path),
        "max_length": max_length,
        "splits": {name: [texts_digest(f) for f in split.texts] for name, split in corpus.splits.items()},
    }
    file = cache_path(cache_dir, KIND, corpus.name, recipe)
    expected = {name: (np.int32, (len(s), 3, max_length)) for name, s in corpus.splits.items()}
    arrays = load_cache(file, recipe, expected)
    if arrays is None:
        log.info("tokenising %s with the tokenizer in %s (max_length %d)", corpus.name, path, max_length)
        tokenizer = load_tokenizer(path)
        arrays = {
            name: tokenize_split(tokenizer, split.texts, max_length, f"{corpus.name}/{name}: tokenising")
            for name, split in corpus.splits.items()
        }
        save_cache(file, recipe, arrays)
    truncated = {
        name: int((a[:, 1, -1] != 0).sum()) for name, a in arrays.items() if len(a)
    }  # a mask still on at the last position: the text filled (or overflowed) max_length
    meta = {
        "features": f"token ids (max_length {max_length}) for fine-tuning",
        "tokenizer": recipe["tokenizer"],
        "max_length": max_length,
        "token_cache": str(file),
        "at_max_length": truncated,
    }
    return {name: torch.from_numpy(a) for name, a in arrays.items()}, AsLong(), meta
