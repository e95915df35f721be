"""confluent-kafka (librdkafka) behind ``worker.kafka_port``: the optional, faster client.

kafka-python stays the default and the required client; this one is optional
(``pip install 'framewatch[confluent]'``, ``--kafka-client confluent``) and
reads large frames several times faster on the same cores (README, "Kafka
client"). The consumer is here; the producer in ``worker.confluent_producer``; the client that makes both in
``worker.kafka_clients``.

What differs from kafka-python, and how it is bridged:

- Rebalance callbacks run inside ``poll()`` on the calling thread; they only
  feed the port's ``Rebalances``, and the worker acts after ``poll()`` returns.
- Auto-commit and the automatic offset store are off: offsets move only
  through ``commit()``.
- librdkafka's Python binding cannot return a header key that is not UTF-8:
  ``Message.headers()`` leaves a NULL in the pair and a pending
  ``UnicodeDecodeError``. ``headers_of`` reads such a pair without touching
  the NULL and keeps the key as ``NOT_UTF8_MARK`` + a note (the original bytes
  are not reachable), so the record still arrives and ``wire.records`` turns
  it into a ``malformed-header`` dead letter with its key and value.
- An error event from ``poll()`` (librdkafka reports a broker or partition
  problem in place of a record) is logged and skipped: librdkafka has already
  moved past it, and retries connections itself. A fatal error raises a
  ``BrokerError``, which the worker treats as a Kafka outage (wait, go on).
- Other threads (the health server, the Redis heartbeat, the tests) must not
  call into librdkafka while the loop is inside ``poll()``: such a call blocked
  both threads on Tansu. What they ask is answered from state the polling
  thread keeps: the assignment (from the rebalance callbacks) and broker
  connectivity (from librdkafka's statistics, each second: connected while
  any broker connection is up).
- Offsets by time (``Lookup``) come from librdkafka's ``offsets_for_times``
  and watermarks; single records are read by a group-less confluent consumer
  of the lookup's own.
"""

from __future__ import annotations

import ctypes
import json
import logging
import threading
import time
from typing import Any, Callable, Iterable, Mapping, Optional

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
)

log = logging.getLogger(__name__)

UNREADABLE_KEY = NOT_UTF8_MARK + "(header key not UTF-8; its bytes are unreadable through confluent-kafka)"
REQUEST_TIMEOUT_S = 10.0
STATS_EVERY_MS = 1000
DRAIN_RECORDS = 100_000  # what one poll takes at most: more than one fetch (fetch.max.bytes) ever holds
_REBALANCED = {"ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "REBALANCE_IN_PROGRESS", "FENCED_INSTANCE_ID",
               "_ASSIGNMENT_LOST"}  # fmt: skip
# an output no retry can cure (INVALID_MSG: a corrupt one)
_REFUSED = {"MSG_SIZE_TOO_LARGE", "INVALID_RECORD", "INVALID_MSG", "RECORD_LIST_TOO_LARGE"}


def require() -> Any:
    """The confluent_kafka module.

    :raises FramewatchError: it is not installed.
    """
    try:
        import confluent_kafka
    except ImportError as e:
        from wire.errors import FramewatchError

        raise FramewatchError(
            "--kafka-client confluent needs confluent-kafka: pip install 'framewatch[confluent]' "
            "(or confluent-kafka>=2.4), or use --kafka-client kafka-python"
        ) from e
    return confluent_kafka


# -- pure conversions -------------------------------------------------------------------------
_tuple_item = ctypes.pythonapi.PyTuple_GetItem
_tuple_item.argtypes = [ctypes.py_object, ctypes.c_ssize_t]
_tuple_item.restype = ctypes.c_void_p  # the address: None for a NULL item (py_object would crash on NULL)
_raise_pending = ctypes.pythonapi.PyErr_Occurred  # calling it raises an exception a C call left pending


def headers_of(msg: Any) -> Headers:
    """``msg.headers()`` as a list of (str, bytes), never None.

    A key that is not UTF-8 comes back from the binding as a NULL (with a
    pending ``UnicodeDecodeError``, or a ``SystemError`` when the interpreter
    checks); it becomes ``UNREADABLE_KEY``.
    """
    try:
        raw = msg.headers()
        _raise_pending()
    except (UnicodeError, SystemError):
        raw = msg.headers()  # converted once and kept: the same list, with the NULL key
    out: Headers = []
    for pair in raw or ():
        key, value = _item(pair, 0), _item(pair, 1)
        out.append((UNREADABLE_KEY if key is None else key, b"" if value is None else value))
    return out


def _item(pair: tuple[Any, ...], i: int) -> Any:
    """``pair[i]``, or None where the binding left a NULL (``pair[i]`` itself would crash)."""
    address = _tuple_item(pair, i)
    return None if address is None else ctypes.cast(address, ctypes.py_object).value


def record_of(msg: Any) -> Record:
    """The port's record of a confluent ``Message`` (one without an error)."""
    kind, ms = msg.timestamp()
    return Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), headers_of(msg),
                  ms if kind != 0 else None)  # fmt: skip   # kind 0: TIMESTAMP_NOT_AVAILABLE


def broker_error(error: Any, doing: str) -> BrokerError:
    """The port's error for a confluent ``KafkaError`` (the value inside ``KafkaException``), or a message."""
    if not hasattr(error, "code"):  # KafkaException may carry a plain message
        return BrokerError(f"{doing}: {error}")
    name = error.name()
    text = f"{doing}: {error.str()} ({name})"
    if name in _REBALANCED:
        return CommitRejected(text)
    if name in _REFUSED:
        return SendRefused(text)
    return BrokerError(text)


def client_settings(cfg: WorkerConfig) -> dict[str, Any]:
    """librdkafka properties every client of this adapter shares: brokers, client id, security."""
    k = cfg.kafka
    conf: dict[str, Any] = {
        "bootstrap.servers": k.bootstrap,
        "client.id": k.client_id,
        "security.protocol": k.security_protocol.lower(),
        "reconnect.backoff.max.ms": 5000,
        # librdkafka's log lines in the worker's format (text or JSON), not raw stderr
        "logger": logging.getLogger("librdkafka"),
    }
    if k.sasl_mechanism:
        conf.update({"sasl.mechanism": k.sasl_mechanism, "sasl.username": k.sasl_username,
                     "sasl.password": k.sasl_password})  # fmt: skip
    if k.ssl_cafile:
        conf["ssl.ca.location"] = k.ssl_cafile
    if k.ssl_certfile:
        conf["ssl.certificate.location"] = k.ssl_certfile
    if k.ssl_keyfile:
        conf["ssl.key.location"] = k.ssl_keyfile
    return conf


def _fetch_settings(cfg: WorkerConfig) -> dict[str, Any]:
    """What every consumer of this adapter shares: offsets moved only by the worker, fetches for the largest frame."""
    k = cfg.kafka
    return {
        **client_settings(cfg),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "max.partition.fetch.bytes": k.max_message_bytes,
        "fetch.max.bytes": max(k.max_message_bytes, 50 * 1024 * 1024),
        "receive.message.max.bytes": max(k.max_message_bytes, 50 * 1024 * 1024) + 1024 * 1024,
    }


def consumer_settings(cfg: WorkerConfig, group: str) -> dict[str, Any]:
    """The group consumer's librdkafka properties."""
    return {
        **_fetch_settings(cfg),
        "group.id": group,
        # the client's own reset, for an offset out of range; a start without commits is the worker's
        "auto.offset.reset": "earliest",
        "session.timeout.ms": cfg.session_timeout_ms,
        "heartbeat.interval.ms": cfg.heartbeat_interval_ms,
        "max.poll.interval.ms": cfg.max_poll_interval_ms,
        "statistics.interval.ms": STATS_EVERY_MS,
    }


def any_broker_up(stats_json: str) -> bool:
    """From librdkafka's statistics: is any broker connection up?"""
    brokers = json.loads(stats_json).get("brokers", {})
    return any(b.get("state") == "UP" for b in brokers.values())


# -- the client -------------------------------------------------------------------------------
class ConfluentConsumer:
    """``kafka_port.Consumer`` over a ``confluent_kafka.Consumer`` subscribed to one topic."""

    def __init__(self, cfg: WorkerConfig, group: str, topic: str, rebalances: Rebalances,
                 make: Optional[Callable[[dict], Any]] = None) -> None:  # fmt: skip
        """:raises FramewatchError: confluent-kafka is not installed.
        :raises BrokerError: the client refused the configuration."""
        ck = require()
        self._ck, self._cfg, self._make = ck, cfg, make
        self._rebalances = rebalances
        self._lock = threading.Lock()
        self._up: Optional[bool] = None  # None until librdkafka's first statistics (or error) say
        self._assigned: set[Partition] = set()
        conf = {**consumer_settings(cfg, group), "stats_cb": self._on_stats, "error_cb": self._on_error}
        try:
            self._c = (make or ck.Consumer)(conf)
            self._c.subscribe(
                [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_revoke
            )
        except ck.KafkaException as e:
            raise broker_error(e.args[0], "creating the consumer") from e

    # rebalance: recorded for the worker, and kept as the assignment (these run inside poll(), on its thread)
    def _on_assign(self, _consumer: Any, parts: list[Any]) -> None:
        got = _parts(parts)
        with self._lock:
            self._assigned |= got
        self._rebalances.assigned(got)

    def _on_revoke(self, _consumer: Any, parts: list[Any]) -> None:
        gone = _parts(parts)
        with self._lock:
            self._assigned -= gone
        self._rebalances.revoked(gone)

    def _on_stats(self, stats_json: str) -> None:
        try:
            up = any_broker_up(stats_json)
        except ValueError:
            return
        with self._lock:
            self._up = up

    def _on_error(self, error: Any) -> None:
        if error.name() == "_ALL_BROKERS_DOWN":
            with self._lock:
                self._up = False
        log.warning("kafka (librdkafka): %s", error.str())

    def connected(self) -> Optional[bool]:
        """Any broker connection up, by librdkafka's latest statistics; None before the first."""
        with self._lock:
            return self._up

    def assignment(self) -> set[Partition]:
        """The partitions held, as the rebalance callbacks left them: any thread may ask (asking librdkafka
        from another thread while the loop is in ``poll()`` blocks both)."""
        with self._lock:
            return set(self._assigned)

    # consuming
    def poll(self, wait_s: float) -> list[Polled]:
        """Waits up to ``wait_s`` for the first record, then takes what is already fetched.

        :raises BrokerError: a fatal client error.
        """
        first = self._call("poll", self._c.poll, max(0.0, wait_s))
        if first is None:
            return []
        msgs = [first, *self._call("poll", self._c.consume, num_messages=DRAIN_RECORDS, timeout=0)]
        out: list[Polled] = []
        for msg in msgs:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise broker_error(error, "poll")
                log.warning("kafka (librdkafka) in place of a record on %s/%s: %s (skipped)",
                            msg.topic(), msg.partition(), error.str())  # fmt: skip
                continue
            out.append(record_of(msg))
        return out

    def pause(self, parts: Iterable[Partition]) -> None:
        self._call("pause", self._c.pause, self._cparts(parts))

    def resume(self, parts: Iterable[Partition]) -> None:
        self._call("resume", self._c.resume, self._cparts(parts))

    def seek(self, part: Partition, offset: int) -> None:
        self._call("seek", self._c.seek, self._ck.TopicPartition(part.topic, part.partition, offset))

    # offsets
    def committed(self, part: Partition) -> Optional[int]:
        (got,) = self._call("committed", self._c.committed, self._cparts([part]), timeout=REQUEST_TIMEOUT_S)
        _check_partition(got, "committed")
        return got.offset if got.offset >= 0 else None

    def commit(self, offsets: Mapping[Partition, int]) -> None:
        """:raises CommitRejected: the group rebalanced meanwhile (or a partition was refused)."""
        if not offsets:
            return
        parts = [self._ck.TopicPartition(p.topic, p.partition, off) for p, off in offsets.items()]
        done = self._call("commit", self._c.commit, offsets=parts, asynchronous=False)
        for got in done or ():
            _check_partition(got, "commit")

    def lag(self) -> dict[Partition, int]:
        held = self.assignment()
        if not held:
            return {}
        out = {}
        for got in self._call("position", self._c.position, self._cparts(held)):
            if got.offset >= 0:
                part = Partition(got.topic, got.partition)
                _low, high = self.watermarks(part)
                out[part] = max(0, high - got.offset)
        return out

    def watermarks(self, part: Partition) -> tuple[int, int]:
        """(first offset, end offset) of the partition's log, asked of the broker."""
        low, high = self._call("watermarks", self._c.get_watermark_offsets,
                               self._ck.TopicPartition(part.topic, part.partition), timeout=REQUEST_TIMEOUT_S)  # fmt: skip
        return int(low), int(high)

    def offset_for_time(self, part: Partition, timestamp_ms: int) -> Optional[int]:
        """The earliest offset whose timestamp is at or after ``timestamp_ms``; None if none is."""
        query = [self._ck.TopicPartition(part.topic, part.partition, timestamp_ms)]
        (got,) = self._call("offsets for times", self._c.offsets_for_times, query, timeout=REQUEST_TIMEOUT_S)
        _check_partition(got, "offsets for times")
        return int(got.offset) if got.offset >= 0 else None

    def lookup(self) -> "Lookup":
        return Lookup(self, lambda: (self._make or self._ck.Consumer)(
            {**_fetch_settings(self._cfg), "group.id": "framewatch-lookup"}))  # fmt: skip

    def close(self) -> None:
        """Leave the group, without committing (auto-commit is off)."""
        self._call("close", self._c.close)

    # plumbing
    def _cparts(self, parts: Iterable[Partition]) -> list[Any]:
        return [self._ck.TopicPartition(p.topic, p.partition) for p in parts]

    def _call(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._ck.KafkaException as e:
            raise broker_error(e.args[0], doing) from e


class Lookup:
    """``kafka_port.OffsetLookup`` through a confluent consumer.

    Log bounds and offsets by time are asked through the group consumer; single records are read by a
    consumer of the lookup's own (assigned, never subscribed, never committing: its ``group.id`` is only
    what librdkafka requires), created on first use: the group consumer must not be moved around a
    partition it is about to read. Close it after use.
    """

    def __init__(
        self, consumer: ConfluentConsumer, make_reader: Callable[[], Any], read_timeout_s: float = 5.0
    ) -> None:
        self.consumer, self._make_reader, self.read_timeout_s = consumer, make_reader, read_timeout_s
        self._reader: Any = None

    def bounds(self, part: Partition) -> tuple[int, int]:
        return self.consumer.watermarks(part)

    def broker_answer(self, part: Partition, timestamp_ms: int) -> Optional[int]:
        return self.consumer.offset_for_time(part, timestamp_ms)

    def first_at(self, part: Partition, offset: int) -> Optional[tuple[int, int]]:
        ck = self.consumer._ck  # noqa: SLF001 - the same module
        try:
            if self._reader is None:
                self._reader = self._make_reader()
            self._reader.assign([ck.TopicPartition(part.topic, part.partition, offset)])
            deadline = time.monotonic() + self.read_timeout_s
            while time.monotonic() < deadline:
                msg = self._reader.poll(0.2)
                if msg is not None and msg.error() is None:
                    kind, ms = msg.timestamp()
                    return int(msg.offset()), int(ms if kind != 0 else -1)
        except ck.KafkaException as e:
            raise broker_error(e.args[0], f"reading {part} at {offset}") from e
        return None

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _parts(parts: Iterable[Any]) -> set[Partition]:
    return {Partition(p.topic, p.partition) for p in parts}


def _check_partition(part: Any, doing: str) -> None:
    if part.error is not None:
        raise broker_error(part.error, f"{doing} {part.topic}/{part.partition}")
