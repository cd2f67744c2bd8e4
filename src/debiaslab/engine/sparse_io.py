"""A sparse on-disk form of a state dict, to measure (and use) what a sparse model costs to store.

Every floating tensor with at least 2 dimensions is stored in the smallest of three encodings:
``dense`` (the tensor), ``bitmap`` (a packed 1-bit-per-entry map of the non-zeros + their values) or ``indices``
(int32 flat positions of the non-zeros + their values). Other entries (biases, norm parameters, buffers) are
kept as they are. The result is a plain dict of tensors and strings: it saves with ``torch.save`` and loads with
``weights_only=True``.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from debiaslab.errors import DataError

_BITS = 2 ** torch.arange(8, dtype=torch.int16)


def pack_bits(mask: Tensor) -> Tensor:
    """A boolean tensor as uint8 bytes, 8 entries per byte (little-endian bit order, zero-padded)."""
    flat = mask.reshape(-1).to(torch.int16)
    flat = torch.cat([flat, flat.new_zeros((-flat.numel()) % 8)]).view(-1, 8)
    return (flat * _BITS).sum(dim=1).to(torch.uint8)


def unpack_bits(packed: Tensor, n: int) -> Tensor:
    """The first ``n`` entries of :func:`pack_bits`'s output as a flat boolean tensor."""
    bits = (packed.to(torch.int16).unsqueeze(1) // _BITS) % 2
    return bits.reshape(-1)[:n].to(torch.bool)


def pack_tensor(t: Tensor) -> dict[str, Any]:
    """One tensor in its smallest encoding (see the module docstring)."""
    t = t.detach().cpu()
    n, elt = t.numel(), t.element_size()
    nonzero = t != 0
    nnz = int(nonzero.sum())
    sizes = {"dense": n * elt, "bitmap": math.ceil(n / 8) + nnz * elt, "indices": nnz * (4 + elt)}
    if n >= 2**31:
        del sizes["indices"]
    kind = min(sizes, key=lambda k: (sizes[k], k != "dense"))
    if kind == "dense":
        return {"format": "dense", "values": t.contiguous()}
    values = t[nonzero].contiguous()
    shape = torch.tensor(list(t.shape), dtype=torch.int64)
    if kind == "bitmap":
        return {"format": "bitmap", "shape": shape, "bits": pack_bits(nonzero), "values": values}
    index = torch.nonzero(nonzero.reshape(-1)).reshape(-1).to(torch.int32)
    return {"format": "indices", "shape": shape, "index": index, "values": values}


def unpack_tensor(packed: Mapping[str, Any]) -> Tensor:
    kind = packed.get("format")
    if kind == "dense":
        return packed["values"]
    if kind not in ("bitmap", "indices"):
        raise DataError(f"unknown sparse tensor format {kind!r}; expected dense, bitmap or indices")
    shape = tuple(int(d) for d in packed["shape"])
    values = packed["values"]
    out = torch.zeros(math.prod(shape), dtype=values.dtype)
    if kind == "bitmap":
        out[unpack_bits(packed["bits"], out.numel())] = values
    else:
        out[packed["index"].to(torch.int64)] = values
    return out.reshape(shape)


def pack_state_dict(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """``{"sparse": {name: packed}, "plain": {name: tensor}}``: matrices and kernels packed, the rest as is."""
    sparse, plain = {}, {}
    for name, t in state.items():
        if t.dim() >= 2 and t.is_floating_point():
            sparse[name] = pack_tensor(t)
        else:
            plain[name] = t.detach().cpu()
    return {"sparse": sparse, "plain": plain}


def unpack_state_dict(packed: Mapping[str, Any]) -> dict[str, Tensor]:
    """The dense state dict back from :func:`pack_state_dict` (bit for bit)."""
    state = {name: unpack_tensor(p) for name, p in packed["sparse"].items()}
    state.update(packed["plain"])
    return state


def saved_size(obj: Any) -> int:
    """Bytes that ``torch.save(obj)`` writes to disk (measured on a temporary file)."""
    with tempfile.TemporaryDirectory(prefix="debiaslab-size-") as tmp:
        path = os.path.join(tmp, "state.pt")
        torch.save(obj, path)
        return os.path.getsize(path)
