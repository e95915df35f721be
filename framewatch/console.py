"""Following the score topic and printing score records for people."""

from __future__ import annotations

import threading
from typing import IO, Iterator

from kafka import KafkaConsumer, TopicPartition

from wire.errors import ScoreDecodeError
from wire.records import ScoreRecord
from wire.settings import KafkaSettings


def follow_scores(
    settings: KafkaSettings, topic: str, stop: threading.Event, from_beginning: bool = False
) -> Iterator[ScoreRecord]:
    """Yield score records until ``stop`` is set (reads every partition, no consumer group)."""
    consumer = KafkaConsumer(enable_auto_commit=False, **settings.client_kwargs())
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        while not stop.is_set():
            for messages in consumer.poll(timeout_ms=200).values():
                for msg in messages:
                    try:
                        yield ScoreRecord.decode(msg.value)
                    except ScoreDecodeError:
                        continue
    finally:
        consumer.close()


class ScorePrinter:
    """One line per frame; anomalies marked."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out

    def print(self, r: ScoreRecord) -> None:
        norm = f"{r.normalized_score:5.2f}x" if r.normalized_score is not None else "   -  "
        mark = "  << ANOMALY" if r.is_anomaly else ""
        self.out.write(
            f"{r.source:<8} #{r.sequence:<4} {r.origin[-28:]:<28} score {r.score:10.4g} {norm} "
            f"{r.index_name}@{r.index_version} {r.latency_s * 1000:7.0f} ms{mark}\n"
        )
        self.out.flush()
