"""A "normal" answer becomes a new index version: fetch the frame, embed it as the index does, publish.

Shared by the review page and ``framewatch index add``. An incident's "normal"
absorbs a sample of its frames into one version, once per incident (its answer
is kept under the incident's id). Marking is idempotent: a
frame whose "normal" was already absorbed into a version the active one descends
from is not absorbed again (a double click, a replayed POST or a second reviewer
would otherwise each publish a version). Absorptions of one index are serialised
by a lock in this process and a Redis lock across processes: two absorptions from
the same active version would each miss the other's frames, and the check for an
earlier answer must see the last absorption's.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

from redis.exceptions import LockError

from index_store.feedback import FeedbackError, Mark, embed_images, publish_marked
from index_store.repository import IndexMeta, IndexRepository
from index_store.spec import EmbedderSpec
from review.answers import Answers
from review.frames import FrameFetcher
from wire.errors import FramewatchError
from wire.records import ScoreRecord
from worker.decode import decode_image  # the worker's own decoding, so the embedding is the one it scored

EmbedderFactory = Callable[[EmbedderSpec], Any]
LOCK_S = 600.0  # longer than any absorption (embedding a few frames on a CPU takes seconds)
MAX_LINEAGE = 100_000


class MarkingBusy(FramewatchError):
    """Another absorption into the same index held its lock for longer than we would wait."""


@dataclass(frozen=True)
class Marked:
    """What a "normal" did: the active version afterwards, the frames absorbed now, and those absorbed before."""

    meta: IndexMeta
    absorbed: tuple[str, ...]
    already: dict[str, dict[str, Any]] = field(default_factory=dict)


class Marker:
    def __init__(
        self,
        repo: IndexRepository,
        fetcher: FrameFetcher,
        embedder_factory: EmbedderFactory,
        answers: Answers,
        lock_wait_s: float = LOCK_S,
    ) -> None:
        self.repo, self.fetcher, self.answers = repo, fetcher, answers
        self.lock_wait_s = lock_wait_s
        self._factory = embedder_factory
        self._embedders: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _embedder(self, spec: EmbedderSpec) -> Any:
        key = spec.fingerprint()
        if key not in self._embedders:
            self._embedders[key] = self._factory(spec)
        return self._embedders[key]

    def mark_normal(self, records: Sequence[ScoreRecord], by: str, name: Optional[str] = None) -> IndexMeta:
        """``mark`` for callers that want only the active version afterwards."""
        return self.mark(records, by, name).meta

    def mark(self, records: Sequence[ScoreRecord], by: str, name: Optional[str] = None) -> Marked:
        """Absorb these flagged frames into a new active version of ``name`` (default: the index that scored
        them, which must be one), except those already absorbed; store the answers under that index."""
        index = self._one_index(records, name)
        with self._serialised(index):
            return self._mark(index, records, by)

    def mark_incident(self, incident_id: str, records: Sequence[ScoreRecord], by: str) -> Marked:
        """``mark`` for an incident's sampled frames, at most once: an incident already absorbed into a version
        the active one descends from makes no new version (``already`` then holds its answer, under its id).
        The incident's answer records the frames it absorbed and the version."""
        index = self._one_index(records, None)
        with self._serialised(index):
            before = self.answers.incidents(index).get(incident_id, {})
            if before.get("label") == "normal" and before.get("absorbed_in") in self._lineage(index):
                return Marked(self.repo.meta(index), (), {incident_id: before})
            done = self._mark(index, records, by)
            versions = [a.get("absorbed_in") for a in done.already.values()]
            version = done.meta.version if done.absorbed else max((v for v in versions if isinstance(v, int)),
                                                                   default=done.meta.version)  # fmt: skip
            self.answers.put_incident(index, incident_id, "normal", by, frames=[r.frame_id for r in records],
                                      absorbed=list(done.absorbed), absorbed_in=version)  # fmt: skip
        return done

    @staticmethod
    def _one_index(records: Sequence[ScoreRecord], name: Optional[str]) -> str:
        names = {name} if name else {r.index_name for r in records}
        if len(names) != 1:
            raise FeedbackError(f"marked frames must belong to one index, got {sorted(names)}")
        return names.pop()

    def _mark(self, index: str, records: Sequence[ScoreRecord], by: str) -> Marked:
        """``mark``, with the index's lock held."""
        already = self.already_normal(index, [r.frame_id for r in records])
        todo = [r for r in records if r.frame_id not in already]
        if not todo:
            return Marked(self.repo.meta(index), (), already)
        images = []
        for r in todo:
            frame = self.fetcher.fetch(r.frame_topic, r.frame_partition, r.frame_offset)
            images.append(self.decode(index, frame.image, frame.content_type))
        meta = self._absorb(index, images, [Mark(r.frame_id, by, r.source) for r in todo])
        for r in todo:
            self.answers.put(meta.name, r.frame_id, "normal", by, score=r.score, threshold=r.threshold,
                             index_version=r.index_version, absorbed_in=meta.version)  # fmt: skip
        return Marked(meta, tuple(r.frame_id for r in todo), already)

    def already_normal(self, index: str, frame_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The stored "normal" answers of ``frame_ids`` whose version the active one descends from."""
        answers = self.answers.all(index)
        found = {f: answers[f] for f in frame_ids if answers.get(f, {}).get("label") == "normal"}
        if not found:
            return {}
        lineage = self._lineage(index)
        return {f: a for f, a in found.items() if a.get("absorbed_in") in lineage}

    def _lineage(self, index: str) -> set[int]:
        """The active version and every version it was derived from by feedback."""
        versions: set[int] = set()
        version = self.repo.active_version(index)
        while version is not None and version not in versions and len(versions) < MAX_LINEAGE:
            versions.add(version)
            base = self.repo.meta(index, version).feedback.get("base_version")
            version = base if isinstance(base, int) else None
        return versions

    def decode(self, name: str, data: bytes, content_type: str = "") -> Any:
        """Decode as the worker does for index ``name`` (its spec's reduced JPEG scale included)."""
        return decode_image(data, content_type, resize=self.repo.meta(name).embedder_spec.draft_side)

    def absorb_images(self, name: str, images: Sequence[Any], marks: Sequence[Mark]) -> IndexMeta:
        with self._serialised(name):
            return self._absorb(name, images, marks)

    def _absorb(self, name: str, images: Sequence[Any], marks: Sequence[Mark]) -> IndexMeta:
        meta = self.repo.meta(name)
        emb = embed_images(meta, images, self._embedder(meta.embedder_spec))
        return publish_marked(self.repo, name, emb, marks, base_version=meta.version)

    @contextlib.contextmanager
    def _serialised(self, index: str) -> Iterator[None]:
        """This process's lock, then the index's Redis lock (with an expiry, so a crashed holder cannot wedge it)."""
        lock = self.repo.review_lock(index, LOCK_S)
        with self._lock:
            if not lock.acquire(blocking_timeout=self.lock_wait_s):
                raise MarkingBusy(f"another absorption into index {index!r} is still running; try again")
            try:
                yield
            finally:
                try:
                    lock.release()
                except LockError:
                    pass  # it expired: the absorption outlived LOCK_S; the version it published stands

    def confirm(self, record: ScoreRecord, by: str) -> None:
        self.answers.put(record.index_name, record.frame_id, "confirmed", by, score=record.score,
                         threshold=record.threshold, index_version=record.index_version)  # fmt: skip

    def confirm_incident(self, incident_id: str, index: str, records: Sequence[ScoreRecord], by: str) -> None:
        """Store "confirmed" for each of the incident's frames (answers are per frame, as tools read them) and
        for the incident. A frame already marked normal keeps that answer: confirming does not undo a "normal"."""
        normal = self.already_normal(index, [r.frame_id for r in records])
        for r in records:
            if r.frame_id not in normal:
                self.confirm(r, by)
        self.answers.put_incident(index, incident_id, "confirmed", by, frames=len(records))
