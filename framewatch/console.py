"""Following the score topic, and printing score records for people (a table) or programs (JSON lines)."""

from __future__ import annotations

import logging
import threading
import time
from typing import IO, Iterator

from wire.errors import FramewatchError, ScoreDecodeError
from wire.records import ScoreRecord
from wire.settings import KafkaSettings

log = logging.getLogger("framewatch.watch")


def follow_messages(
    settings: KafkaSettings, topic: str, stop: threading.Event, from_beginning: bool = False
) -> Iterator[tuple[ScoreRecord, bytes]]:
    """Yield (record, raw JSON value) until ``stop`` is set; reads every partition, no consumer group.

    Waits (saying so once) while the topic does not exist yet.

    :raises FramewatchError: no broker answers at ``settings``.
    """
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    try:
        consumer = KafkaConsumer(enable_auto_commit=False, **settings.client_kwargs())
    except KafkaError as e:
        raise FramewatchError(f"no Kafka broker at {settings.redacted()}: {e}") from None
    try:
        partitions = _wait_for_partitions(consumer, topic, stop)
        if not partitions:
            return
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*tps)
        while not stop.is_set():
            for messages in consumer.poll(timeout_ms=200).values():
                for msg in messages:
                    try:
                        yield ScoreRecord.decode(msg.value), msg.value
                    except ScoreDecodeError as e:
                        log.warning(
                            "skipping a record at %s/%d@%d: %s", msg.topic, msg.partition, msg.offset, e
                        )
    finally:
        quiet = logging.getLogger("kafka")
        level, quiet.level = quiet.level, logging.CRITICAL  # requests cancelled by closing are not errors
        try:
            consumer.close()
        finally:
            quiet.setLevel(level)


def follow_scores(
    settings: KafkaSettings, topic: str, stop: threading.Event, from_beginning: bool = False
) -> Iterator[ScoreRecord]:
    """Yield score records until ``stop`` is set (reads every partition, no consumer group)."""
    for record, _raw in follow_messages(settings, topic, stop, from_beginning):
        yield record


def _wait_for_partitions(consumer: object, topic: str, stop: threading.Event) -> set[int]:
    said = False
    while not stop.is_set():
        partitions = consumer.partitions_for_topic(topic)  # type: ignore[attr-defined]
        if partitions:
            return set(partitions)
        if not said:
            log.info("topic %r does not exist yet; waiting for it (Ctrl-C to stop)", topic)
            said = True
        stop.wait(1.0)
        consumer.topics()  # type: ignore[attr-defined]  # refresh the metadata
    return set()


def readable(x: float | None) -> str:
    """A number for people: 31,810 / 118.6 / 14.72 / 0.0031, never 3.181e+04."""
    if x is None:
        return "-"
    a = abs(x)
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.1f}"
    if a >= 0.01 or a == 0:
        return f"{x:.2f}"
    return f"{x:.2g}"


def _clock(t: float) -> str:
    """Local time with milliseconds; a time the platform cannot show is printed as the number it is."""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int((t % 1) * 1000):03d}"
    except (OverflowError, OSError, ValueError):
        return f"{t:.6g}"


class ScorePrinter:
    """One line per frame under a header row; anomalies marked. Source names are never cut."""

    HEADER = (
        f"{'CAPTURED (local time)':<23}  {'SOURCE':<12} {'SEQ':>6} {'SCORE':>9} {'/THR':>7} {'WINDOW':>7}  "
        f"{'INDEX':<14} {'LATENCY':>9}  ORIGIN"
    )

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self._header_done = False

    def header(self) -> None:
        if not self._header_done:
            self.out.write(self.HEADER + "\n")
            self._header_done = True

    def print(self, r: ScoreRecord) -> None:
        self.header()
        norm = f"{r.normalized_score:.2f}x" if r.normalized_score is not None else "-"
        window = (
            f"{r.window_score / r.threshold:.2f}x"
            if r.window_score is not None and r.threshold
            else readable(r.window_score)
        )
        mark = "  << ANOMALY" if r.is_anomaly else ""
        if r.is_anomaly and r.hotspot:
            mark += " at x {}-{}, y {}-{}".format(*(r.hotspot[i] for i in (0, 2, 1, 3)))
        self.out.write(
            f"{_clock(r.capture_time):<23}  {r.source:<12} {r.sequence:>6} {readable(r.score):>9} {norm:>7} {window:>7}  "
            f"{r.index_name + '@' + str(r.index_version):<14} {readable(r.latency_s * 1000) + ' ms':>9}  {r.origin}{mark}\n"
        )
        self.out.flush()


class JsonPrinter:
    """The records as received, one JSON object per line (fields this version does not know included)."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def header(self) -> None:
        pass

    def print_raw(self, raw: bytes) -> None:
        self.out.write(raw.decode("utf-8") + "\n")
        self.out.flush()
