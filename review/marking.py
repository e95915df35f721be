"""A "normal" answer becomes a new index version: fetch the frame, embed it as the index does, publish.

Shared by the review page and ``framewatch index add``. Calls are serialised
(one lock per Marker): two absorptions from the same active version would each
miss the other's frames.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional, Sequence

from index_store.feedback import FeedbackError, Mark, embed_images, publish_marked
from index_store.repository import IndexMeta, IndexRepository
from index_store.spec import EmbedderSpec
from review.answers import Answers
from review.frames import FrameFetcher
from wire.records import ScoreRecord
from worker.decode import decode_image  # the worker's own decoding, so the embedding is the one it scored

EmbedderFactory = Callable[[EmbedderSpec], Any]


class Marker:
    def __init__(
        self,
        repo: IndexRepository,
        fetcher: FrameFetcher,
        embedder_factory: EmbedderFactory,
        answers: Answers,
    ) -> None:
        self.repo, self.fetcher, self.answers = repo, fetcher, answers
        self._factory = embedder_factory
        self._embedders: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _embedder(self, spec: EmbedderSpec) -> Any:
        key = spec.fingerprint()
        if key not in self._embedders:
            self._embedders[key] = self._factory(spec)
        return self._embedders[key]

    def mark_normal(self, records: Sequence[ScoreRecord], by: str, name: Optional[str] = None) -> IndexMeta:
        """Absorb these flagged frames into a new active version of ``name`` (default: the index that scored
        them, which must be one); store the answers under that index."""
        names = {name} if name else {r.index_name for r in records}
        if len(names) != 1:
            raise FeedbackError(f"marked frames must belong to one index, got {sorted(names)}")
        index = names.pop()
        images = []
        for r in records:
            frame = self.fetcher.fetch(r.frame_topic, r.frame_partition, r.frame_offset)
            images.append(self.decode(index, frame.image, frame.content_type))
        marks = [Mark(r.frame_id, by, r.source) for r in records]
        meta = self.absorb_images(index, images, marks)
        for r in records:
            self.answers.put(meta.name, r.frame_id, "normal", by, score=r.score, threshold=r.threshold,
                             index_version=r.index_version, absorbed_in=meta.version)  # fmt: skip
        return meta

    def decode(self, name: str, data: bytes, content_type: str = "") -> Any:
        """Decode as the worker does for index ``name`` (its spec's reduced JPEG scale included)."""
        return decode_image(data, content_type, resize=self.repo.meta(name).embedder_spec.resize)

    def absorb_images(self, name: str, images: Sequence[Any], marks: Sequence[Mark]) -> IndexMeta:
        with self._lock:
            meta = self.repo.meta(name)
            emb = embed_images(meta, images, self._embedder(meta.embedder_spec))
            return publish_marked(self.repo, name, emb, marks, base_version=meta.version)

    def confirm(self, record: ScoreRecord, by: str) -> None:
        self.answers.put(record.index_name, record.frame_id, "confirmed", by, score=record.score,
                         threshold=record.threshold, index_version=record.index_version)  # fmt: skip
