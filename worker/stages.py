"""The worker's overlapping stages: decode (a pool of threads) | embed + score (its own thread) | deliver.

While batch n is embedded, the frames of batch n+1 are decoded in the pool
and the records of batch n-1 are with the outbox. Bounded queues sit between
them: the decode pool holds at most the frames of the batches in flight, the
embed stage takes at most ``depth`` batches; when it is full the loop stops
polling (the partitions wait, the consumer keeps its group membership from its
heartbeat thread), so memory stays bounded whatever the input rate.

The loop thread alone touches Kafka, the batcher and the outbox; the embed
thread only turns a batch of frames into ``Outcome`` values, which the loop
then sends. Busy time per stage and queue depths are Prometheus metrics.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge

from wire.errors import FrameDecodeError
from wire.records import FrameRecord, ScoreRecord
from worker.extract import Prepared
from worker.indexes import LoadedIndex
from worker.scoring import PendingFrame, Scorer

log = logging.getLogger(__name__)

BUSY_STAGES = ("consume", "decode", "embed", "deliver")
QUEUES = ("decode", "batch", "embed", "deliver")


class StageMetrics:
    """framewatch_stage_busy_seconds_total{stage} and framewatch_queue_depth{queue}, on the registry passed in."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.busy = Counter(
            "framewatch_stage_busy_seconds",
            "Seconds each stage worked: CPU seconds of the loop thread (consume, deliver) and of the decode "
            "threads (summed), wall seconds of embedding and scoring (embed; not the wait for decodes)",
            ["stage"], registry=registry,
        )  # fmt: skip
        self.stage = {stage: self.busy.labels(stage) for stage in BUSY_STAGES}  # looked up once, not per call
        self.depth = Gauge("framewatch_queue_depth", "Items waiting in each queue between the stages", ["queue"],
                           registry=registry)  # fmt: skip

    def depths(self, **read: Callable[[], int]) -> None:
        """Queue depths read at scrape time: decode (frames), batch (frames), embed (batches), deliver (outputs)."""
        for name in QUEUES:
            fn = read.get(name, lambda: 0)
            self.depth.labels(name).set_function(lambda fn=fn: float(fn()))  # type: ignore[misc]


@dataclass
class Outcome:
    """What became of one frame: a score record (encoded) or the reason for its dead letter."""

    frame: PendingFrame
    record: Optional[ScoreRecord] = None
    encoded: Optional[tuple[bytes, bytes]] = None
    reason: str = ""
    detail: str = ""


class DecodePool:
    """Runs ``prepare(record)`` on a pool of threads; PIL and libjpeg release the GIL while decoding."""

    def __init__(self, threads: int = 0, busy: Optional[Counter] = None) -> None:
        self.threads = threads or min(8, os.cpu_count() or 2)
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="decode")
        self._busy = busy
        self._lock = threading.Lock()
        self._queued = 0

    def submit(self, prepare: Callable[[FrameRecord], Any], record: FrameRecord) -> "Future[Any]":
        with self._lock:
            self._queued += 1
        return self._pool.submit(self._run, prepare, record)

    def _run(self, prepare: Callable[[FrameRecord], Any], record: FrameRecord) -> Any:
        t0 = time.thread_time()  # CPU time of this thread: a pool thread waiting for a core does not count
        try:
            return prepare(record)
        finally:
            if self._busy is not None:
                self._busy.inc(time.thread_time() - t0)
            with self._lock:
                self._queued -= 1

    def depth(self) -> int:
        return self._queued

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def score_batch(
    scorer: Scorer,
    frames: list[PendingFrame],
    indexes: dict[str, LoadedIndex],
    busy: Optional[Counter] = None,
) -> list[Outcome]:
    """Wait for the batch's decodes, embed and score it; a frame that fails becomes a dead-letter outcome.

    A batch that fails as a whole is scored again frame by frame, so one bad
    frame never takes the others down. ``busy`` counts the embedding and
    scoring time (wall: torch works on its own threads), not the wait for decodes.
    """
    outcomes: list[Outcome] = []
    decoded: list[PendingFrame] = []
    for frame in frames:
        try:
            value = frame.prepared.result() if isinstance(frame.prepared, Future) else frame.prepared
            if isinstance(value, Prepared):
                frame.prepared, frame.size = value.data, value.size
            else:
                frame.prepared = value
            decoded.append(frame)
        except FrameDecodeError as e:
            outcomes.append(Outcome(frame, reason=e.reason, detail=e.message))
        except Exception as e:  # noqa: BLE001 - a poison frame must become a dead letter, never a crash loop
            outcomes.append(Outcome(frame, reason="undecodable", detail=f"{type(e).__name__}: {e}"))
    t0 = time.perf_counter()
    outcomes += _score_decoded(scorer, decoded, indexes)
    if busy is not None:
        busy.inc(time.perf_counter() - t0)
    return outcomes


def _score_decoded(
    scorer: Scorer, frames: list[PendingFrame], indexes: dict[str, LoadedIndex]
) -> list[Outcome]:
    if not frames:
        return []
    try:
        records = scorer.score(frames, indexes)
        encoded = [rec.encode() for rec in records]  # a non-finite score fails here, as this batch's error
    except Exception as e:  # noqa: BLE001 - one bad frame must not take the batch down
        if len(frames) == 1:
            return [Outcome(frames[0], reason="scoring-error", detail=f"{type(e).__name__}: {e}")]
        log.warning("batch of %d failed (%s); scoring frames one by one", len(frames), e)
        return [out for frame in frames for out in _score_decoded(scorer, [frame], indexes)]
    return [Outcome(f, rec, enc) for f, rec, enc in zip(frames, records, encoded)]


class EmbedStage:
    """Its own thread: takes batches (at most ``depth`` waiting), returns their outcomes in order."""

    def __init__(self, work: Callable[[list[PendingFrame]], list[Outcome]], depth: int = 2) -> None:
        self._work = work
        self._todo: queue.Queue[Optional[list[PendingFrame]]] = queue.Queue(maxsize=depth)
        self._done: queue.Queue[list[Outcome]] = queue.Queue()
        self._lock = threading.Lock()
        self._in_flight = 0  # batches submitted whose outcomes were not taken yet
        self._thread = threading.Thread(target=self._run, name="embed", daemon=True)
        self._thread.start()

    def full(self) -> bool:
        return self._todo.full()

    def waiting(self) -> int:
        """Batches submitted and not yet started."""
        return self._todo.qsize()

    def in_flight(self) -> int:
        return self._in_flight

    def submit(self, batch: list[PendingFrame], timeout_s: Optional[float] = 0.0) -> bool:
        """Hand a batch over; False when the stage stays full for ``timeout_s`` (0: do not wait)."""
        try:
            self._todo.put(batch, block=bool(timeout_s), timeout=timeout_s or None)
        except queue.Full:
            return False
        with self._lock:
            self._in_flight += 1
        return True

    def take(self, wait_s: float = 0.0) -> list[Outcome]:
        """The outcomes of every batch finished since the last call (waits up to ``wait_s`` for the first)."""
        got: list[Outcome] = []
        try:
            got += self._done.get(timeout=wait_s) if wait_s > 0 else self._done.get_nowait()
            while True:
                got += self._done.get_nowait()
        except queue.Empty:
            pass
        return got

    def _run(self) -> None:
        while True:
            batch = self._todo.get()
            if batch is None:
                return
            try:
                outcomes = self._work(batch)
            except Exception as e:  # noqa: BLE001 - never lose a batch: each frame becomes a dead letter
                log.exception("embed stage failed on a batch of %d", len(batch))
                outcomes = [
                    Outcome(f, reason="scoring-error", detail=f"{type(e).__name__}: {e}") for f in batch
                ]
            self._done.put(outcomes)
            with self._lock:  # after the put: in_flight() == 0 means every outcome can be taken
                self._in_flight -= 1

    def stop(self) -> None:
        try:
            self._todo.put_nowait(None)
        except queue.Full:
            pass  # daemon thread: it ends with the process
