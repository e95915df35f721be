"""Records the Kafka client has handed over and the loop has not taken yet.

kafka-python sends its next fetch for a partition only once the records of the
last one are all taken, and a broker holds a fetch for up to
``fetch_max_wait_ms`` while a partition in it has nothing new. So a loop that
takes fewer records than a fetch brought (a batch of 8, or the 7 a batch of 32
still has room for) lets the client fetch for the idle partitions alone, and
waits that long for each fetch: with one idle partition of two, a worker with
``--max-batch 8`` read 51 frames/s instead of about 1,700. The loop therefore
takes everything the client holds at each poll and keeps the rest here, so
every fetch asks for every partition again. What this holds is not yet
consumed: its offsets are not opened, so no commit passes them, and a
partition revoked or rewound drops its records here as in the batcher.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Any, Iterable

from kafka import TopicPartition
from kafka.errors import CorruptRecordError, InvalidRecordError

from worker.poison import skip_unparseable

DRAIN_RECORDS = 100_000  # max_records of a poll: more than one fetch (fetch_max_bytes) ever holds
# What poll() raises for a record it cannot parse (connection errors are KafkaErrors too, and are not these).
UNPARSEABLE = (CorruptRecordError, InvalidRecordError, UnicodeError, ValueError, IndexError, struct.error)


class ReadAhead:
    def __init__(self) -> None:
        self._records: deque[Any] = deque()

    def __len__(self) -> int:
        return len(self._records)

    def fill(self, records: Iterable[Any]) -> None:
        self._records.extend(records)

    def poll(self, client: Any, room: int, wait_s: float) -> list[Any]:
        """Up to ``room`` records: those held here first; ``client`` is asked only when they are fewer (then
        without waiting, else up to ``wait_s``), and gives everything it holds; the rest stays here."""
        if len(self) >= room:
            return self.take(room)
        if len(self):
            wait_s = 0.0  # some are here: take what else the client holds, without waiting
        try:
            batches = client.poll(timeout_ms=max(1, int(wait_s * 1000)), max_records=DRAIN_RECORDS)
        except UNPARSEABLE as e:
            bad = skip_unparseable(client, e)
            if bad is None:
                raise
            self.fill([bad])  # in its place, after the records read ahead of it: offsets open in order
            return self.take(room)
        self.fill(msg for messages in batches.values() for msg in messages)
        return self.take(room)

    def take(self, n: int) -> list[Any]:
        """Up to ``n`` records, oldest first."""
        return [self._records.popleft() for _ in range(min(n, len(self._records)))]

    def take_all(self) -> list[Any]:
        records, self._records = list(self._records), deque()
        return records

    def drop(self, partitions: set[TopicPartition]) -> int:
        """Forget the records of ``partitions`` (revoked, or rewound to their committed offset); how many."""
        kept = deque(r for r in self._records if TopicPartition(r.topic, r.partition) not in partitions)
        dropped, self._records = len(self._records) - len(kept), kept
        return dropped
