"""Publish frames from a source to the frames topic, keyed by source id.

Frame ids are ``{source}-{run}-{sequence}``: unique across restarts (``run``
is random per publisher) and readable in alerts. A rate limit (frames per
second) uses an injected clock and sleep so tests don't wait.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Protocol

from producer.metrics import ProducerMetrics
from producer.sources import SourceFrame
from wire.records import FrameRecord
from wire.settings import KafkaSettings

log = logging.getLogger(__name__)


class FutureLike(Protocol):
    def get(self, timeout: Optional[float] = None) -> Any: ...


class SendsMessages(Protocol):
    """The part of kafka-python's KafkaProducer the publisher uses."""

    def send(self, topic: str, value: bytes, key: bytes, headers: list[tuple[str, bytes]]) -> FutureLike: ...

    def flush(self, timeout: Optional[float] = None) -> None: ...

    def close(self, timeout: Optional[float] = None) -> None: ...


def kafka_producer(settings: KafkaSettings) -> SendsMessages:
    from kafka import KafkaProducer

    return KafkaProducer(  # type: ignore[no-any-return]
        acks="all",
        linger_ms=5,
        max_request_size=settings.max_message_bytes,
        retries=5,
        **settings.client_kwargs(),
    )


class RateLimiter:
    """At most ``fps`` calls per second on average (0 = unlimited)."""

    def __init__(
        self,
        fps: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / fps if fps > 0 else 0.0
        self.clock, self.sleep = clock, sleep
        self._next: Optional[float] = None

    def wait(self) -> None:
        if not self.interval:
            return
        now = self.clock()
        if self._next is None:
            self._next = now
        if self._next > now:
            self.sleep(self._next - now)
        self._next = max(self._next, now) + self.interval


@dataclass
class PublishReport:
    sent: int = 0
    failed: int = 0


class Publisher:
    """Sends SourceFrames as FrameRecords; ``publish`` returns how many the broker acknowledged."""

    def __init__(
        self,
        producer: SendsMessages,
        topic: str,
        source_id: str,
        metrics: ProducerMetrics,
        fps: float = 0.0,
        clock: Callable[[], float] = time.time,
        limiter: Optional[RateLimiter] = None,
    ) -> None:
        self.producer = producer
        self.topic = topic
        self.source_id = source_id
        self.metrics = metrics
        self.clock = clock
        self.limiter = limiter or RateLimiter(fps)
        self.run_id = uuid.uuid4().hex[:8]
        self.sequence = 0

    def frame_record(self, frame: SourceFrame) -> FrameRecord:
        seq = self.sequence
        self.sequence += 1
        return FrameRecord(
            frame_id=f"{self.source_id}-{self.run_id}-{seq}",
            source=self.source_id,
            sequence=seq,
            capture_time=self.clock(),
            image=frame.image,
            content_type=frame.content_type,
            origin=frame.origin,
        )

    def publish(
        self,
        frames: Iterable[SourceFrame],
        limit: Optional[int] = None,
        stop: Optional[threading.Event] = None,
        on_sent: Optional[Callable[[FrameRecord], None]] = None,
    ) -> PublishReport:
        report = PublishReport()
        pending: list[tuple[FrameRecord, FutureLike]] = []
        for frame in frames:
            if (stop is not None and stop.is_set()) or (limit is not None and report.sent + len(pending) >= limit):
                break
            self.limiter.wait()
            record = self.frame_record(frame)
            key, value, headers = record.encode()
            pending.append((record, self.producer.send(self.topic, value=value, key=key, headers=headers)))
            self.metrics.frame_bytes.observe(len(value))
            if len(pending) >= 64:
                self._settle(pending, report, on_sent)
        self.producer.flush()
        self._settle(pending, report, on_sent)
        return report

    def _settle(
        self,
        pending: list[tuple[FrameRecord, FutureLike]],
        report: PublishReport,
        on_sent: Optional[Callable[[FrameRecord], None]],
    ) -> None:
        for record, future in pending:
            try:
                future.get(timeout=60)
            except Exception as e:  # kafka errors: counted and logged, never silent
                report.failed += 1
                self.metrics.send_errors.labels(self.source_id).inc()
                log.error("frame %s not acknowledged: %s", record.frame_id, e)
                continue
            report.sent += 1
            self.metrics.frames_sent.labels(self.source_id).inc()
            self.metrics.bytes_sent.labels(self.source_id).inc(len(record.image))
            if on_sent:
                on_sent(record)
        pending.clear()
