"""Publish frames from a source to the frames topic, keyed by source id.

Frame ids are ``{source}-{run}-{sequence}``: unique across restarts (``run``
is random per publisher) and readable in alerts. A rate limit (frames per
second) uses an injected clock and sleep so tests don't wait.

A frame the broker does not acknowledge is counted, logged and not sent again
(a live camera has moved on). A producer whose frames keep failing is
replaced (``Renewal``), as the worker's outbox does: an idempotent producer
whose broker restarted without its state fails every send for good with an
InitProducerId error, and only a new producer gets a new producer id. If new
ones fail too for ``give_up_after_s``, ``ProducerFailed`` ends the run.
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
from wire.errors import FramewatchError
from wire.fields import escape_controls
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
        # a frame is acknowledged or failed within 30 s (not kafka-python's 120 s), and send() waits at
        # most 10 s for metadata: a broken producer shows within seconds, so it can be replaced
        request_timeout_ms=10_000,
        delivery_timeout_ms=30_000,
        max_block_ms=10_000,
        **settings.client_kwargs(),
    )


class ProducerFailed(FramewatchError):
    """No frame was acknowledged for the give-up time, through every renewed producer."""


class Renewal:
    """Says when to replace a failing producer, and when to stop trying.

    Failures for ``renew_after_s`` with no acknowledgement between them: a new
    producer (the old one is closed without waiting). Failures for
    ``give_up_after_s`` (0 = never): ProducerFailed.
    """

    def __init__(
        self,
        make: Callable[[], "SendsMessages"],
        renew_after_s: float = 10.0,
        give_up_after_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.make = make
        self.renew_after_s, self.give_up_after_s = renew_after_s, give_up_after_s
        self.clock = clock
        self._since: Optional[float] = None  # first failure since the last acknowledgement
        self._renewed_at: Optional[float] = None

    def ok(self) -> None:
        self._since = self._renewed_at = None

    def failed(self, producer: "SendsMessages", error: BaseException) -> Optional["SendsMessages"]:
        """A new producer to use from now on, or None to keep this one.

        :raises ProducerFailed: failing for ``give_up_after_s``.
        """
        now = self.clock()
        if self._since is None:
            self._since = now
        if self.give_up_after_s and now - self._since >= self.give_up_after_s:
            raise ProducerFailed(f"no frame acknowledged for {now - self._since:.0f}s, through renewed producers "
                                 f"(last error: {type(error).__name__}: {error}); giving up")  # fmt: skip
        if now - (self._renewed_at if self._renewed_at is not None else self._since) < self.renew_after_s:
            return None
        log.warning("frames failing for %.0fs (%s: %s): renewing the producer", now - self._since,
                    type(error).__name__, error)  # fmt: skip
        try:
            producer.close(timeout=0)
        except Exception as e:  # noqa: BLE001 - the old one is broken anyway
            log.debug("closing the old producer: %s", e)
        self._renewed_at = now
        try:
            return self.make()
        except Exception as e:  # noqa: BLE001 - e.g. no broker yet: the old one fails on, and is renewed again
            log.warning("no new producer yet (%s: %s); trying again in %.0fs", type(e).__name__, e, self.renew_after_s)
            return None


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
    renewed: int = 0  # producers replaced after failing


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
        renewal: Optional[Renewal] = None,
    ) -> None:
        """``renewal``: replace the producer when it keeps failing (without it, failures are only counted)."""
        self.producer = producer
        self.renewal = renewal
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
            origin=escape_controls(frame.origin),  # a file name may hold a newline; a header may not
        )

    def publish(
        self,
        frames: Iterable[SourceFrame],
        limit: Optional[int] = None,
        stop: Optional[threading.Event] = None,
        on_sent: Optional[Callable[[FrameRecord], None]] = None,
    ) -> PublishReport:
        """Send until the source ends, ``stop`` is set or ``limit`` frames were attempted (sent or failed).

        :raises ProducerFailed: no frame acknowledged for the renewal's give-up time.
        """
        report = PublishReport()
        pending: list[tuple[FrameRecord, FutureLike]] = []
        attempted = 0
        for frame in frames:
            if (stop is not None and stop.is_set()) or (limit is not None and attempted >= limit):
                break
            self.limiter.wait()
            record = self.frame_record(frame)
            attempted += 1
            key, value, headers = record.encode()
            try:
                future = self.producer.send(self.topic, value=value, key=key, headers=headers)
            except Exception as e:  # a producer in a fatal state, or no metadata within max_block_ms
                self._failed(record, e, report)
                continue
            pending.append((record, future))
            self.metrics.frame_bytes.observe(len(value))
            while pending and getattr(pending[0][1], "is_done", False):  # failures show as they happen
                self._settle(pending[:1], report, on_sent)
                del pending[:1]
            if len(pending) >= 64:
                self._settle(pending, report, on_sent)
        try:
            self.producer.flush()
        except Exception as e:  # noqa: BLE001 - each pending frame then fails on its own, and is counted
            log.debug("flush: %s", e)
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
                self._failed(record, e, report)
                continue
            report.sent += 1
            if self.renewal is not None:
                self.renewal.ok()
            self.metrics.frames_sent.labels(self.source_id).inc()
            self.metrics.bytes_sent.labels(self.source_id).inc(len(record.image))
            if on_sent:
                on_sent(record)
        pending.clear()

    def _failed(self, record: FrameRecord, error: BaseException, report: PublishReport) -> None:
        report.failed += 1
        self.metrics.send_errors.labels(self.source_id).inc()
        log.error("frame %s not acknowledged: %s: %s", record.frame_id, type(error).__name__, error)
        if self.renewal is None:
            return
        renewed = self.renewal.failed(self.producer, error)
        if renewed is not None:
            self.producer = renewed
            report.renewed += 1
            self.metrics.renewals.inc()
