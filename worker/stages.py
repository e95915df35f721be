"""The embed stage, and the metrics of the worker's overlapping stages: decode | embed + score | deliver.

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
import queue
import threading
from typing import Callable, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge

from worker.inflight import InFlight, Outcome

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


ScoreBatch = Callable[[list[InFlight]], list[Outcome]]


class EmbedStage:
    """Its own thread: takes batches (at most ``depth`` waiting), returns their outcomes in order.

    What it runs on each batch is handed over by ``serve`` once the scorer is
    built (scoring.BatchScorer); no batch is submitted before.
    """

    def __init__(self, depth: int = 2, work: Optional[ScoreBatch] = None) -> None:
        self._work = work
        self._todo: queue.Queue[Optional[list[InFlight]]] = queue.Queue(maxsize=depth)
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

    def serve(self, work: ScoreBatch) -> None:
        self._work = work

    def submit(self, batch: list[InFlight], timeout_s: Optional[float] = 0.0) -> bool:
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
                assert self._work is not None, "a batch was submitted before the scorer was served"
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
