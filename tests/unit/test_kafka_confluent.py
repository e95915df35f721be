"""The confluent-kafka adapter (worker/confluent_client.py, worker/confluent_producer.py) in the port's terms.

No broker: confluent's consumer, producer and messages are stood in for by
small fakes (its ``Message`` cannot be built from Python), injected through
``make=``; tests/integration/test_kafka_port.py runs the real client against
the embedded broker, with the same cases as kafka-python.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import replace
from typing import Any, Optional

import pytest

from wire.errors import FramewatchError
from wire.records import FrameRecord
from wire.settings import KafkaSettings, RedisSettings
from worker import confluent_client as cc
from worker.config import WorkerConfig
from worker.kafka_clients import ConfluentClient
from worker.kafka_port import (
    NOT_UTF8_MARK,
    BrokerError,
    CommitRejected,
    Partition,
    Rebalances,
    Record,
    SendRefused,
)

ck = pytest.importorskip(
    "confluent_kafka", reason="confluent-kafka not installed (pip install '.[confluent]')"
)


class FakeMessage:
    def __init__(
        self, offset: int = 0, headers: Any = None, error: Any = None, timestamp: tuple = (1, 1234)
    ) -> None:
        self._offset, self._headers, self._error, self._ts = offset, headers, error, timestamp

    def topic(self) -> str:
        return "frames"

    def partition(self) -> int:
        return 1

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return b"cam"

    def value(self) -> bytes:
        return b"img"

    def headers(self) -> Any:
        return self._headers

    def timestamp(self) -> tuple:
        return self._ts

    def error(self) -> Any:
        return self._error


def pair_with_null_key(value: bytes) -> tuple:
    """What confluent-kafka's binding builds for a header key that is not UTF-8: a NULL where the key should be."""
    api = ctypes.pythonapi
    api.PyTuple_New.restype, api.PyTuple_New.argtypes = ctypes.c_void_p, [ctypes.c_ssize_t]
    api.PyTuple_SetItem.argtypes = [ctypes.c_void_p, ctypes.c_ssize_t, ctypes.py_object]
    api.Py_IncRef.argtypes = [ctypes.py_object]
    address = api.PyTuple_New(2)
    api.Py_IncRef(value)  # SetItem steals a reference
    api.PyTuple_SetItem(address, 1, value)
    return ctypes.cast(address, ctypes.py_object).value  # type: ignore[no-any-return]


def test_record_has_the_fields_of_the_ports_record():
    rec = cc.record_of(FakeMessage(offset=7, headers=[("frame-id", b"f1")]))
    assert rec == Record("frames", 1, 7, b"cam", b"img", [("frame-id", b"f1")], 1234)
    assert cc.record_of(FakeMessage(headers=None, timestamp=(0, -1))).headers == []
    assert cc.record_of(FakeMessage(timestamp=(0, -1))).timestamp_ms is None  # TIMESTAMP_NOT_AVAILABLE


def test_header_key_not_utf8_arrives_marked_and_the_frame_becomes_a_malformed_header_dead_letter():
    good = FrameRecord("f1", "cam", 0, 1.0, b"img", "image/png")
    _, value, headers = good.encode()
    msg = FakeMessage(headers=[*headers, pair_with_null_key(b"v")])
    rec = cc.record_of(msg)
    assert rec.headers[:-1] == headers, "the other headers are kept"
    assert rec.headers[-1] == (cc.UNREADABLE_KEY, b"v")
    assert cc.UNREADABLE_KEY.startswith(NOT_UTF8_MARK)
    with pytest.raises(Exception) as caught:
        FrameRecord.decode(rec.key, value, rec.headers, fallback_id="x", fallback_time=0.0)
    assert getattr(caught.value, "reason", None) == "malformed-header"


def test_header_with_null_value_becomes_empty_bytes():
    assert cc.headers_of(FakeMessage(headers=[("k", None)])) == [("k", b"")]


@pytest.mark.parametrize(
    "code, expected",
    [
        ("ILLEGAL_GENERATION", CommitRejected),
        ("REBALANCE_IN_PROGRESS", CommitRejected),
        ("UNKNOWN_MEMBER_ID", CommitRejected),
        ("_ASSIGNMENT_LOST", CommitRejected),
        ("MSG_SIZE_TOO_LARGE", SendRefused),
        ("INVALID_MSG", SendRefused),
        ("_TIMED_OUT", BrokerError),
        ("_TRANSPORT", BrokerError),
        ("_ALL_BROKERS_DOWN", BrokerError),
        ("COORDINATOR_NOT_AVAILABLE", BrokerError),
        ("_FAIL", BrokerError),
    ],
)
def test_client_errors_become_the_ports_errors(code, expected):
    mapped = cc.broker_error(ck.KafkaError(getattr(ck.KafkaError, code)), "commit")
    assert type(mapped) is expected
    assert str(mapped).startswith("commit: ") and code in str(mapped)
    assert type(cc.broker_error("plain text", "poll")) is BrokerError


def test_connected_while_any_broker_connection_is_up():
    assert cc.any_broker_up('{"brokers": {"a": {"state": "DOWN"}, "b": {"state": "UP"}}}')
    assert not cc.any_broker_up('{"brokers": {"a": {"state": "CONNECT"}}}')
    assert not cc.any_broker_up("{}")


def config(**kw: Any) -> WorkerConfig:
    return WorkerConfig(kafka=KafkaSettings(bootstrap="h1:9092,h2:9092", **kw), redis=RedisSettings(),
                        group_id="g", start_from="earliest")  # fmt: skip


def test_offsets_move_only_through_commit_and_settings_carry_over():
    conf = cc.consumer_settings(config(sasl_mechanism="PLAIN", sasl_username="u", sasl_password="s3cret",
                                       security_protocol="SASL_SSL"), "group-of-the-caller")  # fmt: skip
    assert conf["enable.auto.commit"] is False and conf["enable.auto.offset.store"] is False
    assert conf["group.id"] == "group-of-the-caller" and conf["auto.offset.reset"] == "earliest"
    assert conf["bootstrap.servers"] == "h1:9092,h2:9092" and conf["security.protocol"] == "sasl_ssl"
    assert (conf["sasl.username"], conf["sasl.password"]) == ("u", "s3cret")


class FakeConsumer:
    """Stands in for confluent_kafka.Consumer: poll/consume hand out queued messages."""

    def __init__(self, conf: dict) -> None:
        self.conf = conf
        self.queue: list[Any] = []
        self.callbacks: dict[str, Any] = {}

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def poll(self, timeout: float) -> Optional[Any]:
        return self.queue.pop(0) if self.queue else None

    def consume(self, num_messages: int, timeout: float) -> list[Any]:
        got, self.queue = self.queue[:num_messages], self.queue[num_messages:]
        return got


def adapter(made: list, rebalances: Optional[Rebalances] = None) -> cc.ConfluentConsumer:
    def make(conf: dict) -> FakeConsumer:
        made.append(FakeConsumer(conf))
        return made[-1]

    return ConfluentClient(config(), make=make).consumer("g", "frames", rebalances or Rebalances())


def test_poll_takes_everything_held_in_order_and_skips_error_events():
    made: list[FakeConsumer] = []
    consumer = adapter(made)
    event = FakeMessage(error=ck.KafkaError(ck.KafkaError._TRANSPORT))
    made[0].queue = [FakeMessage(0), event, FakeMessage(1), FakeMessage(2)]
    got = consumer.poll(0.01)
    assert [(r.where, r.offset) for r in got] == [(Partition("frames", 1), i) for i in (0, 1, 2)]
    assert consumer.poll(0.01) == []


def test_fatal_error_event_raises_a_broker_error():
    made: list[FakeConsumer] = []
    consumer = adapter(made)
    made[0].queue = [FakeMessage(error=ck.KafkaError(ck.KafkaError._FATAL, fatal=True))]
    with pytest.raises(BrokerError):
        consumer.poll(0.01)


def test_rebalance_callbacks_feed_rebalances_and_the_assignment_any_thread_reads():
    rebalances = Rebalances()
    made: list[FakeConsumer] = []
    consumer = adapter(made, rebalances)
    cb = made[0].callbacks
    cb["on_assign"](None, [ck.TopicPartition("frames", 0), ck.TopicPartition("frames", 1)])
    cb["on_revoke"](None, [ck.TopicPartition("frames", 0)])
    assert rebalances.take() == ({Partition("frames", 0)}, {Partition("frames", 1)})
    assert consumer.assignment() == {Partition("frames", 1)}
    cb["on_lost"](None, [ck.TopicPartition("frames", 1)])
    assert rebalances.take() == ({Partition("frames", 1)}, set()) and consumer.assignment() == set()


def test_choosing_confluent_when_it_is_not_installed_says_how_to_install_it(monkeypatch):
    import builtins

    from worker.kafka_clients import client_for

    real = builtins.__import__

    def no_confluent(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "confluent_kafka":
            raise ImportError("No module named 'confluent_kafka'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_confluent)
    with pytest.raises(FramewatchError, match=r"pip install 'framewatch\[confluent\]'"):
        client_for(replace(config(), kafka_client="confluent"))


def test_client_chosen_by_flag_then_environment_default_kafka_python():
    from framewatch.settings import ConfigError, kafka_client
    from worker.kafka_clients import client_for

    assert kafka_client(None, {}) == "kafka-python"
    assert kafka_client(None, {"FRAMEWATCH_KAFKA_CLIENT": "confluent"}) == "confluent"
    assert kafka_client("kafka-python", {"FRAMEWATCH_KAFKA_CLIENT": "confluent"}) == "kafka-python"
    with pytest.raises(ConfigError, match="kafka-python, confluent"):
        kafka_client(None, {"FRAMEWATCH_KAFKA_CLIENT": "librdkafka"})
    with pytest.raises(FramewatchError, match="kafka_client"):
        WorkerConfig(kafka=KafkaSettings(), redis=RedisSettings(), kafka_client="rdkafka")
    assert client_for(config()).name == "kafka-python"
    assert client_for(replace(config(), kafka_client="confluent")).name == "confluent"


# -- the producer ----------------------------------------------------------------------------------
class FakeProducer:
    """confluent_kafka.Producer's produce/poll/flush: records wait for poll() to report their delivery."""

    def __init__(self, conf: dict, refuse: Optional[BaseException] = None) -> None:
        self.conf, self.refuse = conf, refuse
        self.queued: list[tuple[Any, Any]] = []
        self.fail_with: Optional[Any] = None  # a confluent KafkaError every delivery reports, while set

    def produce(
        self, topic: str, value: Any = None, key: Any = None, headers: Any = None, on_delivery: Any = None
    ) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.queued.append((on_delivery, (topic, key, value, headers)))

    def poll(self, timeout: float) -> int:
        done, self.queued = self.queued, []
        for callback, _msg in done:
            callback(self.fail_with, None)
        return len(done)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0


def producer_with(**fake: Any) -> tuple[Any, FakeProducer]:
    made: list[FakeProducer] = []
    client = ConfluentClient(
        config(), make=lambda conf: made.append(FakeProducer(conf, **fake)) or made[-1]
    )
    producer = client.producer(2 * 1024 * 1024)
    return producer, made[0]


def wait_for(condition: Any, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_outputs_are_acknowledged_by_the_delivery_thread_without_being_asked():
    producer, fake = producer_with()
    try:
        sent = [producer.send("scores", b"cam", b"{}", [("fw-frame-id", str(i).encode())]) for i in range(3)]
        assert wait_for(lambda: all(s.done() for s in sent))
        assert [s.error() for s in sent] == [None, None, None]
        assert [m[1] for m in fake.queued] == []  # all reported
        assert fake.conf["acks"] == "all" and fake.conf["message.max.bytes"] == 2 * 1024 * 1024
    finally:
        producer.close(1)


def test_a_failed_delivery_is_a_broker_error_to_retry_not_a_refusal():
    producer, fake = producer_with()
    fake.fail_with = ck.KafkaError(ck.KafkaError._MSG_TIMED_OUT)
    try:
        sent = producer.send("scores", b"cam", b"{}", [])
        assert wait_for(sent.done)
        assert type(sent.error()) is BrokerError and "_MSG_TIMED_OUT" in str(sent.error())
        fake.fail_with = None
        again = producer.send("scores", b"cam", b"{}", [])
        assert wait_for(again.done) and again.error() is None
    finally:
        producer.close(1)


def test_a_record_over_the_limit_is_refused_for_good():
    producer, fake = producer_with(refuse=ck.KafkaException(ck.KafkaError(ck.KafkaError.MSG_SIZE_TOO_LARGE)))
    try:
        with pytest.raises(SendRefused):
            producer.send("scores", None, b"x", [])
        fake.refuse, fake.fail_with = None, ck.KafkaError(ck.KafkaError.MSG_SIZE_TOO_LARGE)
        sent = producer.send("scores", None, b"x", [])  # refused by the broker, reported on delivery
        assert wait_for(sent.done) and isinstance(sent.error(), SendRefused)
    finally:
        producer.close(1)


def test_a_full_local_queue_is_a_broker_error_to_retry_not_a_refusal():
    producer, _fake = producer_with(refuse=BufferError("Local: Queue full"))
    try:
        with pytest.raises(BrokerError) as caught:
            producer.send("scores", None, b"x", [])
        assert not isinstance(caught.value, SendRefused)
    finally:
        producer.close(1)


def test_offsets_by_time_and_log_bounds_through_the_lookup():
    """What worker/start_position.py asks of either client: log bounds and the broker's offsets_for_times."""
    made: list[FakeConsumer] = []
    consumer = adapter(made)
    fake = made[0]
    fake.get_watermark_offsets = lambda part, timeout: (3, 40)  # type: ignore[attr-defined]
    fake.offsets_for_times = lambda parts, timeout: [  # type: ignore[attr-defined]
        ck.TopicPartition(p.topic, p.partition, 17 if p.partition == 0 else -1) for p in parts
    ]
    lookup = consumer.lookup()
    p0, p1 = Partition("frames", 0), Partition("frames", 1)
    assert lookup.bounds(p0) == (3, 40)
    assert (
        lookup.broker_answer(p0, 1_000) == 17 and lookup.broker_answer(p1, 1_000) is None
    )  # none that recent
    assert consumer.connected() is None  # no statistics yet: /readyz says "connecting", not "unreachable"
    lookup.close()
