"""Fetching from Kafka by coordinates: a frame by (topic, partition, offset); score records by frame id or by
source and capture time (an incident's frames).

A frame is read as bytes only: its headers are never trusted (a content-type
header once carried CR/LF and a script into the review page's responses). Its
type is what its first bytes say (``sniff``), and a fetcher made for one frames
topic refuses coordinates that point anywhere else (a forged score record could
otherwise serve, and mark "normal", any message the page's credentials can read).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Optional

from kafka import KafkaConsumer, TopicPartition

from wire.errors import FramewatchError, ScoreDecodeError
from wire.records import ScoreRecord
from wire.settings import KafkaSettings

MAGIC = ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"))


def sniff(data: bytes) -> Optional[str]:
    """The image type the bytes themselves declare (JPEG or PNG, the frames contract), else None."""
    for magic, ctype in MAGIC:
        if data.startswith(magic):
            return ctype
    return None


class FrameUnavailable(FramewatchError):
    """The frame is no longer on its topic (retention) or the coordinates are wrong."""


@dataclass(frozen=True)
class StoredFrame:
    """A frame's bytes and the type sniffed from them (never its content-type header)."""

    image: bytes
    content_type: str


class FrameFetcher:
    """One consumer (no group) that seeks to a frame's offset; recent frames are kept in a small LRU.

    With ``only_topic`` set, coordinates on any other topic are refused.
    """

    def __init__(
        self, settings: KafkaSettings, cache_size: int = 256, timeout_s: float = 10.0, only_topic: str = ""
    ) -> None:
        self.settings, self.cache_size, self.timeout_s = settings, cache_size, timeout_s
        self.only_topic = only_topic
        self._consumer: Optional[KafkaConsumer] = None
        self._cache: OrderedDict[tuple[str, int, int], StoredFrame] = OrderedDict()
        self._lock = threading.Lock()

    def fetch(self, topic: str, partition: int, offset: int) -> StoredFrame:
        if self.only_topic and topic != self.only_topic:
            raise FrameUnavailable(f"{topic!r} is not the frames topic {self.only_topic!r}")
        key = (topic, partition, offset)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            frame = self._read(topic, partition, offset)
            self._cache[key] = frame
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return frame

    def _read(self, topic: str, partition: int, offset: int) -> StoredFrame:
        if (
            not topic
            or not isinstance(partition, int)
            or not isinstance(offset, int)
            or partition < 0
            or offset < 0
        ):
            raise FrameUnavailable(f"no frame coordinates ({topic!r}, {partition}, {offset})")
        if self._consumer is None:
            self._consumer = KafkaConsumer(enable_auto_commit=False, max_partition_fetch_bytes=self.settings.max_message_bytes,
                                           **self.settings.client_kwargs())  # fmt: skip
        tp = TopicPartition(topic, partition)
        self._consumer.assign([tp])
        self._consumer.seek(tp, offset)
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            for msg in self._consumer.poll(timeout_ms=300, max_records=1).get(tp, []):
                if msg.offset != offset:
                    raise FrameUnavailable(
                        f"{topic}/{partition}/{offset} is gone (retention); next is {msg.offset}"
                    )
                ctype = sniff(msg.value or b"")
                if ctype is None:
                    raise FrameUnavailable(f"{topic}/{partition}/{offset} is not a JPEG or PNG image")
                return StoredFrame(bytes(msg.value), ctype)
        raise FrameUnavailable(f"{topic}/{partition}/{offset} could not be read within {self.timeout_s:.0f}s")

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None


def find_scores(
    settings: KafkaSettings, topic: str, frame_ids: Iterable[str], timeout_s: float = 60.0
) -> dict[str, ScoreRecord]:
    """The first score record of each wanted frame id, reading ``topic`` from the beginning to its current end."""
    wanted = set(frame_ids)
    found: dict[str, ScoreRecord] = {}
    consumer = KafkaConsumer(enable_auto_commit=False, **settings.client_kwargs())
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        deadline = time.monotonic() + timeout_s
        while wanted - set(found) and any(consumer.position(tp) < ends[tp] for tp in tps):
            if time.monotonic() > deadline:
                break
            for msgs in consumer.poll(timeout_ms=300).values():
                for msg in msgs:
                    try:
                        record = ScoreRecord.decode(msg.value)
                    except ScoreDecodeError:
                        continue
                    if record.frame_id in wanted:
                        found.setdefault(record.frame_id, record)
    finally:
        consumer.close()
    return found


def scores_between(
    settings: KafkaSettings, topic: str, source: str, start: float, end: Optional[float],
    timeout_s: float = 60.0, limit: int = 10_000, slack_s: float = 600.0,
) -> list[ScoreRecord]:  # fmt: skip
    """The anomalous score records of ``source`` captured in [start, end] (``end`` None: up to now), at most
    ``limit``, read from ``topic`` by time: from the first record published at ``start`` - ``slack_s`` (a
    record is published after its frame is captured) to the current end, each partition stopping once its
    records are published ``slack_s`` after ``end``. Undecodable records are skipped.
    """
    found: list[ScoreRecord] = []
    consumer = KafkaConsumer(enable_auto_commit=False, **settings.client_kwargs())
    try:
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        consumer.assign(tps)
        ends = consumer.end_offsets(tps)
        hits = consumer.offsets_for_times({tp: max(0, int((start - slack_s) * 1000)) for tp in tps})
        for tp in tps:
            hit = hits.get(tp)
            consumer.seek(tp, hit.offset if hit is not None else ends[tp])
        live = {tp for tp in tps if consumer.position(tp) < ends[tp]}
        deadline = time.monotonic() + timeout_s
        while live and len(found) < limit and time.monotonic() < deadline:
            for tp, msgs in consumer.poll(timeout_ms=300).items():
                for msg in msgs:
                    if end is not None and msg.timestamp > (end + slack_s) * 1000:
                        live.discard(tp)
                        break
                    try:
                        record = ScoreRecord.decode(msg.value)
                    except ScoreDecodeError:
                        continue
                    if (record.source == source and record.is_anomaly is True and start <= record.capture_time
                            and (end is None or record.capture_time <= end)):  # fmt: skip
                        found.append(record)
                if tp in live and consumer.position(tp) >= ends[tp]:
                    live.discard(tp)
                if tp not in live:
                    consumer.pause(tp)
        return found[:limit]
    finally:
        consumer.close()
