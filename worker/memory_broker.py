"""An in-memory Kafka for tests: ``MemoryBroker`` and its ``KafkaClient`` (worker/kafka_port.py).

Deterministic, single-process, thread-safe (one lock), and it never sleeps:
``poll`` returns at once whatever ``wait_s`` says, and time moves only with
the clock passed in, so a test of the worker runs in milliseconds.

What it models, as far as the worker relies on it:

- topics of partitions, each a log of records with offsets from 0 and
  timestamps (the wall clock's, or the publisher's); a topic is created on
  first use with one partition, as Kafka's auto-create does, unless
  ``create_topic`` made it first; a keyed record goes to partition
  ``crc32(key) % partitions`` (Kafka uses murmur2: same rule, other numbers),
  one without a key round-robin;
- consumer groups, eager protocol: a member joins when its consumer is made
  and leaves on ``close()``; each change starts a rebalance; every member
  reports all its partitions revoked at its next ``poll()`` (the group
  accepts its commits until then, as Kafka does while preparing a
  rebalance); once all have, the partitions are dealt out (range assignor,
  members in join order) and each member reports its share assigned at its
  next poll, positioned at the group's committed offset, or the earliest;
- ``max_poll_interval_s``: a member that has not polled for longer (on the
  broker's clock) is dropped from the group: its commits are rejected and its
  next poll reports its partitions lost (revoked), then it joins again;
- commits only from a member of the current generation, for partitions it
  holds (Kafka checks the generation, not the partitions: stricter here, so
  a test sees the commit that would clobber a new owner's progress);
- a producer whose sends the broker acknowledges at once;
- faults, switched at any time through ``broker.faults`` (``Faults``).

What it does not model: replication, leaders and in-sync replicas,
retention and compaction (logs start at 0 and never shrink), transactions
and idempotence, batching, compression and quotas, heartbeats and session
timeouts (only max.poll.interval drops a member), cooperative rebalancing,
subscriptions to several topics, and waiting of any kind.
"""

from __future__ import annotations

import threading
import time
import zlib
from typing import Callable, Iterable, Mapping, Optional

from worker.kafka_port import (
    BrokerError,
    CommitRejected,
    Headers,
    Partition,
    Polled,
    Rebalances,
    Record,
    SendRefused,
    Unparseable,
)

Clock = Callable[[], float]


class Faults:
    """What goes wrong, switched on and off by a test at any time."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker
        self.is_down = False
        self.acks_held = False
        self.fetches_stalled = False
        self._send_failures: list[BaseException] = []
        self._commit_rejections: list[BaseException] = []
        self._poll_errors: list[BaseException] = []
        self._unparseable: dict[tuple[str, int, int], str] = {}

    def down(self) -> None:
        """No broker reachable: polls return nothing, ``connected()`` is False, commits, committed offsets,
        lag and lookups raise ``BrokerError``, sends raise it (as kafka-python does once its metadata wait ends)."""
        with self._broker._lock:
            self.is_down = True

    def up(self) -> None:
        with self._broker._lock:
            self.is_down = False

    def hold_acks(self) -> None:
        """Sends from now on stay pending (``done()`` False), their records not yet in the log."""
        with self._broker._lock:
            self.acks_held = True

    def release_acks(self) -> None:
        """Append and acknowledge the sends held, in the order they were sent; acknowledge at once again."""
        with self._broker._lock:
            self.acks_held = False
            held, self._broker._held = self._broker._held, []
            for sent, topic, key, value, headers in held:
                sent._settle(record=self._broker._append(topic, key, value, headers))

    def fail_next_sends(self, n: int, error: Optional[BaseException] = None) -> None:
        """The next ``n`` sends fail with ``error`` (a ``SendRefused`` for good; default a ``BrokerError``)."""
        with self._broker._lock:
            self._send_failures += [error or BrokerError("not acknowledged (injected)")] * n

    def reject_next_commit(self) -> None:
        """The group rejects the next commit, as after a rebalance the member has not seen yet."""
        with self._broker._lock:
            self._commit_rejections.append(CommitRejected("the group rejected the commit (injected)"))

    def poll_raises(self, error: BaseException) -> None:
        """The next ``poll()`` raises ``error`` (once), before it does anything else."""
        with self._broker._lock:
            self._poll_errors.append(error)

    def stall_fetches(self) -> None:
        """Polls return nothing though records wait and the broker is connected (a wedged fetcher)."""
        with self._broker._lock:
            self.fetches_stalled = True

    def resume_fetches(self) -> None:
        with self._broker._lock:
            self.fetches_stalled = False

    def unparseable(
        self, topic: str, partition: int, offset: int, error: str = "corrupt record (injected)"
    ) -> None:
        """The record at ``offset`` cannot be parsed: every read of it yields ``Unparseable`` and moves past it."""
        with self._broker._lock:
            self._unparseable[(topic, partition, offset)] = error

    def _take(self, queue: list[BaseException]) -> Optional[BaseException]:
        return queue.pop(0) if queue else None


class _Group:
    """One consumer group, on one topic: its members, generation, who holds what, committed offsets."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.members: list[str] = []  # in join order: the assignor's order
        self.last_poll: dict[str, float] = {}
        self.max_poll_interval_s: dict[str, float] = {}
        self.generation = 0
        self.rebalancing = False
        self.rejoined: set[str] = set()  # members that have given up their partitions in this rebalance
        self.assignment: dict[str, set[Partition]] = {}  # of the current generation
        self.committed: dict[Partition, int] = {}


def range_assignment(parts: list[Partition], members: list[str]) -> dict[str, set[Partition]]:
    """Kafka's range assignor for one topic: contiguous runs, the first members one more when it does not divide."""
    share, extra = divmod(len(parts), max(1, len(members)))
    out, start = {}, 0
    for i, member in enumerate(members):
        end = start + share + (1 if i < extra else 0)
        out[member] = set(parts[start:end])
        start = end
    return out


class MemoryBroker:
    """Topics, consumer groups and committed offsets in memory; ``client()`` is the worker's door to them."""

    def __init__(self, clock: Clock = time.monotonic, wall_clock: Optional[Clock] = None) -> None:
        """``clock`` drives max.poll.interval; ``wall_clock`` (default ``clock``) stamps records."""
        self.clock, self.wall_clock = clock, wall_clock or clock
        self.faults = Faults(self)
        self._lock = threading.RLock()
        self._logs: dict[str, list[list[Record]]] = {}
        self._round_robin: dict[str, int] = {}
        self._groups: dict[str, _Group] = {}
        self._held: list[tuple[_Sent, str, Optional[bytes], Optional[bytes], Headers]] = []
        self._members = 0

    # -- what a test does -----------------------------------------------------------------

    def create_topic(self, name: str, partitions: int) -> None:
        with self._lock:
            if name in self._logs:
                raise ValueError(f"topic {name} exists")
            self._logs[name] = [[] for _ in range(partitions)]

    def publish(self, topic: str, key: Optional[bytes], value: Optional[bytes], headers: Iterable[tuple[str, bytes]] = (),
                partition: Optional[int] = None, timestamp_ms: Optional[int] = None) -> Record:  # fmt: skip
        with self._lock:
            return self._append(topic, key, value, list(headers), partition, timestamp_ms)

    def records(self, topic: str) -> list[Record]:
        """Every record of ``topic``, partition by partition, in offset order."""
        with self._lock:
            return [r for log in self._logs.get(topic, []) for r in log]

    def committed(self, group: str, part: Partition) -> Optional[int]:
        with self._lock:
            g = self._groups.get(group)
            return None if g is None else g.committed.get(part)

    def client(self, name: str = "memory", max_poll_records: int = 100_000,
               max_poll_interval_s: float = 300.0) -> MemoryClient:  # fmt: skip
        return MemoryClient(self, name, max_poll_records, max_poll_interval_s)

    # -- the log ----------------------------------------------------------------------------

    def _partitions(self, topic: str) -> list[list[Record]]:
        if topic not in self._logs:
            self._logs[topic] = [[]]
        return self._logs[topic]

    def _append(self, topic: str, key: Optional[bytes], value: Optional[bytes], headers: Headers,
                partition: Optional[int] = None, timestamp_ms: Optional[int] = None) -> Record:  # fmt: skip
        logs = self._partitions(topic)
        if partition is None and key is not None:
            partition = zlib.crc32(key) % len(logs)
        elif partition is None:
            partition = self._round_robin.get(topic, 0) % len(logs)
            self._round_robin[topic] = partition + 1
        if not 0 <= partition < len(logs):
            raise ValueError(f"topic {topic} has no partition {partition}")
        log = logs[partition]
        ts = timestamp_ms if timestamp_ms is not None else int(self.wall_clock() * 1000)
        record = Record(topic, partition, len(log), key, value, list(headers), ts)
        log.append(record)
        return record

    def _check_up(self) -> None:
        if self.faults.is_down:
            raise BrokerError("no broker reachable (injected)")

    # -- the group coordinator ----------------------------------------------------------------

    def _group(self, group: str, topic: str) -> _Group:
        g = self._groups.setdefault(group, _Group(topic))
        if g.topic != topic:
            raise ValueError(f"group {group} consumes {g.topic}; one topic per group here")
        self._partitions(topic)
        return g

    def _join(self, g: _Group, max_poll_interval_s: float, name: str) -> str:
        self._members += 1
        member = f"{name}-{self._members}"
        g.members.append(member)
        g.last_poll[member], g.max_poll_interval_s[member] = self.clock(), max_poll_interval_s
        self._rebalance(g, rejoined=member)
        return member

    def _leave(self, g: _Group, member: str) -> None:
        if member in g.members:
            g.members.remove(member)
            g.assignment.pop(member, None)
            g.rejoined.discard(member)
            self._rebalance(g)

    def _rebalance(self, g: _Group, rejoined: Optional[str] = None) -> None:
        if not g.rebalancing:
            g.rebalancing, g.rejoined = True, set()
        if rejoined is not None:
            g.rejoined.add(rejoined)
        if set(g.members) <= g.rejoined:
            parts = [Partition(g.topic, p) for p in range(len(self._partitions(g.topic)))]
            g.generation += 1
            g.rebalancing, g.rejoined = False, set()
            g.assignment = range_assignment(parts, g.members)

    def _expire(self, g: _Group) -> None:
        """Drop the members that have not polled within their max.poll.interval."""
        now = self.clock()
        for member in list(g.members):
            if now - g.last_poll[member] > g.max_poll_interval_s[member]:
                self._leave(g, member)


class MemoryClient:
    """The ``KafkaClient`` of a ``MemoryBroker``, configured for one worker."""

    def __init__(
        self, broker: MemoryBroker, name: str, max_poll_records: int, max_poll_interval_s: float
    ) -> None:
        self.broker, self.name = broker, name
        self.max_poll_records, self.max_poll_interval_s = max_poll_records, max_poll_interval_s

    def consumer(self, group: str, topic: str, rebalances: Rebalances) -> MemoryConsumer:
        """:raises BrokerError: the broker is down."""
        return MemoryConsumer(self, group, topic, rebalances)

    def producer(self, max_request_bytes: int) -> MemoryProducer:
        """:raises BrokerError: the broker is down."""
        with self.broker._lock:
            self.broker._check_up()
        return MemoryProducer(self.broker, max_request_bytes)


class MemoryConsumer:
    """A group member (the port's ``Consumer``); what it holds changes only inside ``poll()``, as in Kafka."""

    def __init__(self, client: MemoryClient, group: str, topic: str, rebalances: Rebalances) -> None:
        self._broker, self._client, self._rebalances = client.broker, client, rebalances
        self._owned: set[Partition] = set()
        self._positions: dict[Partition, int] = {}
        self._paused: set[Partition] = set()
        self._generation: Optional[int] = None  # whose assignment it holds
        self._polls = 0
        self._closed = False
        with self._broker._lock:
            self._broker._check_up()
            self._group = self._broker._group(group, topic)
            self._member = self._broker._join(self._group, client.max_poll_interval_s, client.name)

    def poll(self, wait_s: float) -> list[Polled]:
        """What the assigned, unpaused partitions hold from their positions; returns at once, never waits."""
        b, g = self._broker, self._group
        with b._lock:
            self._check_open()
            error = b.faults._take(b.faults._poll_errors)
            if error is not None:
                raise error
            if b.faults.is_down:
                if self._member in g.members:
                    g.last_poll[self._member] = b.clock()  # it did poll: the client keeps its membership
                return []
            b._expire(g)
            self._follow_group()
            g.last_poll[self._member] = b.clock()
            return [] if b.faults.fetches_stalled else self._fetch()

    def _follow_group(self) -> None:
        """Rejoin if dropped; give up all partitions in a rebalance; take the new share once it is dealt."""
        b, g = self._broker, self._group
        if self._member not in g.members:  # dropped: the group moved on without it
            self._give_up_all()
            self._member = b._join(g, self._client.max_poll_interval_s, self._client.name)
        if g.rebalancing and self._member not in g.rejoined:
            self._give_up_all()
            b._rebalance(g, rejoined=self._member)
        if not g.rebalancing and self._generation != g.generation:
            self._generation = g.generation
            self._owned = set(g.assignment.get(self._member, ()))
            self._positions = {p: g.committed.get(p, 0) for p in self._owned}
            self._rebalances.assigned(self._owned)

    def _give_up_all(self) -> None:
        self._rebalances.revoked(self._owned)
        self._owned, self._positions, self._paused = set(), {}, set()
        self._generation = None

    def _fetch(self) -> list[Polled]:
        """From each fetchable partition in turn (the first one rotating), at most max_poll_records in all."""
        parts = sorted(self._owned - self._paused)
        if not parts:
            return []
        turn = self._polls % len(parts)
        self._polls += 1
        out: list[Polled] = []
        for p in parts[turn:] + parts[:turn]:
            log = self._broker._logs[p.topic][p.partition]
            pos = self._positions[p]
            if pos > len(log):  # out of range: the client's reset, to the earliest
                pos = 0
            while pos < len(log) and len(out) < self._client.max_poll_records:
                reason = self._broker.faults._unparseable.get((p.topic, p.partition, pos))
                out.append(log[pos] if reason is None else Unparseable(p.topic, p.partition, pos, reason))
                pos += 1
            self._positions[p] = pos
        return out

    def assignment(self) -> set[Partition]:
        with self._broker._lock:
            return set(self._owned)

    def pause(self, parts: Iterable[Partition]) -> None:
        with self._broker._lock:
            self._paused |= self._held(parts)

    def resume(self, parts: Iterable[Partition]) -> None:
        with self._broker._lock:
            self._paused -= self._held(parts)

    def seek(self, part: Partition, offset: int) -> None:
        with self._broker._lock:
            self._held([part])
            if offset < 0:
                raise BrokerError(f"cannot seek {part} to {offset}")
            self._positions[part] = offset

    def committed(self, part: Partition) -> Optional[int]:
        with self._broker._lock:
            self._check_open()
            self._broker._check_up()
            return self._group.committed.get(part)

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """:raises CommitRejected: dropped, a generation behind, or a partition not held."""
        if not offsets:
            return
        b, g = self._broker, self._group
        with b._lock:
            self._check_open()
            b._check_up()
            b._expire(g)
            rejection = b.faults._take(b.faults._commit_rejections)
            if rejection is not None:
                raise rejection
            if self._member not in g.members or self._generation != g.generation:
                raise CommitRejected(f"{self._member} is not in generation {g.generation} of the group")
            foreign = sorted(set(offsets) - self._owned)
            if foreign:
                raise CommitRejected(f"{', '.join(map(str, foreign))} not held by {self._member}")
            g.committed.update(offsets)

    def lag(self) -> dict[Partition, int]:
        with self._broker._lock:
            self._check_open()
            self._broker._check_up()
            logs = self._broker._logs
            return {p: max(0, len(logs[p.topic][p.partition]) - pos) for p, pos in self._positions.items()}

    def connected(self) -> Optional[bool]:
        with self._broker._lock:
            return not self._broker.faults.is_down

    def lookup(self) -> MemoryLookup:
        return MemoryLookup(self._broker)

    def close(self) -> None:
        """Leave the group (its members rebalance), committing nothing."""
        with self._broker._lock:
            if not self._closed:
                self._closed = True
                self._broker._leave(self._group, self._member)

    def _held(self, parts: Iterable[Partition]) -> set[Partition]:
        """``parts``, all held by this member. :raises BrokerError: one is not (kafka-python: not assigned)."""
        self._check_open()
        parts = set(parts)
        if not parts <= self._owned:
            missing = ", ".join(map(str, sorted(parts - self._owned)))
            raise BrokerError(f"{missing} not assigned to {self._member}")
        return parts

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerError(f"consumer {self._member} is closed")


class MemoryLookup:
    """The port's ``OffsetLookup``, read straight from the logs."""

    def __init__(self, broker: MemoryBroker) -> None:
        self._broker = broker

    def bounds(self, part: Partition) -> tuple[int, int]:
        return 0, len(self._log(part))

    def broker_answer(self, part: Partition, timestamp_ms: int) -> Optional[int]:
        """The first offset whose timestamp is at or after ``timestamp_ms``."""
        return next((r.offset for r in self._log(part) if (r.timestamp_ms or 0) >= timestamp_ms), None)

    def first_at(self, part: Partition, offset: int) -> Optional[tuple[int, int]]:
        log = self._log(part)
        if offset >= len(log):
            return None
        record = log[max(0, offset)]
        return record.offset, record.timestamp_ms if record.timestamp_ms is not None else -1

    def close(self) -> None:
        """Nothing is held."""

    def _log(self, part: Partition) -> list[Record]:
        with self._broker._lock:
            self._broker._check_up()
            logs = self._broker._partitions(part.topic)
            if not 0 <= part.partition < len(logs):
                raise BrokerError(f"unknown partition {part}")
            return list(logs[part.partition])


class _Sent:
    """A send: pending until the broker appends it (``record``) or it fails (``error()``)."""

    def __init__(self) -> None:
        self._done = False
        self._error: Optional[BaseException] = None
        self.record: Optional[Record] = None

    def done(self) -> bool:
        return self._done

    def error(self) -> Optional[BaseException]:
        return self._error

    def _settle(self, record: Optional[Record] = None, error: Optional[BaseException] = None) -> None:
        self.record, self._error, self._done = record, error, True


class MemoryProducer:
    """The port's ``Producer``: each send reaches the broker at once; the broker acknowledges it at once unless
    ``faults.hold_acks()`` holds it."""

    def __init__(self, broker: MemoryBroker, max_request_bytes: int) -> None:
        self._broker, self.max_request_bytes = broker, max_request_bytes
        self._closed = False

    def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], headers: Headers) -> _Sent:
        """:raises SendRefused: larger than max_request_bytes. :raises BrokerError: down, or closed."""
        size = len(key or b"") + len(value or b"") + sum(len(k.encode()) + len(v) for k, v in headers)
        if size > self.max_request_bytes:
            raise SendRefused(f"{size} bytes is over max_request_bytes {self.max_request_bytes}")
        b = self._broker
        with b._lock:
            if self._closed:
                raise BrokerError("producer closed")
            b._check_up()
            sent = _Sent()
            failure = b.faults._take(b.faults._send_failures)
            if failure is not None:
                sent._settle(error=failure)
            elif b.faults.acks_held:
                b._held.append((sent, topic, key, value, list(headers)))
            else:
                sent._settle(record=b._append(topic, key, value, list(headers)))
            return sent

    def flush(self, timeout_s: float) -> None:
        """Nothing waits in this producer: every send reached the broker when it was made."""

    def close(self, timeout_s: float) -> None:
        with self._broker._lock:
            self._closed = True
