"""One camera's frames read back from the frames topic: the Kafka edge of ``index fit --from-topic``.

Only the partition the camera's key maps to is read. The producer keys every
frame by its source id and leaves the partition to kafka-python's
DefaultPartitioner (murmur2 of the key, modulo the partition count), so that
one partition holds all of the camera's frames; frames of other cameras that
share it are skipped by key.

Reading is two passes over that partition. The first notes the offset and
timestamp of each of the camera's frames (values are fetched by Kafka but not
kept); the caller picks a sample; the second keeps only the picked frames'
bytes. A day of frames need not fit in memory.

``--since``: the start offset comes from ``offsets_for_times`` and every
message's own timestamp is checked as well, since a broker may answer at batch
granularity (Tansu answers with the first offset of the partition).
``--last N``: the partition is scanned backwards in growing steps until N of
the camera's frames are found or its beginning is reached.

Frame origins in index metadata are ``kafka://TOPIC/PARTITION/OFFSET``
(``stream_origin``); ``explain`` fetches them back with ``review.frames``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

from wire.errors import FramewatchError
from wire.settings import KafkaSettings

ORIGIN_SCHEME = "kafka://"


class TopicReadError(FramewatchError):
    """The topic cannot be read as asked (unknown topic, no frames of the camera in the period)."""


def partition_for(source: str, partitions: int) -> int:
    """Which of ``partitions`` (by rank) kafka-python's DefaultPartitioner, the producer's, sends ``source`` to."""
    from kafka.partitioner.default import murmur2

    return (murmur2(source.encode()) & 0x7FFFFFFF) % partitions


def stream_origin(topic: str, partition: int, offset: int) -> str:
    return f"{ORIGIN_SCHEME}{topic}/{partition}/{offset}"


def parse_stream_origin(origin: str) -> Optional[tuple[str, int, int]]:
    """(topic, partition, offset) of a ``kafka://`` origin; None for a file path or anything else."""
    if not origin.startswith(ORIGIN_SCHEME):
        return None
    parts = origin[len(ORIGIN_SCHEME) :].rsplit("/", 2)
    if len(parts) != 3:
        return None
    topic, partition, offset = parts
    try:
        return topic, int(partition), int(offset)
    except ValueError:
        return None


@dataclass(frozen=True)
class Period:
    """Which of the camera's frames: those of the last ``since_s`` seconds, or the ``last`` N."""

    since_s: Optional[float] = None
    last: Optional[int] = None

    def describe(self) -> str:
        return f"since {self.since_s:g}s" if self.since_s is not None else f"last {self.last}"


@dataclass(frozen=True)
class Located:
    """Where one of the camera's frames is: its offset and Kafka timestamp (ms)."""

    offset: int
    timestamp_ms: int


@dataclass(frozen=True)
class RawFrame:
    """A picked frame's message, as read in the second pass."""

    offset: int
    timestamp_ms: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Sequence[tuple[str, Optional[bytes]]]


class CameraPartition:
    """A consumer (no group, nothing committed) on the one partition of ``topic`` that holds ``source``."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        source: str,
        clock: Callable[[], float] = time.time,
        poll_timeout_s: float = 30.0,
        partition: Optional[int] = None,
    ) -> None:
        """``partition``: the one to read (where a consumer saw the camera's frames); default: the one the
        producer's partitioner maps ``source`` to."""
        from kafka import KafkaConsumer, TopicPartition

        self.topic, self.source, self.clock = topic, source, clock
        self.key = source.encode()
        self.poll_timeout_s = poll_timeout_s
        self._consumer = KafkaConsumer(enable_auto_commit=False, max_partition_fetch_bytes=settings.max_message_bytes,
                                       **settings.client_kwargs())  # fmt: skip
        try:
            partitions = self._consumer.partitions_for_topic(topic)
            if not partitions:
                raise TopicReadError(f"topic {topic!r} does not exist or has no partitions")
            if partition is not None and partition not in partitions:
                raise TopicReadError(f"topic {topic!r} has no partition {partition}")
            if partition is None:
                partition = sorted(partitions)[partition_for(source, len(partitions))]
            self.partition = partition
            self.tp = TopicPartition(topic, self.partition)
            self._consumer.assign([self.tp])
            self.begin = self._consumer.beginning_offsets([self.tp])[self.tp]
            self.end = self._consumer.end_offsets([self.tp])[self.tp]  # the snapshot read: later frames wait
        except BaseException:
            self._consumer.close()
            raise

    # -- pass 1: where the camera's frames are -------------------------------------------
    def locate(self, period: Period) -> list[Located]:
        """The camera's frames in ``period``, oldest first."""
        if period.since_s is not None:
            cutoff_ms = int((self.clock() - period.since_s) * 1000)
            found = self._offsets_for_time(cutoff_ms)
            if found is None:
                return []
            return [f for f in self._scan(found, self.end, to_end=True) if f.timestamp_ms >= cutoff_ms]
        assert period.last is not None
        return self._last(period.last)

    def _offsets_for_time(self, cutoff_ms: int) -> Optional[int]:
        answer = self._consumer.offsets_for_times({self.tp: cutoff_ms}).get(self.tp)
        if answer is None:  # no message at or after the cutoff
            return None
        return max(self.begin, int(answer.offset))

    def _last(self, n: int) -> list[Located]:
        found: list[Located] = []
        stop, step = self.end, max(4 * n, 1000)
        while stop > self.begin and len(found) < n:
            start = max(self.begin, stop - step)
            found = self._scan(start, stop, to_end=stop == self.end) + found
            stop, step = start, step * 2
        return found[-n:]

    def _scan(self, start: int, stop: int, to_end: bool = False) -> list[Located]:
        return [
            Located(m.offset, int(m.timestamp))
            for m in self._messages(start, stop, to_end)
            if m.key == self.key
        ]

    # -- pass 2: the picked frames' bytes ------------------------------------------------
    def fetch(self, offsets: Sequence[int], on_each: Callable[[], None] = lambda: None) -> Iterator[RawFrame]:
        """The messages at ``offsets`` (ascending), read in one sweep from the first to the last."""
        wanted = set(offsets)
        if not wanted:
            return
        for m in self._messages(min(wanted), max(wanted) + 1):
            if m.offset in wanted:
                on_each()
                yield RawFrame(m.offset, int(m.timestamp), m.key, m.value, list(m.headers or ()))

    def _messages(self, start: int, stop: int, to_end: bool = False) -> Iterator[Any]:
        """Every message with start <= offset < stop; with ``to_end`` (``stop`` is the end offset read at the
        start) also the rest of the last fetch: Tansu reports the end of a partition as one past the first
        offset of its last record batch, so the batch's later records lie beyond it.

        :raises TopicReadError: the broker stops answering.
        """
        if start >= stop:
            return
        self._consumer.seek(self.tp, start)
        deadline = time.monotonic() + self.poll_timeout_s
        while self._consumer.position(self.tp) < stop:
            batch = self._consumer.poll(timeout_ms=500).get(self.tp, [])
            if batch:
                deadline = time.monotonic() + self.poll_timeout_s
            elif time.monotonic() > deadline:
                raise TopicReadError(f"{self.topic}/{self.partition}: no data for {self.poll_timeout_s:.0f}s "
                                     f"at offset {self._consumer.position(self.tp)} (reading up to {stop})")  # fmt: skip
            for m in batch:
                if m.offset >= stop and not to_end:
                    return
                yield m

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> "CameraPartition":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
