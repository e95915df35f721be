"""Admission: a message becomes a frame in flight, decoding in the pool, waiting in the batch being filled.

The second part of the data path (README, "Architecture"). The message is
parsed as a ``FrameRecord`` (wire/records.py); the image is decoded and
preprocessed on a pool of threads (PIL and libjpeg release the GIL), while
the frame waits in the batcher for its batch. A message that is not a frame
is refused with its reason, and the loop hands it to delivery, which builds
its dead letter.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Optional

from prometheus_client import Counter

from wire.errors import FrameDecodeError
from wire.records import FrameRecord
from worker.batcher import Batcher
from worker.inflight import InFlight
from worker.kafka_port import Record

log = logging.getLogger(__name__)


class DecodePool:
    """Runs ``prepare(record)`` on a pool of threads."""

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


class Refused(Exception):
    """A message that is not a frame: the reason and detail of its dead letter."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class Admission:
    def __init__(self, batcher: Batcher[InFlight], pool: DecodePool, replaced: Optional[Counter] = None,
                 on_frame: Callable[[FrameRecord], None] = lambda record: None) -> None:  # fmt: skip
        """``replaced`` counts frames whose capture time was replaced; ``on_frame`` sees each frame as it is
        admitted (the worker starts loading a camera's own index there, while the frame decodes)."""
        self.batcher, self.pool, self.replaced, self.on_frame = batcher, pool, replaced, on_frame
        self.prepare: Optional[Callable[[FrameRecord], Any]] = None  # the extractor's, once built
        self._replaced_times = 0

    def serve(self, prepare: Callable[[FrameRecord], Any]) -> None:
        """What decodes a frame for the embedder (no message is admitted before)."""
        self.prepare = prepare

    def admit(self, message: Record) -> None:
        """Parse, start decoding, add to the batch.
        :raises Refused: the message is not a frame (its dead letter says why)."""
        assert self.prepare is not None, "consumption is held until the embedder is built"
        try:
            record = FrameRecord.decode(
                message.key, message.value, message.headers,
                fallback_id=f"{message.topic}/{message.partition}/{message.offset}",
                fallback_time=(message.timestamp_ms or 0) / 1000.0,
            )  # fmt: skip
        except FrameDecodeError as e:
            raise Refused(e.reason, e.message) from e
        except Exception as e:  # noqa: BLE001 - a poison message must become a dead letter, never a crash loop
            raise Refused("undecodable", f"{type(e).__name__}: {e}") from e
        if record.capture_time_replaced:
            self._capture_time_replaced(record)
        self.on_frame(record)
        self.batcher.add(InFlight(message, record, self.pool.submit(self.prepare, record)))

    def _capture_time_replaced(self, record: FrameRecord) -> None:
        """Counted; logged the first time and then every 1000th, so a camera with an unset clock does not flood."""
        if self.replaced is not None:
            self.replaced.inc()
        self._replaced_times += 1
        if self._replaced_times % 1000 == 1:
            log.warning("frame %s from %s: capture time before 2000 or over a day ahead, replaced by the message "
                        "timestamp (%d such frames so far)", record.frame_id, record.source, self._replaced_times)  # fmt: skip
