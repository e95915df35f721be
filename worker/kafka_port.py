"""The worker's one door to Kafka, in the worker's own terms.

The worker polls, pauses, resumes, seeks, commits, reads its assignment and
lag, and sends outputs whose acknowledgement it waits for. This module names
those acts and the values they carry; it imports no Kafka client. Each client
is an adapter behind ``KafkaClient``:

- ``worker.kafka_python_client``: kafka-python (the default, always installed);
- ``worker.confluent_client``: confluent-kafka / librdkafka (``--kafka-client confluent``);
- ``worker.memory_broker``: an in-memory broker with partitions, consumer
  groups, rebalances, committed offsets and injectable faults, for tests.

What is particular to a client stays in its adapter: its configuration, how
its rebalance callbacks reach ``Rebalances``, records it cannot parse
(delivered here as ``Unparseable``, the consumer already moved past them),
and its errors (raised here as ``BrokerError`` and its kinds).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterable, Mapping, NamedTuple, Optional, Protocol, Union

Headers = list[tuple[str, bytes]]
NOT_UTF8_MARK = "\ufffd"  # a header key that is not UTF-8 arrives as this mark and its bytes as \xNN escapes


class Partition(NamedTuple):
    """One partition of one topic: hashable, ordered, printed as ``topic/partition``."""

    topic: str
    partition: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}"


@dataclass(frozen=True)
class Record:
    """One consumed message."""

    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Headers = field(default_factory=list)
    timestamp_ms: Optional[int] = None  # None when the broker gave none

    @property
    def where(self) -> Partition:
        return Partition(self.topic, self.partition)


@dataclass(frozen=True)
class Unparseable:
    """A message the client could not parse: the consumer has moved past it; what is left is where it was."""

    topic: str
    partition: int
    offset: int
    error: str

    @property
    def where(self) -> Partition:
        return Partition(self.topic, self.partition)


Polled = Union[Record, Unparseable]


class BrokerError(Exception):
    """The broker or the client failed; trying again later may succeed (the loop waits and goes on)."""


class CommitRejected(BrokerError):
    """The group refused a commit (it rebalanced meanwhile): the next commit tries again."""


class SendRefused(BrokerError):
    """The broker refuses this output for good (too large, invalid): no retry can cure it."""


class Rebalances:
    """Partitions revoked and assigned, recorded as the client reports them (thread-safe, never blocks).

    Clients report rebalances from inside ``poll()`` (on their IO thread for
    kafka-python 3), where nothing may block; the worker acts on ``take()``
    right after ``poll()`` returns.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._revoked: set[Partition] = set()
        self._assigned: set[Partition] = set()

    def revoked(self, parts: Iterable[Partition]) -> None:
        """Given up in a rebalance, or lost (the group moved on without this member)."""
        with self._lock:
            self._revoked |= set(parts)
            self._assigned -= set(parts)

    def assigned(self, parts: Iterable[Partition]) -> None:
        with self._lock:
            self._assigned |= set(parts)

    def take(self) -> tuple[set[Partition], set[Partition]]:
        """(revoked, assigned) since the last call."""
        with self._lock:
            revoked, assigned = self._revoked, self._assigned
            self._revoked, self._assigned = set(), set()
        return revoked, assigned


class OffsetLookup(Protocol):
    """Finding where a partition without a committed offset starts (worker/start_position.py)."""

    def bounds(self, part: Partition) -> tuple[int, int]:
        """(first offset, end offset) of the partition's log."""

    def broker_answer(self, part: Partition, timestamp_ms: int) -> Optional[int]:
        """The broker's offsets-for-times answer; None when it says no record is that recent."""

    def first_at(self, part: Partition, offset: int) -> Optional[tuple[int, int]]:
        """(offset, timestamp ms) of the first record at ``offset`` or after; None if none comes in time."""

    def close(self) -> None:
        """Release what the lookups held."""


class Consumer(Protocol):
    """A group member subscribed to one topic; offsets move only through ``commit``.

    Every method but ``assignment`` and ``connected`` is called from the
    worker's loop thread alone; those two may be asked from any thread.
    Failures raise ``BrokerError`` (or a kind of it).
    """

    def poll(self, wait_s: float) -> list[Polled]:
        """Every record the client holds (waiting up to ``wait_s`` for the first), in offset order per partition.
        Rebalances that happen meanwhile are reported to the ``Rebalances`` the consumer was made with."""

    def assignment(self) -> set[Partition]: ...

    def pause(self, parts: Iterable[Partition]) -> None: ...

    def resume(self, parts: Iterable[Partition]) -> None: ...

    def seek(self, part: Partition, offset: int) -> None:
        """The next poll reads ``part`` from ``offset``."""

    def committed(self, part: Partition) -> Optional[int]:
        """The group's committed offset of ``part``; None when it has none."""

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """Commit synchronously. :raises CommitRejected: the group rebalanced meanwhile."""

    def lag(self) -> dict[Partition, int]:
        """Records behind the log's end, per assigned partition whose position is known."""

    def connected(self) -> Optional[bool]:
        """A live connection to a broker; None while the client cannot tell yet."""

    def lookup(self) -> OffsetLookup:
        """Offsets by time for the partitions held; close it after use."""

    def close(self) -> None:
        """Leave the group, without committing."""


class Sent(Protocol):
    """One output handed to the producer, until the broker acknowledges it or it fails."""

    def done(self) -> bool: ...

    def error(self) -> Optional[BaseException]:
        """Why it failed (a ``SendRefused`` when no retry can cure it); None while pending or once acknowledged."""


class Producer(Protocol):
    def send(self, topic: str, key: Optional[bytes], value: Optional[bytes], headers: Headers) -> Sent:
        """Hand one output over without waiting for its acknowledgement.
        :raises SendRefused: refused at once (too large). :raises BrokerError: not accepted now."""

    def flush(self, timeout_s: float) -> None:
        """Push what is held now, waiting at most ``timeout_s``."""

    def close(self, timeout_s: float) -> None: ...


class KafkaClient(Protocol):
    """One Kafka client library (or the in-memory broker), configured for one worker."""

    name: str  # kafka-python | confluent | memory: what `framewatch status` shows

    def consumer(self, group: str, topic: str, rebalances: Rebalances) -> Consumer:
        """A new group member subscribed to ``topic``. :raises BrokerError: it cannot be created."""

    def producer(self, max_request_bytes: int) -> Producer:
        """The outputs' producer: every send acknowledged by all in-sync replicas."""
