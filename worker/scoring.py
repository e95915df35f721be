"""The scoring core: decoded frames in, score records out. No Kafka, no Redis.

Frames are embedded once per batch, then each is scored by the index its
source is routed to (a per-camera route: its camera's own index when
``cameras`` holds it, else the default index, and the record says why). With ``window > 1`` a per-source sliding window of
embeddings also gets a group score (DN2's mean-pooled group anomaly rule).
Every record says why: a patch index gives the anomaly map and the hotspot
(in the frame's pixels); a global index names the nearest normal training
frames (the index meta's origins), and a whole-frame global index's regions
(index_store/regions.py) give a coarse map and hotspot as well, its nearest
frames judged at the worst region.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Optional, Protocol, Sequence

import numpy as np

from index_store import geometry
from index_store.anomaly_maps import frame_map, hotspot_in, score_maps
from index_store.knn import group_score
from wire.anomaly_map import encode_map
from wire.errors import FrameDecodeError
from wire.records import ScoreRecord
from worker.drift import DriftTracker, Reference
from worker.indexes import LoadedIndex
from worker.inflight import InFlight, Outcome
from worker.routing import Routing

if TYPE_CHECKING:
    from index_store.spec import EmbedderSpec
    from worker.camera_indexes import CameraIndexes
    from worker.candidates import Candidates

# The index that scores a frame, the camera's own index name (per-camera routes; else None), and why the
# default index scored it instead of that one ("" when it did not).
Chosen = tuple[LoadedIndex, Optional[str], str]
log = logging.getLogger(__name__)

MAX_REFERENCES = 10_000  # drift calibrations kept (index versions); rebuilt on demand


class Embeds(Protocol):
    def embed(self, prepared: Sequence[Any]) -> np.ndarray: ...


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


@dataclass(frozen=True)
class Why:
    """A frame's score and what made it."""

    score: float
    geometry: str = ""
    hotspot: Optional[list[int]] = None
    anomaly_map: Optional[dict[str, Any]] = None
    neighbors: Optional[list[str]] = None


def score_frames(loaded: LoadedIndex, feats: np.ndarray, sizes: list[tuple[int, int]]) -> list[Why]:
    """Score (N, D) global embeddings, or (N, h, w, D) patch grids / global tile grids, of frames of
    ``sizes`` (w, h).

    A map also says which part of the frame it covers (``"box"``, frame pixels: the whole frame in the
    full view, tiles stitched), so a viewer can lay it over the image without knowing the preprocessing.
    """
    spec = loaded.spec
    labels = [frame_geometry(spec, w, h) for w, h in sizes]
    if feats.ndim == 4:
        scores, maps = score_maps(loaded.knn, feats, spec)
        whys = []
        for i, (s, m, (w, h), label) in enumerate(zip(scores, maps, sizes, labels)):
            stitched, box = frame_map(m, spec, w, h)
            region = [int(round(v)) for v in box]
            amap = {**encode_map(stitched.tolist()), "box": region}
            if spec.zones:  # so explain and the review page can draw what was left out
                amap["ignore"] = [[round(z[0] * w), round(z[1] * h), round(z[2] * w), round(z[3] * h)] for z in spec.zones]
            neighbors = None if spec.is_patch else region_neighbors(loaded, feats[i], m)
            whys.append(Why(float(s), label, hotspot_in(stitched, box, w, h), amap, neighbors))
        return whys
    scores, ids = loaded.knn.search(feats)
    origins = loaded.meta.origins
    return [
        Why(float(s), label, neighbors=[origins[j] for j in row if 0 <= j < len(origins)] or None)
        for s, row, label in zip(scores, ids, labels)
    ]


def region_neighbors(loaded: LoadedIndex, grid: np.ndarray, amap: np.ndarray, k: int = 2) -> Optional[list[str]]:
    """A global grid index (regions, tiles): the training frames whose vectors at the frame's worst region
    are nearest its own (k-means: the frames nearest those centres); None when the memory cannot say."""
    memory, origins = loaded.index, loaded.meta.origins
    if not hasattr(memory, "nearest_frames") or not origins:
        return None
    if memory.rows is None and memory.per_cell != len(origins):
        return None  # an exact memory whose rows are not the origins' frames
    cell = np.unravel_index(int(np.argmax(amap)), amap.shape)
    frames = memory.nearest_frames(grid[cell], (int(cell[0]), int(cell[1])), k)
    return [origins[j] for j in frames if j < len(origins)] or None


def frame_geometry(spec: "EmbedderSpec", frame_w: int, frame_h: int) -> str:
    """What the record says of the geometry: ``full`` / ``center``, ``/stretched`` when the frame's aspect
    differs from the one the index was fit on (it was resized to the index's input shape all the same)."""
    if not spec.is_full:
        return "center"
    if frame_w <= 0 or frame_h <= 0:  # size unknown (an extractor that decodes nothing: framewatch bench)
        return "full"
    stretched = geometry.is_stretched(frame_w, frame_h, spec.input_shape, spec.tiles, spec.tile_overlap)
    return "full/stretched" if stretched else "full"


def window_score(loaded: LoadedIndex, window: np.ndarray) -> float:
    """Group score of a (W, D) window of embeddings or a (W, h, w, D) window of patch grids."""
    if window.ndim == 4:
        spec = loaded.spec
        return float(score_maps(loaded.knn, window.mean(axis=0, keepdims=True), spec)[0][0])
    return group_score(loaded.knn, window)


class Scorer:
    def __init__(
        self,
        embedder: Embeds,
        routing: Routing,
        worker_id: str = "",
        window: int = 0,
        clock: Callable[[], float] = time.time,
        drift: Optional[DriftTracker] = None,
        cameras: Optional["CameraIndexes"] = None,
        shadow: Optional["Candidates"] = None,
    ) -> None:
        """``drift``, when given, sees every frame scored against a threshold (per-camera alarm rate and drift);
        ``cameras`` serves the per-camera indexes of template routes (worker/camera_indexes.py); ``shadow``
        scores the same embeddings against the indexes' candidate versions (worker/candidates.py)."""
        self.cameras = cameras
        self.shadow = shadow
        self.embedder = embedder
        self.routing = routing
        self.worker_id = worker_id
        self.windows = WindowTracker(window) if window > 1 else None
        self.clock = clock
        self.drift = drift
        self._references: dict[tuple[str, int], Reference] = {}

    def score(self, frames: list[InFlight], indexes: dict[str, LoadedIndex]) -> list[ScoreRecord]:
        """One ScoreRecord per frame, in order. Every index named outright (``routing.names()``) must be in
        ``indexes``; per-camera ones come from ``cameras``, else the default index scores the frame."""
        if not frames:
            return []
        embeddings = self.embedder.embed([f.prepared for f in frames])
        chosen = self._choose(frames, indexes)
        whys: list[Optional[Why]] = [None] * len(frames)
        by_index: dict[int, list[int]] = defaultdict(list)  # id(LoadedIndex) -> rows: the frame embedded once
        for i, (loaded, _, _) in enumerate(chosen):
            by_index[id(loaded)].append(i)
        for rows in by_index.values():
            sizes = [frames[i].size for i in rows]
            for i, why in zip(rows, score_frames(chosen[rows[0]][0], embeddings[rows], sizes)):
                whys[i] = why
        now = self.clock()
        records = [
            self._record(f, whys[i], embeddings[i], chosen[i], now)  # type: ignore[arg-type]
            for i, f in enumerate(frames)
        ]
        if self.shadow is not None:
            records = self.shadow.shadow(records, embeddings, [f.size for f in frames], score_frames)
        return records

    def _choose(self, frames: list[InFlight], indexes: dict[str, LoadedIndex]) -> list[Chosen]:
        """Each frame's index: its route's, or for a per-camera route its camera's own when held, else the
        default index with the reason (worker/camera_indexes.py)."""
        routes = [self.routing.route(f.record.source) for f in frames]
        own = [r.name for r in routes if r.per_camera and r.name not in indexes]
        found = self.cameras.resolve(own) if own and self.cameras is not None else {}
        chosen: list[Chosen] = []
        for route in routes:
            if not route.per_camera:
                chosen.append((indexes[route.name], None, ""))
                continue
            if route.name in indexes:  # the camera's index is one the worker holds anyway (e.g. the fallback's name)
                chosen.append((indexes[route.name], route.name, ""))
                continue
            got = found.get(route.name, "missing")
            if isinstance(got, str):
                if self.cameras is not None:
                    self.cameras.metrics.fallback.labels(got).inc()
                chosen.append((indexes[self.routing.default], route.name, got))
            else:
                chosen.append((got, route.name, ""))
        return chosen

    def _record(self, frame: InFlight, why: Why, embedding: np.ndarray, chosen: Chosen, now: float) -> ScoreRecord:
        loaded, camera_index, fallback = chosen
        meta, rec = loaded.meta, frame.record
        threshold, score = meta.threshold, why.score
        group_score = None
        if self.windows is not None:
            window = self.windows.push(rec.source, embedding)
            if window is not None:
                group_score = window_score(loaded, window)
        if self.drift is not None and threshold:
            self.drift.observe(rec.source, score / threshold, f"{meta.name}@{meta.version}", self._reference(loaded))
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
            backbone=loaded.spec.label(),
            latency_s=max(0.0, now - rec.capture_time) if rec.capture_time else 0.0,
            origin=rec.origin,
            normalized_score=(score / threshold) if threshold else None,
            window_score=group_score,
            worker=self.worker_id,
            frame_topic=frame.topic,
            frame_partition=frame.partition,
            frame_offset=frame.offset,
            frame_size=list(frame.size) if frame.size != (0, 0) else None,
            geometry=why.geometry,
            hotspot=why.hotspot,
            anomaly_map=why.anomaly_map,
            neighbors=why.neighbors,
            camera_index=camera_index,
            index_fallback=fallback,
        )

    def _reference(self, loaded: LoadedIndex) -> Reference:
        """The calibration drift is measured against, built once per index version."""
        meta = loaded.meta
        key = (meta.name, meta.version)
        if key not in self._references:
            if len(self._references) >= MAX_REFERENCES:  # thousands of per-camera indexes, new versions
                self._references.clear()
            self._references[key] = Reference.from_calibration(meta.calibration, float(meta.threshold or 0.0))
        return self._references[key]


class BatchScorer:
    """What the embed stage runs on each batch: decodes awaited, embedded, scored against the indexes served
    now. A frame that fails becomes a dead-letter outcome; a batch that fails as a whole is scored again
    frame by frame, so one bad frame never takes the others down."""

    def __init__(self, scorer: Scorer, indexes: Callable[[], dict[str, LoadedIndex]],
                 busy: Optional[Any] = None, observe: Callable[[int], None] = lambda n: None,
                 watch: Sequence[Callable[[], ContextManager[Any]]] = ()) -> None:  # fmt: skip
        """``busy`` (a Counter) counts the wall time of embedding and scoring, not the wait for decodes;
        ``observe`` sees each batch's size; each of ``watch`` wraps each batch (the watchdog's "score"
        call, its timer)."""
        self.scorer, self.indexes, self.busy, self.observe, self.watch = scorer, indexes, busy, observe, watch

    def __call__(self, frames: list[InFlight]) -> list[Outcome]:
        self.observe(len(frames))
        with contextlib.ExitStack() as stack:
            for watch in self.watch:
                stack.enter_context(watch())
            outcomes: list[Outcome] = []
            decoded: list[InFlight] = []
            for frame in frames:
                try:
                    frame.await_decode()
                    decoded.append(frame)
                except FrameDecodeError as e:
                    outcomes.append(Outcome(frame, reason=e.reason, detail=e.message))
                except Exception as e:  # noqa: BLE001 - a poison frame must become a dead letter, never a crash loop
                    outcomes.append(Outcome(frame, reason="undecodable", detail=f"{type(e).__name__}: {e}"))
            t0 = time.perf_counter()
            outcomes += self._score(decoded, self.indexes())
            if self.busy is not None:
                self.busy.inc(time.perf_counter() - t0)
            return outcomes

    def _score(self, frames: list[InFlight], indexes: dict[str, LoadedIndex]) -> list[Outcome]:
        if not frames:
            return []
        try:
            records = self.scorer.score(frames, indexes)
            encoded = [
                rec.encode() for rec in records
            ]  # a non-finite score fails here, as this batch's error
        except Exception as e:  # noqa: BLE001 - one bad frame must not take the batch down
            if len(frames) == 1:
                return [Outcome(frames[0], reason="scoring-error", detail=f"{type(e).__name__}: {e}")]
            log.warning("batch of %d failed (%s); scoring frames one by one", len(frames), e)
            return [out for frame in frames for out in self._score([frame], indexes)]
        return [Outcome(f, rec, enc) for f, rec, enc in zip(frames, records, encoded)]
