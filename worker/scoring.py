"""The scoring core: decoded frames in, score records out. No Kafka, no Redis.

Frames are embedded once per batch, then each is scored by the index its
source is routed to. With ``window > 1`` a per-source sliding window of
embeddings also gets a group score (DN2's mean-pooled group anomaly rule).
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

import numpy as np
from PIL import Image

from wire.records import FrameRecord, ScoreRecord
from worker.indexes import LoadedIndex
from worker.routing import Routing


class EmbedsImages(Protocol):
    def embed(self, images: list[Image.Image]) -> np.ndarray: ...


@dataclass
class PendingFrame:
    """A decoded frame waiting in the batcher, with where it came from in Kafka."""

    record: FrameRecord
    image: Image.Image = field(repr=False)
    topic: str
    partition: int
    offset: int


class WindowTracker:
    """The last ``size`` embeddings of each source."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._windows: dict[str, deque[np.ndarray]] = defaultdict(lambda: deque(maxlen=size))

    def push(self, source: str, embedding: np.ndarray) -> Optional[np.ndarray]:
        """Add one embedding; return the (W, D) window once it is full, else None."""
        window = self._windows[source]
        window.append(embedding)
        return np.stack(window) if len(window) == self.size else None


class Scorer:
    def __init__(
        self,
        embedder: EmbedsImages,
        routing: Routing,
        worker_id: str = "",
        window: int = 0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.embedder = embedder
        self.routing = routing
        self.worker_id = worker_id
        self.windows = WindowTracker(window) if window > 1 else None
        self.clock = clock

    def score(self, frames: list[PendingFrame], indexes: dict[str, LoadedIndex]) -> list[ScoreRecord]:
        """One ScoreRecord per frame, in order. Every routed index must be in ``indexes``."""
        if not frames:
            return []
        embeddings = self.embedder.embed([f.image for f in frames])
        scores = np.empty(len(frames), dtype=np.float64)
        by_index: dict[str, list[int]] = defaultdict(list)
        for i, f in enumerate(frames):
            by_index[self.routing.index_for(f.record.source)].append(i)
        for name, rows in by_index.items():
            scores[rows] = indexes[name].index.score(embeddings[rows])
        now = self.clock()
        return [
            self._record(f, float(scores[i]), embeddings[i], indexes[self.routing.index_for(f.record.source)], now)
            for i, f in enumerate(frames)
        ]

    def _record(
        self, frame: PendingFrame, score: float, embedding: np.ndarray, loaded: LoadedIndex, now: float
    ) -> ScoreRecord:
        meta, rec = loaded.meta, frame.record
        threshold = meta.threshold
        window_score = None
        if self.windows is not None:
            window = self.windows.push(rec.source, embedding)
            if window is not None:
                window_score = loaded.index.score_window(window)
        return ScoreRecord(
            frame_id=rec.frame_id,
            source=rec.source,
            sequence=rec.sequence,
            capture_time=rec.capture_time,
            score_time=now,
            score=score,
            threshold=threshold,
            is_anomaly=bool(threshold is not None and score > threshold),
            index_name=meta.name,
            index_version=meta.version,
            backbone=loaded.meta.embedder_spec.label(),
            latency_s=max(0.0, now - rec.capture_time) if rec.capture_time else 0.0,
            origin=rec.origin,
            normalized_score=(score / threshold) if threshold else None,
            window_score=window_score,
            worker=self.worker_id,
        )
