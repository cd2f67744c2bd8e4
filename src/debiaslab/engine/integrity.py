"""Checksums of what checkpoints and model files hold, and the hash of the run configuration that wrote them.

:func:`content_digest` is a SHA-256 over a checkpoint's contents, walked in order: every tensor's dtype, shape
and bytes, every number, string and container. It is recorded in the file when it is written and recomputed
when it is read, so a file whose bytes changed since (a bad disk, a partial copy, random bytes written over it)
is refused instead of used, whichever bytes were hit. :func:`config_hash` identifies the run configuration a
file belongs to, so a checkpoint or model of another run (two writers in one folder, a file copied across) is
refused too.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import torch

#: the key under which a checkpoint holds its integrity record
INTEGRITY = "_integrity"
#: version of the record's layout
FORMAT = 1


def content_digest(obj: Any) -> str:
    """SHA-256 (hex) of ``obj``'s contents: nested dicts, lists, tuples, tensors, arrays, numbers, strings."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        h.update(f"T{t.dtype}{tuple(t.shape)};".encode())
        if t.layout != torch.strided:  # sparse tensors do not occur in debiaslab checkpoints; their values count
            t = t.to_dense()
        h.update(memoryview(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy()))
    elif isinstance(obj, np.ndarray):
        h.update(f"A{obj.dtype.str}{obj.shape};".encode())
        h.update(np.ascontiguousarray(obj).tobytes())
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)};".encode())
        for key, value in obj.items():
            _feed(h, key)
            _feed(h, value)
    elif isinstance(obj, list | tuple):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)};".encode())
        for value in obj:
            _feed(h, value)
    elif isinstance(obj, str):
        data = obj.encode("utf-8", "surrogatepass")
        h.update(f"S{len(data)};".encode())
        h.update(data)
    elif isinstance(obj, bytes):
        h.update(f"B{len(obj)};".encode())
        h.update(obj)
    else:  # None, bool, int, float and anything else with a stable repr
        h.update(f"{type(obj).__name__}:{obj!r};".encode())


def config_hash(run: Any) -> str:
    """A short hash (16 hex digits) of a run's identity (``config.yaml``'s ``run`` section)."""
    text = json.dumps(run, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sealed(state: dict[str, Any], config: str | None = None, document: str | None = None) -> dict[str, Any]:
    """``state`` with its integrity record: the digest of its contents, the hash of the producing run's identity
    (``config``) and, for a deployed model, of the whole ``config.yaml`` written beside it (``document``)."""
    record = {"format": FORMAT, "sha256": content_digest(state), "config": config}
    if document is not None:
        record["document"] = document
    return {**state, INTEGRITY: record}


def unseal(state: Any) -> tuple[dict[str, Any], dict[str, Any] | None, str | None]:
    """``(contents, record, problem)``: the state without its record, the record (None for a file written without
    one) and, when the contents do not match the record's digest, what is wrong (else None)."""
    if not isinstance(state, dict):
        return state, None, f"it holds a {type(state).__name__}, not a dict"
    record = state.get(INTEGRITY)
    if record is None:  # no key of a debiaslab checkpoint starts with "_": one that does is a garbled record's
        damaged = any(isinstance(k, str) and k.startswith("_") for k in state)
        return state, None, "its integrity record is damaged" if damaged else None
    contents = {k: v for k, v in state.items() if k != INTEGRITY}
    if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
        return contents, None, "its integrity record is damaged"
    if content_digest(contents) != record["sha256"]:
        return contents, record, "its contents do not match the checksum recorded when it was written"
    return contents, record, None
