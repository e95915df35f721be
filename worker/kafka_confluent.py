"""confluent-kafka (librdkafka) behind the small consumer interface the worker uses from kafka-python.

kafka-python stays the default and the required client; this one is optional
(``pip install 'framewatch[confluent]'``, ``--kafka-client confluent``) and
reads large frames about several times faster on the same cores (README,
"Kafka client"). ``ConfluentConsumer`` exposes exactly what ``worker.loop``,
``worker.kafka_io`` (``commit``, ``lag``, ``broker_connected``) and
``framewatch.bench`` call, with kafka-python's types: ``kafka.TopicPartition``
keys, records with ``topic, partition, offset, key, value, headers,
timestamp``, and ``kafka.errors.KafkaError`` subclasses for client errors. So
the loop does not know which client it holds.

What differs underneath, and how it is bridged:

- Rebalance callbacks run inside ``poll()`` on the calling thread; they only
  feed the same ``kafka_io.Rebalance`` recorder, and the loop acts after
  ``poll()`` returns, as with kafka-python.
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
  ``KafkaError``, which the loop treats as a Kafka outage (wait, go on).
- Other threads (the health server, the Redis heartbeat, the tests) must not
  call into librdkafka while the loop is inside ``poll()``: such a call blocked
  both threads on Tansu. What they ask is answered from state the polling
  thread keeps: the assignment (from the rebalance callbacks) and broker
  connectivity (from librdkafka's statistics, each second: connected while
  any broker connection is up).
"""

from __future__ import annotations

import ctypes
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional

import kafka.errors as kerr
from kafka import TopicPartition
from kafka.structs import OffsetAndTimestamp

from worker.poison import NOT_UTF8_MARK

log = logging.getLogger(__name__)

Headers = list[tuple[str, bytes]]
UNREADABLE_KEY = NOT_UTF8_MARK + "(header key not UTF-8; its bytes are unreadable through confluent-kafka)"
REQUEST_TIMEOUT_S = 10.0
STATS_EVERY_MS = 1000
# librdkafka's local (negative) error codes the worker can act on, as kafka-python's exceptions.
_LOCAL_ERRORS: dict[str, type[kerr.KafkaError]] = {
    "_TIMED_OUT": kerr.KafkaTimeoutError,
    "_MSG_TIMED_OUT": kerr.KafkaTimeoutError,
    "_TRANSPORT": kerr.KafkaConnectionError,
    "_ALL_BROKERS_DOWN": kerr.KafkaConnectionError,
    "_RESOLVE": kerr.KafkaConnectionError,
    "_UNKNOWN_PARTITION": kerr.UnknownTopicOrPartitionError,
    "_UNKNOWN_TOPIC": kerr.UnknownTopicOrPartitionError,
    "_STATE": kerr.IllegalStateError,
    "_ASSIGNMENT_LOST": kerr.CommitFailedError,
}
_REBALANCED = {"ILLEGAL_GENERATION", "UNKNOWN_MEMBER_ID", "REBALANCE_IN_PROGRESS", "FENCED_INSTANCE_ID"}


@dataclass(frozen=True)
class Record:
    """One consumed record, with the attributes the worker reads from kafka-python's ConsumerRecord."""

    topic: str
    partition: int
    offset: int
    key: Optional[bytes]
    value: Optional[bytes]
    headers: Headers
    timestamp: Optional[int]  # milliseconds since the epoch; None when the broker gave none


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
    """``msg.headers()`` as kafka-python gives them: a list of (str, bytes), never None.

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
    """A kafka-python-shaped record of a confluent ``Message`` (one without an error)."""
    kind, ms = msg.timestamp()
    return Record(msg.topic(), msg.partition(), msg.offset(), msg.key(), msg.value(), headers_of(msg),
                  ms if kind != 0 else None)  # fmt: skip   # kind 0: TIMESTAMP_NOT_AVAILABLE


def kafka_error(error: Any, doing: str) -> kerr.KafkaError:
    """A kafka-python ``KafkaError`` for a confluent ``KafkaError`` (the value inside ``KafkaException``)."""
    if not hasattr(error, "code"):  # KafkaException may carry a plain message
        return kerr.KafkaError(f"{doing}: {error}")
    name, code = error.name(), error.code()
    text = f"{doing}: {error.str()} ({name})"
    if name in _REBALANCED:
        return kerr.CommitFailedError(text)
    if code > 0:  # a broker error code: the same numbers in both clients
        return kerr.for_code(code)(text)  # type: ignore[no-any-return]
    return _LOCAL_ERRORS.get(name, kerr.KafkaError)(text)


def client_config_of(k: Any) -> dict[str, Any]:
    """librdkafka properties both clients share: brokers, client id, security (from ``KafkaSettings``)."""
    conf: dict[str, Any] = {
        "bootstrap.servers": k.bootstrap,
        "client.id": k.client_id,
        "security.protocol": k.security_protocol.lower(),
        "reconnect.backoff.max.ms": 5000,
        "logger": logging.getLogger("librdkafka"),  # its log lines in the worker's format (text or JSON), not raw stderr
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


def config_of(cfg: Any) -> dict[str, Any]:
    """librdkafka properties equivalent to ``kafka_io.make_consumer``'s kafka-python settings."""
    k = cfg.kafka
    return {
        **client_config_of(k),
        "group.id": cfg.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",  # kafka_io.CLIENT_RESET: a start without commits is the loop's
        "max.partition.fetch.bytes": k.max_message_bytes,
        "fetch.max.bytes": max(k.max_message_bytes, 50 * 1024 * 1024),
        "receive.message.max.bytes": max(k.max_message_bytes, 50 * 1024 * 1024) + 1024 * 1024,
        "session.timeout.ms": cfg.session_timeout_ms,
        "heartbeat.interval.ms": cfg.heartbeat_interval_ms,
        "max.poll.interval.ms": cfg.max_poll_interval_ms,
        "statistics.interval.ms": STATS_EVERY_MS,
    }


def any_broker_up(stats_json: str) -> bool:
    """From librdkafka's statistics: is any broker connection up?"""
    brokers = json.loads(stats_json).get("brokers", {})
    return any(b.get("state") == "UP" for b in brokers.values())


# -- the adapter ------------------------------------------------------------------------------
class ConfluentConsumer:
    """A ``confluent_kafka.Consumer`` subscribed to one topic, with kafka-python's method names and types."""

    def __init__(
        self, cfg: Any, topic: str, listener: Any, make: Optional[Callable[[dict], Any]] = None
    ) -> None:
        """:raises FramewatchError: confluent-kafka is not installed.
        :raises KafkaError: the client refused the configuration."""
        ck = require()
        self._ck = ck
        self._listener = listener
        self._lock = threading.Lock()
        self._up: Optional[bool] = None  # None until librdkafka's first statistics (or error) say
        self._assigned: set[TopicPartition] = set()
        conf = {**config_of(cfg), "stats_cb": self._on_stats, "error_cb": self._on_error}
        try:
            self._c = (make or ck.Consumer)(conf)
            self._c.subscribe(
                [topic], on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
            )
        except ck.KafkaException as e:
            raise kafka_error(e.args[0], "creating the consumer") from e

    # rebalance: recorded for the loop, and kept as the assignment (these run inside poll(), on its thread)
    def _on_assign(self, _consumer: Any, parts: list[Any]) -> None:
        with self._lock:
            self._assigned |= set(_tps(parts))
        self._listener.on_partitions_assigned(_tps(parts))

    def _on_revoke(self, _consumer: Any, parts: list[Any]) -> None:
        with self._lock:
            self._assigned -= set(_tps(parts))
        self._listener.on_partitions_revoked(_tps(parts))

    def _on_lost(self, _consumer: Any, parts: list[Any]) -> None:
        with self._lock:
            self._assigned -= set(_tps(parts))
        self._listener.on_partitions_lost(_tps(parts))

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

    # consuming
    def poll(self, timeout_ms: int = 0, max_records: int = 500) -> dict[TopicPartition, list[Record]]:
        """Records by partition: waits up to ``timeout_ms`` for the first, then takes what is already fetched.

        :raises KafkaError: a fatal client error.
        """
        try:
            first = self._c.poll(max(0.0, timeout_ms / 1000.0))
            msgs = [first] if first is not None else []
            if first is not None and max_records > 1:
                msgs += self._c.consume(num_messages=max_records - 1, timeout=0)
        except self._ck.KafkaException as e:
            raise kafka_error(e.args[0], "poll") from e
        out: dict[TopicPartition, list[Record]] = {}
        for msg in msgs:
            error = msg.error()
            if error is not None:
                if error.fatal():
                    raise kafka_error(error, "poll")
                log.warning("kafka (librdkafka) in place of a record on %s/%s: %s (skipped)",
                            msg.topic(), msg.partition(), error.str())  # fmt: skip
                continue
            rec = record_of(msg)
            out.setdefault(TopicPartition(rec.topic, rec.partition), []).append(rec)
        return out

    def assignment(self) -> set[TopicPartition]:
        """The partitions held, as the rebalance callbacks left them: any thread may ask (asking librdkafka
        from another thread while the loop is in ``poll()`` blocks both)."""
        with self._lock:
            return set(self._assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self._call("pause", self._c.pause, self._ctps(tps))

    def resume(self, *tps: TopicPartition) -> None:
        self._call("resume", self._c.resume, self._ctps(tps))

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._call("seek", self._c.seek, self._ck.TopicPartition(tp.topic, tp.partition, offset))

    def seek_to_beginning(self, *tps: TopicPartition) -> None:
        for tp in tps:
            self.seek(tp, self._ck.OFFSET_BEGINNING)

    # offsets
    def committed(self, tp: TopicPartition) -> Optional[int]:
        """The group's committed offset of ``tp``; None if it has none."""
        (got,) = self._call("committed", self._c.committed, self._ctps([tp]), timeout=REQUEST_TIMEOUT_S)
        _check_partition(got, "committed")
        return got.offset if got.offset >= 0 else None

    def position(self, tp: TopicPartition) -> Optional[int]:
        """The offset of the next record to read; None while unknown (not fetched yet)."""
        (got,) = self._call("position", self._c.position, self._ctps([tp]))
        return got.offset if got.offset >= 0 else None

    def beginning_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        lows = {}
        for tp in tps:
            low, _high = self._call("beginning offsets", self._c.get_watermark_offsets,
                                    self._ck.TopicPartition(tp.topic, tp.partition), timeout=REQUEST_TIMEOUT_S)  # fmt: skip
            lows[tp] = low
        return lows

    def offsets_for_times(self, times: dict[TopicPartition, int]) -> dict[TopicPartition, Optional[OffsetAndTimestamp]]:
        """kafka-python's shape: the earliest offset whose timestamp is at or after each time; None if none."""
        query = [self._ck.TopicPartition(tp.topic, tp.partition, ms) for tp, ms in times.items()]
        found = self._call("offsets for times", self._c.offsets_for_times, query, timeout=REQUEST_TIMEOUT_S)
        out: dict[TopicPartition, Optional[OffsetAndTimestamp]] = {}
        for got in found:
            _check_partition(got, "offsets for times")
            tp = TopicPartition(got.topic, got.partition)
            out[tp] = OffsetAndTimestamp(got.offset, times[tp], -1) if got.offset >= 0 else None
        return out

    def end_offsets(self, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        ends = {}
        for tp in tps:
            _low, high = self._call("end offsets", self._c.get_watermark_offsets,
                                    self._ck.TopicPartition(tp.topic, tp.partition), timeout=REQUEST_TIMEOUT_S)  # fmt: skip
            ends[tp] = high
        return ends

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        """Commit ``{tp: OffsetAndMetadata}`` synchronously, as ``kafka_io.commit`` calls it.

        :raises CommitFailedError: the group rebalanced meanwhile (or a partition was refused).
        """
        parts = [self._ck.TopicPartition(tp.topic, tp.partition, om.offset) for tp, om in offsets.items()]
        done = self._call("commit", self._c.commit, offsets=parts, asynchronous=False)
        for got in done or ():
            _check_partition(got, "commit")

    def close(self, autocommit: bool = False, timeout_ms: Optional[int] = None) -> None:
        """Leave the group. Auto-commit is off in this client: ``autocommit`` and ``timeout_ms`` are accepted
        for kafka-python's signature (librdkafka bounds the leave with its own timeouts)."""
        self._call("close", self._c.close)

    # plumbing
    def _ctps(self, tps: Iterable[TopicPartition]) -> list[Any]:
        return [self._ck.TopicPartition(tp.topic, tp.partition) for tp in tps]

    def _call(self, doing: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._ck.KafkaException as e:
            raise kafka_error(e.args[0], doing) from e


def _tps(parts: Iterable[Any]) -> list[TopicPartition]:
    return [TopicPartition(p.topic, p.partition) for p in parts]


def _check_partition(part: Any, doing: str) -> None:
    if part.error is not None:
        raise kafka_error(part.error, f"{doing} {part.topic}/{part.partition}")
