"""An index version's metadata record: what a worker needs to know about it besides its vectors.

Stored as JSON beside the vectors (index_store/repository.py); nothing is pickled.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Optional

from index_store.errors import CorruptIndex
from index_store.spec import EmbedderSpec
from index_store.validation import check_meta_types

META_SCHEMA = 1


@dataclass(frozen=True)
class IndexMeta:
    """What a worker needs to know about an index version besides its vectors."""

    name: str
    kind: str  # the memory kind (memories.py: exact | kmeans | coreset); the features are spec["kind"]
    k: int
    dim: int
    n_vectors: int
    spec: dict[str, Any]
    version: int = 0
    clusters: Optional[int] = None
    n_train: int = 0
    threshold: Optional[float] = None
    calibration: dict[str, Any] = field(default_factory=dict)
    clean_fraction: float = 0.0
    created_at: float = 0.0
    sha256: str = ""
    n_chunks: int = 0
    schema: int = META_SCHEMA
    # Marked-normal frames this version absorbed (index_store/feedback.py); {} for a fitted version.
    feedback: dict[str, Any] = field(default_factory=dict)
    # Training frames (file paths or stream origins). Global indexes: one per stored vector, in
    # order (k-means: the training frame nearest each centre), so a score can name its nearest
    # normal frames. Patch indexes: the training frames kept.
    origins: list[str] = field(default_factory=list)
    # Chunks of the adapted weights (0: not fine-tuned); their sha256 is spec["adapted_sha256"].
    adapted_chunks: int = 0
    adapted_bytes: int = 0
    # Chunks of the int8 model calibrated on the fit frames (0: not int8); their sha256 is spec["quantized_sha256"].
    quantized_chunks: int = 0
    quantized_bytes: int = 0
    # A positional memory (index_store/positional.py: global tiles, position-aware patches): how its
    # vectors are laid out per grid cell; {} for a flat index. The spec's geometry fields make a worker
    # that predates positional memories refuse such a version, so this field is never ignored.
    layout: dict[str, Any] = field(default_factory=dict)
    # Fitted from a stream (``index fit --from-topic``): topic, partition, source, offset and time
    # range, frame counts at each step; {} for a folder fit. Its origins are kafka://TOPIC/PARTITION/OFFSET.
    frames_from: dict[str, Any] = field(default_factory=dict)

    @property
    def embedder_spec(self) -> EmbedderSpec:
        return EmbedderSpec.from_dict(self.spec)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> "IndexMeta":
        """Parse stored metadata. Fields this version does not know are ignored (a newer framewatch may
        add informational fields); how to embed is the spec's job, and the spec refuses what it does not know."""
        try:
            data = json.loads(raw)
            if not isinstance(data, dict):
                raise TypeError("not a JSON object")
            known = {f.name for f in fields(cls)}
            meta = cls(**{k: v for k, v in data.items() if k in known})
        except (ValueError, TypeError) as e:
            raise CorruptIndex(f"index metadata is not valid: {e}") from e
        check_meta_types(meta)
        return meta
