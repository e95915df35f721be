"""The loop takes everything the Kafka client holds at each poll, so the client's next fetch asks for every partition.

kafka-python fetches a partition again only once its buffered records are all taken, and a broker holds a fetch
for ``fetch_max_wait_ms`` while the partitions in it have nothing new. The fake client below behaves so: a loop
that took fewer records than a fetch brought made it fetch for the idle partition alone, and wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from kafka import TopicPartition

from worker.poison import Unparseable
from worker.read_ahead import ReadAhead

BUSY, IDLE = TopicPartition("frames", 1), TopicPartition("frames", 0)


@dataclass(frozen=True)
class Msg:
    topic: str
    partition: int
    offset: int


class FetchingClient:
    """kafka-python's fetch rule: a fetch goes out only when nothing is buffered; one holding only an idle
    partition waits out ``fetch_max_wait_ms`` (here: ``stalls`` polls that return nothing)."""

    def __init__(self, per_fetch: int, total: int, stall_polls: int = 5) -> None:
        self.per_fetch, self.total, self.stall_polls = per_fetch, total, stall_polls
        self.next_offset, self.buffered, self.stalled, self.stalls = 0, [], 0, 0
        self.idle_only_fetches = 0

    def poll(self, timeout_ms: int = 0, max_records: int = 500) -> dict[TopicPartition, list[Msg]]:
        if self.stalled:
            self.stalled -= 1
            self.stalls += 1
            return {}
        if not self.buffered and self.next_offset < self.total:  # a fetch for both partitions: data comes back
            n = min(self.per_fetch, self.total - self.next_offset)
            self.buffered = [Msg("frames", 1, self.next_offset + i) for i in range(n)]
            self.next_offset += n
        taken, self.buffered = self.buffered[:max_records], self.buffered[max_records:]
        if self.buffered:  # records left: the next fetch holds the idle partition alone, and waits
            self.idle_only_fetches += 1
            self.stalled = self.stall_polls
        return {BUSY: taken} if taken else {}


def test_small_batches_take_what_the_client_holds_so_no_fetch_waits_on_an_idle_partition():
    ahead, client = ReadAhead(), FetchingClient(per_fetch=25, total=200)
    offsets: list[int] = []
    for _ in range(400):
        got = ahead.poll(client, room=8, wait_s=0.5)  # a batch of 8, empty: room for 8
        assert len(got) <= 8  # never more than the batch has room for
        offsets += [m.offset for m in got]
        if len(offsets) == 200:
            break
    assert offsets == list(range(200))  # every record, in order, none twice
    assert client.idle_only_fetches == 0 and client.stalls == 0


def test_records_read_ahead_of_a_revoked_or_rewound_partition_are_dropped_and_an_unparseable_one_keeps_its_place():
    ahead = ReadAhead()
    ahead.fill([Msg("frames", 1, 5), Msg("frames", 0, 9), Unparseable("frames", 1, 6, "bad"), Msg("frames", 1, 7)])
    assert ahead.drop({IDLE}) == 1
    assert [(m.partition, m.offset) for m in ahead.take(2)] == [(1, 5), (1, 6)]  # the unparseable one in its place
    assert [m.offset for m in ahead.take_all()] == [7] and len(ahead) == 0


