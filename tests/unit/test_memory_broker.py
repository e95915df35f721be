"""The in-memory broker behaves like Kafka where the worker relies on it: groups, offsets, faults; a fake clock."""

from __future__ import annotations

import threading

import pytest

from worker.kafka_port import (
    BrokerError,
    CommitRejected,
    Partition,
    Rebalances,
    Record,
    SendRefused,
    Unparseable,
)
from worker.memory_broker import MemoryBroker

TOPIC = "frames"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def p(n: int) -> Partition:
    return Partition(TOPIC, n)


def broker_with(partitions: int = 4, per_partition: int = 3, clock: Clock | None = None) -> MemoryBroker:
    broker = MemoryBroker(clock=clock or Clock())
    broker.create_topic(TOPIC, partitions)
    for n in range(partitions):
        for i in range(per_partition):
            broker.publish(TOPIC, b"cam", f"{n}:{i}".encode(), partition=n)
    return broker


def member(broker: MemoryBroker, group: str = "g", **config: float):
    rebalances = Rebalances()
    return broker.client(**config).consumer(group, TOPIC, rebalances), rebalances


def where(polled: list) -> list[tuple[int, int]]:
    return [(r.partition, r.offset) for r in polled]


def test_two_members_split_the_partitions_and_each_reads_only_its_own():
    broker = broker_with()
    a, a_events = member(broker)
    b, b_events = member(broker)
    assert where(b.poll(1.0)) == []  # b waits for a to rejoin, as an eager rebalance does
    a_records = a.poll(1.0)
    b_records = b.poll(1.0)
    assert a.assignment() == {p(0), p(1)} and b.assignment() == {p(2), p(3)}
    assert {r.partition for r in a_records} == {0, 1} and {r.partition for r in b_records} == {2, 3}
    assert a_events.take()[1] == {p(0), p(1)} and b_events.take()[1] == {p(2), p(3)}


def test_a_join_mid_stream_hands_each_partition_over_at_its_committed_offset():
    broker = broker_with(partitions=2, per_partition=5)
    a, a_events = member(broker)
    assert len(a.poll(1.0)) == 10
    a.commit({p(0): 2})
    b, b_events = member(broker)
    a.commit({p(1): 4})  # the group is preparing a rebalance: the current generation still commits
    assert b.poll(1.0) == [] and b.assignment() == set()  # nobody holds a partition twice
    assert where(a.poll(1.0)) == [(0, 2), (0, 3), (0, 4)]  # a keeps partition 0, from its committed offset
    assert a_events.take() == ({p(0), p(1)}, {p(0)})  # eager: all revoked, then its share assigned
    assert where(b.poll(1.0)) == [(1, 4)]
    assert b_events.take() == (set(), {p(1)})
    with pytest.raises(CommitRejected):
        a.commit({p(1): 5})  # no longer a's
    assert broker.committed("g", p(1)) == 4


def test_a_member_past_max_poll_interval_is_dropped_its_commit_rejected_its_partitions_lost():
    clock = Clock()
    broker = broker_with(partitions=2, clock=clock)
    a, a_events = member(broker, max_poll_interval_s=30.0)
    b, _ = member(broker, max_poll_interval_s=30.0)
    a.poll(1.0), b.poll(1.0)
    a_events.take()
    clock.now += 20
    b.poll(1.0)
    clock.now += 20  # a: 40 s since its last poll; b: 20 s
    with pytest.raises(CommitRejected):
        a.commit({p(0): 1})
    assert broker.committed("g", p(0)) is None
    b.poll(1.0)
    assert b.assignment() == {p(0), p(1)}
    assert a.poll(1.0) == []  # reports its partitions lost, then joins again
    assert a_events.take()[0] == {p(0)} and a.assignment() == set()
    b.poll(1.0)
    a.poll(1.0)
    assert a.assignment() and b.assignment() and a.assignment().isdisjoint(b.assignment())


def test_a_member_that_leaves_hands_its_partitions_to_the_others():
    broker = broker_with(partitions=2)
    a, _ = member(broker)
    b, _ = member(broker)
    a.poll(1.0), b.poll(1.0)
    a.commit({p(0): 2})
    b.commit({p(1): 2})
    b.close()
    # both partitions from the group's commits: what was read past them is read again
    assert sorted(where(a.poll(1.0))) == [(0, 2), (1, 2)]
    assert a.assignment() == {p(0), p(1)}
    with pytest.raises(BrokerError):
        b.poll(1.0)


def test_commits_are_the_groups_and_only_for_partitions_held():
    broker = broker_with(partitions=2)
    a, _ = member(broker)
    a.poll(1.0)
    a.commit({p(0): 3, p(1): 1})
    assert a.committed(p(0)) == 3 and broker.committed("g", p(1)) == 1
    assert broker.committed("other", p(0)) is None
    a.close()
    c, _ = member(broker)
    assert where(c.poll(1.0)) == [(1, 1), (1, 2)]  # a new member reads from the group's commits


def test_pause_stops_records_resume_brings_them_seek_reads_again():
    broker = broker_with(partitions=2, per_partition=2)
    a, _ = member(broker)
    a.poll(1.0)
    a.pause([p(0)])
    broker.publish(TOPIC, None, b"x", partition=0)
    broker.publish(TOPIC, None, b"y", partition=1)
    assert where(a.poll(1.0)) == [(1, 2)]
    a.resume([p(0)])
    assert where(a.poll(1.0)) == [(0, 2)]
    a.seek(p(1), 0)
    assert where(a.poll(1.0)) == [(1, 0), (1, 1), (1, 2)]
    a.seek(p(1), 99)  # past the end: the client resets to the earliest, as the worker's consumer is told to
    assert where(a.poll(1.0)) == [(1, 0), (1, 1), (1, 2)]
    with pytest.raises(BrokerError):
        a.seek(Partition(TOPIC, 7), 0)  # not assigned


def test_lag_counts_records_behind_the_end_per_partition_held():
    broker = broker_with(partitions=2, per_partition=3)
    a, _ = member(broker)
    a.poll(1.0)
    a.seek(p(0), 1)
    broker.publish(TOPIC, None, b"x", partition=1)
    assert a.lag() == {p(0): 2, p(1): 1}


def test_max_poll_records_bounds_a_poll_and_the_partitions_take_turns():
    broker = broker_with(partitions=2, per_partition=3)
    a, _ = member(broker, max_poll_records=2)
    assert where(a.poll(1.0)) == [(0, 0), (0, 1)]
    assert where(a.poll(1.0)) == [(1, 0), (1, 1)]
    assert where(a.poll(1.0)) == [(0, 2), (1, 2)]


def test_keyed_records_keep_one_partition_and_carry_their_stamp():
    broker = MemoryBroker(clock=Clock())
    broker.create_topic(TOPIC, 8)
    sent = [broker.publish(TOPIC, b"cam-7", b"%d" % i, headers=[("h", b"v")]) for i in range(3)]
    assert len({r.partition for r in sent}) == 1 and [r.offset for r in sent] == [0, 1, 2]
    assert sent[0].timestamp_ms == 1_000_000 and sent[0].headers == [("h", b"v")]
    assert broker.records(TOPIC) == sent
    auto = [broker.publish("auto", None, b"") for _ in range(2)]
    assert [(r.partition, r.offset) for r in auto] == [(0, 0), (0, 1)]  # auto-created, one partition


def test_lookup_finds_offsets_by_time():
    broker = MemoryBroker(clock=Clock())
    for ts in (100, 200, 200, 300):
        broker.publish(TOPIC, None, b"", timestamp_ms=ts)
    a, _ = member(broker)
    lookup = a.lookup()
    assert lookup.bounds(p(0)) == (0, 4)
    assert lookup.broker_answer(p(0), 150) == 1 and lookup.broker_answer(p(0), 301) is None
    assert lookup.first_at(p(0), 3) == (3, 300) and lookup.first_at(p(0), 4) is None
    lookup.close()


def test_down_broker_polls_nothing_and_refuses_what_needs_it_until_up():
    broker = broker_with(partitions=1, per_partition=2)
    a, _ = member(broker)
    producer = broker.client().producer(max_request_bytes=1000)
    broker.faults.down()
    assert a.poll(1.0) == [] and a.connected() is False
    for call in (lambda: a.commit({p(0): 1}), lambda: a.committed(p(0)), a.lag,
                 lambda: a.lookup().bounds(p(0)), lambda: producer.send("scores", None, b"s", [])):  # fmt: skip
        with pytest.raises(BrokerError) as e:
            call()
        assert not isinstance(e.value, CommitRejected)
    broker.faults.up()
    assert a.connected() is True and len(a.poll(1.0)) == 2
    a.commit({p(0): 2})


def test_held_acks_stay_pending_until_released_then_land_in_order():
    broker = MemoryBroker()
    producer = broker.client().producer(max_request_bytes=1000)
    broker.faults.hold_acks()
    sent = [producer.send("scores", b"k", b"%d" % i, []) for i in range(3)]
    assert not any(s.done() for s in sent) and broker.records("scores") == []
    broker.faults.release_acks()
    assert all(s.done() and s.error() is None for s in sent)
    assert [r.value for r in broker.records("scores")] == [b"0", b"1", b"2"]
    assert producer.send("scores", b"k", b"3", []).done()


def test_failed_and_refused_sends():
    broker = MemoryBroker()
    producer = broker.client().producer(max_request_bytes=10)
    with pytest.raises(SendRefused):
        producer.send("scores", b"k", b"x" * 10, [])
    broker.faults.fail_next_sends(2)
    failed = [producer.send("scores", None, b"1", []) for _ in range(2)]
    assert all(s.done() and isinstance(s.error(), BrokerError) for s in failed)
    assert producer.send("scores", None, b"2", []).error() is None
    assert [r.value for r in broker.records("scores")] == [b"2"]


def test_an_injected_commit_rejection_and_poll_error_happen_once():
    broker = broker_with(partitions=1)
    a, _ = member(broker)
    a.poll(1.0)
    broker.faults.reject_next_commit()
    broker.faults.poll_raises(BrokerError("fetch failed"))
    with pytest.raises(CommitRejected):
        a.commit({p(0): 1})
    a.commit({p(0): 1})
    with pytest.raises(BrokerError, match="fetch failed"):
        a.poll(1.0)
    assert a.poll(1.0) == []
    assert broker.committed("g", p(0)) == 1


def test_an_unparseable_record_arrives_as_such_and_the_consumer_moves_past_it():
    broker = broker_with(partitions=1, per_partition=3)
    broker.faults.unparseable(TOPIC, 0, 1)
    a, _ = member(broker)
    polled = a.poll(1.0)
    assert [type(r) for r in polled] == [Record, Unparseable, Record]
    assert polled[1].where == p(0) and polled[1].offset == 1 and polled[1].error
    assert a.lag() == {p(0): 0}


def test_stalled_fetches_leave_lag_though_connected():
    broker = broker_with(partitions=1, per_partition=3)
    a, _ = member(broker)
    broker.faults.stall_fetches()
    assert a.poll(1.0) == [] and a.connected() and a.lag() == {p(0): 3}
    broker.faults.resume_fetches()
    assert len(a.poll(1.0)) == 3


def test_sends_from_several_threads_each_get_their_own_offset():
    broker = MemoryBroker()
    producer = broker.client().producer(max_request_bytes=1000)
    threads = [threading.Thread(target=lambda: [producer.send("scores", None, b"", []) for _ in range(200)])
               for _ in range(4)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.offset for r in broker.records("scores")) == list(range(800))
