"""What an index version must satisfy before it is published or served.

Checked at publish (so bad data is refused before it reaches Redis) and again
at load (so data written by hand, by another tool or by a buggy version is
refused by the worker, which keeps serving its last good version).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from index_store.errors import CorruptIndex
from index_store.memories import MEMORIES, NAMES
from index_store.spec import EmbedderSpec

if TYPE_CHECKING:
    from index_store.meta import IndexMeta

_INT_FIELDS = ("k", "dim", "n_vectors", "version", "n_chunks", "n_train", "adapted_chunks", "adapted_bytes",
               "quantized_chunks", "quantized_bytes")


def check_meta_types(meta: "IndexMeta") -> None:
    """Fields of the types the code relies on (JSON can hold anything)."""
    bad = [name for name in _INT_FIELDS if not _is_int(getattr(meta, name))]
    if not isinstance(meta.name, str) or not isinstance(meta.kind, str):
        bad.append("name/kind")
    if not isinstance(meta.spec, dict):
        bad.append("spec")
    if meta.threshold is not None and not _is_number(meta.threshold):
        bad.append("threshold")
    if bad:
        raise CorruptIndex(f"index metadata has fields of the wrong type: {', '.join(bad)}")


def check_index(meta: "IndexMeta", memory: str, vectors: np.ndarray) -> None:
    """Raise CorruptIndex with the first reason this index cannot be served. ``memory``: the index's memory
    kind, which the metadata's ``kind`` field must name."""
    where = f"index {meta.name!r}" + (f" version {meta.version}" if meta.version else "")
    if memory not in MEMORIES or meta.kind != memory:
        raise CorruptIndex(f"{where}: unknown kind {meta.kind!r} (known memory kinds: {', '.join(NAMES)})")
    if meta.k < 1:
        raise CorruptIndex(f"{where}: k must be at least 1, not {meta.k}")
    if meta.clusters is not None and (not _is_int(meta.clusters) or meta.clusters < 1):
        raise CorruptIndex(f"{where}: clusters must be a positive integer, not {meta.clusters!r}")
    if vectors.ndim != 2 or vectors.shape[0] < 1:
        raise CorruptIndex(f"{where}: holds no vectors (shape {tuple(vectors.shape)}); fit it on normal images")
    if vectors.shape != (meta.n_vectors, meta.dim):
        raise CorruptIndex(f"{where}: vectors of shape {tuple(vectors.shape)}, metadata says "
                           f"({meta.n_vectors}, {meta.dim})")  # fmt: skip
    if not np.isfinite(vectors).all():
        raise CorruptIndex(f"{where}: {int((~np.isfinite(vectors)).sum())} vector values are NaN or infinite")
    if meta.threshold is not None and not (math.isfinite(meta.threshold) and meta.threshold >= 0):
        raise CorruptIndex(f"{where}: threshold {meta.threshold!r} is not a finite number >= 0")
    spec = EmbedderSpec.from_dict(meta.spec)  # raises SpecMismatch for fields this version does not know
    if spec.dim != meta.dim:
        raise CorruptIndex(f"{where}: dimension {meta.dim} differs from {spec.dim} of its backbone {spec.backbone}")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
