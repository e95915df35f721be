"""kafka-python behind ``worker.kafka_port``: the default client, always installed.

What is particular to kafka-python stays here:

- Its settings, written once (``_consumer_settings``, ``_producer_settings``):
  auto-commit off, offsets move only through ``commit``.
- Rebalance listeners run on kafka-python 3's IO thread, where a blocking call
  (a commit) fails and wedges the group: ``_Listener`` only records the
  partitions in the port's ``Rebalances``; the worker acts after ``poll()``.
- Records it cannot parse. kafka-python (3.0.x) fails on them in two ways:
  a header key that is not UTF-8 raises inside its record parser and leaves
  the fetch half-read, so every later ``poll()`` spins on it without returning
  (about 90% CPU, nothing consumed, SIGTERM never acted on);
  ``install_lenient_header_keys`` (installed when this client makes its first
  consumer) makes the parser keep such a key as ``NOT_UTF8_MARK`` + its bytes
  as ``\\xNN`` escapes, so the record arrives whole and ``wire.records`` turns
  it into a ``malformed-header`` dead letter. Any other unparseable record (a
  corrupt batch, an invalid record) raises from ``poll()`` once;
  ``skip_unparseable`` seeks one past it and this adapter's ``poll()`` returns
  an ``Unparseable`` in its place.
- Its exceptions: every ``KafkaError`` leaving the adapter is a ``BrokerError``
  (``CommitRejected`` for a commit the group refused, ``SendRefused`` for an
  output no retry can cure).
"""

from __future__ import annotations

import logging
import struct
import time
from typing import Any, Callable, Iterable, Mapping, Optional, TypeVar

import kafka.errors as kerr
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from kafka.structs import OffsetAndMetadata

from worker.config import WorkerConfig
from worker.kafka_port import (
    NOT_UTF8_MARK,
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

log = logging.getLogger(__name__)

# The client's own reset, for an offset out of range (retention passed it, or the broker lost its log): the
# earliest record, so a reset never jumps over what is still there. A partition without a committed offset is
# started by the worker itself, at ``--start-from`` (worker/start_position.py), right after it is assigned.
CLIENT_RESET = "earliest"
DRAIN_RECORDS = 100_000  # max_records of a poll: more than one fetch (fetch_max_bytes) ever holds
_REBALANCED = (kerr.CommitFailedError, kerr.RebalanceInProgressError, kerr.IllegalGenerationError,
               kerr.UnknownMemberIdError, kerr.FencedInstanceIdError)  # fmt: skip
_REFUSED = (kerr.MessageSizeTooLargeError, kerr.InvalidRecordError,
            kerr.CorruptRecordError, kerr.RecordListTooLargeError)  # fmt: skip
# What poll() raises for a record it cannot parse (connection errors are KafkaErrors too, and are not these).
UNPARSEABLE = (
    kerr.CorruptRecordError,
    kerr.InvalidRecordError,
    UnicodeError,
    ValueError,
    IndexError,
    struct.error,
)
T = TypeVar("T")


def broker_error(e: BaseException, doing: str) -> BrokerError:
    """The port's error for a kafka-python exception (its message kept)."""
    kind = BrokerError
    if isinstance(e, _REBALANCED):
        kind = CommitRejected
    elif isinstance(e, _REFUSED):
        kind = SendRefused
    return kind(f"{doing}: {type(e).__name__}: {e}")


def _mapped(doing: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except kerr.KafkaError as e:
        raise broker_error(e, doing) from e


def _record(m: Any) -> Record:
    """The port's record of a kafka-python ``ConsumerRecord``."""
    ts = m.timestamp if m.timestamp is not None and m.timestamp >= 0 else None
    return Record(m.topic, m.partition, m.offset, m.key, m.value, list(m.headers or ()), ts)


def _tp(part: Partition) -> TopicPartition:
    return TopicPartition(part.topic, part.partition)


def _fetch_settings(cfg: WorkerConfig) -> dict[str, Any]:
    """What every consumer of this client shares: fetch sizes for the largest frame, brokers, security."""
    return {
        "enable_auto_commit": False,
        "max_partition_fetch_bytes": cfg.kafka.max_message_bytes,
        "fetch_max_bytes": max(cfg.kafka.max_message_bytes, 50 * 1024 * 1024),
        "fetch_max_wait_ms": 100,
        "reconnect_backoff_max_ms": 5000,
        **cfg.kafka.client_kwargs(),
    }


class KafkaPythonClient:
    """``kafka_port.KafkaClient`` over kafka-python."""

    name = "kafka-python"

    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg

    def consumer(self, group: str, topic: str, rebalances: Rebalances) -> "KafkaPythonConsumer":
        """:raises BrokerError: kafka-python refused to create it."""
        install_lenient_header_keys()
        cfg = self.cfg
        kafka = _mapped(
            "creating the consumer",
            KafkaConsumer,
            group_id=group,
            auto_offset_reset=CLIENT_RESET,
            max_poll_records=cfg.max_batch,
            session_timeout_ms=cfg.session_timeout_ms,
            heartbeat_interval_ms=cfg.heartbeat_interval_ms,
            max_poll_interval_ms=cfg.max_poll_interval_ms,
            request_timeout_ms=max(30000, cfg.session_timeout_ms + 5000),
            **_fetch_settings(cfg),
        )
        kafka.subscribe([topic], listener=_Listener(rebalances))
        return KafkaPythonConsumer(kafka, cfg)

    def producer(self, max_request_bytes: int) -> "KafkaPythonProducer":
        """:raises BrokerError: kafka-python refused to create it."""
        kafka = _mapped(
            "creating the producer",
            KafkaProducer,
            acks="all",
            linger_ms=5,
            retries=5,
            max_request_size=max_request_bytes,
            max_block_ms=3000,  # send() blocks at most this long while the broker is unreachable
            request_timeout_ms=10000,
            delivery_timeout_ms=30000,
            reconnect_backoff_max_ms=5000,
            **self.cfg.kafka.client_kwargs(),
        )
        return KafkaPythonProducer(kafka)


class _Listener(ConsumerRebalanceListener):
    """kafka-python's rebalance notices, recorded in the port's ``Rebalances`` (never blocks)."""

    def __init__(self, rebalances: Rebalances) -> None:
        self.rebalances = rebalances

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.rebalances.revoked(Partition(tp.topic, tp.partition) for tp in revoked)

    def on_partitions_lost(self, lost: Any) -> None:
        self.on_partitions_revoked(lost)

    def on_partitions_assigned(self, assigned: Any) -> None:
        self.rebalances.assigned(Partition(tp.topic, tp.partition) for tp in assigned)


class KafkaPythonConsumer:
    """``kafka_port.Consumer`` over a subscribed ``KafkaConsumer``."""

    def __init__(self, kafka: KafkaConsumer, cfg: WorkerConfig) -> None:
        self._c, self._cfg = kafka, cfg

    def poll(self, wait_s: float) -> list[Polled]:
        """Everything the client holds; a record it cannot parse comes alone, as an ``Unparseable``, after the
        records polled before it (kafka-python returns those first and raises on the next poll)."""
        try:
            batches = self._c.poll(timeout_ms=max(1, int(wait_s * 1000)), max_records=DRAIN_RECORDS)
        except UNPARSEABLE as e:
            bad = skip_unparseable(self._c, e)
            if bad is None:
                raise BrokerError(f"poll: {type(e).__name__}: {e}") from e
            return [bad]
        except kerr.KafkaError as e:
            raise broker_error(e, "poll") from e
        return [_record(m) for messages in batches.values() for m in messages]

    def assignment(self) -> set[Partition]:
        return {Partition(tp.topic, tp.partition) for tp in self._c.assignment()}

    def pause(self, parts: Iterable[Partition]) -> None:
        _mapped("pause", self._c.pause, *map(_tp, parts))

    def resume(self, parts: Iterable[Partition]) -> None:
        _mapped("resume", self._c.resume, *map(_tp, parts))

    def seek(self, part: Partition, offset: int) -> None:
        _mapped("seek", self._c.seek, _tp(part), offset)

    def committed(self, part: Partition) -> Optional[int]:
        got = _mapped("committed", self._c.committed, _tp(part))
        return None if got is None or got < 0 else int(got)

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """:raises CommitRejected: the group rebalanced meanwhile."""
        if offsets:
            _mapped(
                "commit", self._c.commit, {_tp(p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
            )

    def lag(self) -> dict[Partition, int]:
        assignment = list(self._c.assignment())
        if not assignment:
            return {}
        ends = _mapped("end offsets", self._c.end_offsets, assignment)
        positions = {tp: _mapped("position", self._c.position, tp) for tp in assignment if tp in ends}
        return {Partition(tp.topic, tp.partition): max(0, ends[tp] - pos)
                for tp, pos in positions.items() if pos is not None}  # fmt: skip

    def connected(self) -> Optional[bool]:
        client = self._c._client  # noqa: SLF001 - kafka-python exposes no public check
        try:
            return any(client.connected(b.node_id) for b in client.cluster.brokers())
        except Exception:  # noqa: BLE001 - treat an internal change as "unknown = not ready"
            return False

    def lookup(self) -> "Lookup":
        return Lookup(self._c, self._cfg)

    def close(self) -> None:
        _mapped("close", self._c.close, autocommit=False)


class Lookup:
    """``kafka_port.OffsetLookup`` for the partitions a kafka-python consumer holds.

    Log bounds and the broker's offsets_for_times answer come from the group consumer; single records are
    read by a consumer of its own (assigned, no group), created on first use: the group consumer must not be
    moved around a partition it is about to read. Close it after use.
    """

    def __init__(self, consumer: KafkaConsumer, cfg: WorkerConfig, read_timeout_s: float = 5.0) -> None:
        self.consumer, self.cfg, self.read_timeout_s = consumer, cfg, read_timeout_s
        self._reader: Optional[KafkaConsumer] = None

    def bounds(self, part: Partition) -> tuple[int, int]:
        tp = _tp(part)
        first = _mapped("beginning offsets", self.consumer.beginning_offsets, [tp])[tp]
        return int(first), int(_mapped("end offsets", self.consumer.end_offsets, [tp])[tp])

    def broker_answer(self, part: Partition, timestamp_ms: int) -> Optional[int]:
        tp = _tp(part)
        found = _mapped("offsets for times", self.consumer.offsets_for_times, {tp: timestamp_ms}).get(tp)
        return None if found is None or found.offset < 0 else int(found.offset)

    def first_at(self, part: Partition, offset: int) -> Optional[tuple[int, int]]:
        tp = _tp(part)
        try:
            if self._reader is None:
                self._reader = KafkaConsumer(group_id=None, max_poll_records=1, **_fetch_settings(self.cfg))
            if self._reader.assignment() != {tp}:
                self._reader.assign([tp])
            self._reader.seek(tp, offset)
            deadline = time.monotonic() + self.read_timeout_s
            while time.monotonic() < deadline:
                for msgs in self._reader.poll(timeout_ms=200, max_records=1).values():
                    for msg in msgs:
                        return int(msg.offset), int(msg.timestamp if msg.timestamp is not None else -1)
        except kerr.KafkaError as e:
            raise broker_error(e, f"reading {part} at {offset}") from e
        return None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class KafkaPythonSent:
    """``kafka_port.Sent`` over kafka-python's ``FutureRecordMetadata``."""

    __slots__ = ("_future", "_topic")

    def __init__(self, future: Any, topic: str) -> None:
        self._future, self._topic = future, topic

    def done(self) -> bool:
        return bool(self._future.is_done)

    def error(self) -> Optional[BaseException]:
        failed = self._future.exception if self._future.is_done else None
        return None if failed is None else broker_error(failed, f"delivery to {self._topic}")


class KafkaPythonProducer:
    """``kafka_port.Producer`` over ``KafkaProducer``."""

    def __init__(self, kafka: KafkaProducer) -> None:
        self._p = kafka

    def send(
        self, topic: str, key: Optional[bytes], value: Optional[bytes], headers: Headers
    ) -> KafkaPythonSent:
        """:raises SendRefused: too large. :raises BrokerError: not accepted now (the broker unreachable)."""
        future = _mapped(f"send to {topic}", self._p.send, topic, key=key, value=value, headers=list(headers))
        return KafkaPythonSent(future, topic)

    def flush(self, timeout_s: float) -> None:
        _mapped("flush", self._p.flush, timeout=max(0.0, timeout_s))

    def close(self, timeout_s: float) -> None:
        _mapped("close", self._p.close, timeout=max(0.0, timeout_s))


# -- records kafka-python cannot parse ----------------------------------------------------------
class _LenientBytes(bytes):
    """A header-key slice whose ``decode`` never raises: bad bytes become ``\\xNN`` after ``NOT_UTF8_MARK``."""

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:  # type: ignore[override]
        try:
            return bytes.decode(self, encoding, errors)
        except UnicodeDecodeError:
            return NOT_UTF8_MARK + bytes.decode(self, encoding, "backslashreplace")


class _LenientBuffer(bytes):
    """The record buffer, re-read once with slices that decode leniently."""

    def __getitem__(self, item: Any) -> Any:
        got = bytes.__getitem__(self, item)
        return _LenientBytes(got) if isinstance(item, slice) else got


_lenient = False


def install_lenient_header_keys() -> None:
    """Patch kafka-python's v2 record parser so a non-UTF-8 header key cannot wedge the fetcher (idempotent).
    Only the parser's error path changes: records that parse are untouched."""
    global _lenient
    if _lenient:
        return
    from kafka.record.default_records import DefaultRecordBatch

    strict = DefaultRecordBatch._read_msg

    def read_msg(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return strict(self, *args, **kwargs)
        except UnicodeDecodeError:  # only a header key is decoded as text; _pos is unchanged on error
            saved = self._buffer
            self._buffer = _LenientBuffer(saved)
            try:
                return strict(self, *args, **kwargs)
            finally:
                self._buffer = saved

    DefaultRecordBatch._read_msg = read_msg
    _lenient = True


def skip_unparseable(consumer: KafkaConsumer, error: BaseException) -> Optional[Unparseable]:
    """After ``poll()`` raised ``error``: seek past the record it stopped at. None if no record is to blame.

    Reads the fetcher's record cursor (kafka-python has no public API for this);
    the offset skipped is the later of the cursor and the consumer's position.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    part = getattr(fetcher, "_next_partition_records", None)
    if part is None:
        return None
    tp: TopicPartition = part.topic_partition
    try:
        offset = max(int(part.next_fetch_offset), int(consumer.position(tp)))
        consumer.seek(tp, offset + 1)
    except Exception as e:  # noqa: BLE001 - e.g. the partition was revoked meanwhile
        log.warning("could not seek past an unparseable record on %s/%d: %s", tp.topic, tp.partition, e)
        return None
    part.drain()
    fetcher._next_partition_records = None  # type: ignore[union-attr]
    log.error("record %s/%d/%d cannot be parsed (%s): skipped", tp.topic, tp.partition, offset, error)
    return Unparseable(tp.topic, tp.partition, offset, f"{type(error).__name__}: {error}")
