"""The confluent-kafka adapter's pure parts: records, header keys that are not UTF-8, errors, settings.

No broker: confluent's messages are stood in for by small fakes (its ``Message``
cannot be built from Python); tests/integration/test_confluent_client.py runs
the real client against the embedded broker.
"""

from __future__ import annotations

import ctypes
from dataclasses import replace
from typing import Any, Optional

import kafka.errors as kerr
import pytest
from kafka import TopicPartition

from wire.errors import FramewatchError
from wire.records import FrameRecord
from wire.settings import KafkaSettings, RedisSettings
from worker import kafka_confluent as kc
from worker.config import WorkerConfig
from worker.kafka_io import Rebalance

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


def test_record_has_the_fields_the_worker_reads_from_kafka_python():
    rec = kc.record_of(FakeMessage(offset=7, headers=[("frame-id", b"f1")]))
    assert (rec.topic, rec.partition, rec.offset, rec.key, rec.value) == ("frames", 1, 7, b"cam", b"img")
    assert rec.headers == [("frame-id", b"f1")] and rec.timestamp == 1234
    assert kc.record_of(FakeMessage(headers=None, timestamp=(0, -1))).headers == []
    assert kc.record_of(FakeMessage(timestamp=(0, -1))).timestamp is None  # TIMESTAMP_NOT_AVAILABLE


def test_header_key_not_utf8_arrives_marked_and_the_frame_becomes_a_malformed_header_dead_letter():
    good = FrameRecord("f1", "cam", 0, 1.0, b"img", "image/png")
    _, value, headers = good.encode()
    msg = FakeMessage(headers=[*headers, pair_with_null_key(b"v")])
    rec = kc.record_of(msg)
    assert rec.headers[:-1] == headers, "the other headers are kept"
    assert rec.headers[-1] == (kc.UNREADABLE_KEY, b"v")
    with pytest.raises(Exception) as caught:
        FrameRecord.decode(rec.key, value, rec.headers, fallback_id="x", fallback_time=0.0)
    assert getattr(caught.value, "reason", None) == "malformed-header"


def test_header_with_null_value_becomes_empty_bytes():
    assert kc.headers_of(FakeMessage(headers=[("k", None)])) == [("k", b"")]


@pytest.mark.parametrize(
    "code, expected",
    [
        ("ILLEGAL_GENERATION", kerr.CommitFailedError),
        ("REBALANCE_IN_PROGRESS", kerr.CommitFailedError),
        ("_TIMED_OUT", kerr.KafkaTimeoutError),
        ("_TRANSPORT", kerr.KafkaConnectionError),
        ("_ALL_BROKERS_DOWN", kerr.KafkaConnectionError),
        ("COORDINATOR_NOT_AVAILABLE", kerr.CoordinatorNotAvailableError),
        ("_FAIL", kerr.KafkaError),
    ],
)
def test_client_errors_become_kafka_python_errors_the_loop_handles(code, expected):
    mapped = kc.kafka_error(ck.KafkaError(getattr(ck.KafkaError, code)), "commit")
    assert type(mapped) is expected and isinstance(mapped, kerr.KafkaError)
    assert "commit: " in str(mapped)
    assert isinstance(kc.kafka_error("plain text", "poll"), kerr.KafkaError)


def test_connected_while_any_broker_connection_is_up():
    assert kc.any_broker_up('{"brokers": {"a": {"state": "DOWN"}, "b": {"state": "UP"}}}')
    assert not kc.any_broker_up('{"brokers": {"a": {"state": "CONNECT"}}}')
    assert not kc.any_broker_up("{}")


def config(**kw: Any) -> WorkerConfig:
    return WorkerConfig(kafka=KafkaSettings(bootstrap="h1:9092,h2:9092", **kw), redis=RedisSettings(),
                        group_id="g", start_from="earliest")  # fmt: skip


def test_offsets_move_only_through_commit_and_settings_carry_over():
    conf = kc.config_of(config(sasl_mechanism="PLAIN", sasl_username="u", sasl_password="s3cret",
                               security_protocol="SASL_SSL"))  # fmt: skip
    assert conf["enable.auto.commit"] is False and conf["enable.auto.offset.store"] is False
    assert conf["group.id"] == "g" and conf["auto.offset.reset"] == "earliest"
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


def adapter(fake_holder: list) -> kc.ConfluentConsumer:
    def make(conf: dict) -> FakeConsumer:
        fake_holder.append(FakeConsumer(conf))
        return fake_holder[-1]

    return kc.ConfluentConsumer(config(), "frames", Rebalance(), make=make)


def test_poll_groups_by_partition_and_skips_error_events():
    made: list[FakeConsumer] = []
    consumer = adapter(made)
    event = FakeMessage(error=ck.KafkaError(ck.KafkaError._TRANSPORT))
    made[0].queue = [FakeMessage(0), event, FakeMessage(1), FakeMessage(2)]
    got = consumer.poll(timeout_ms=10, max_records=3)
    assert [r.offset for r in got[TopicPartition("frames", 1)]] == [0, 1]
    assert [r.offset for r in consumer.poll(timeout_ms=10, max_records=3)[TopicPartition("frames", 1)]] == [2]
    assert consumer.poll(timeout_ms=10) == {}


def test_fatal_error_event_raises_a_kafka_error():
    made: list[FakeConsumer] = []
    consumer = adapter(made)
    made[0].queue = [FakeMessage(error=ck.KafkaError(ck.KafkaError._FATAL, fatal=True))]
    with pytest.raises(kerr.KafkaError):
        consumer.poll(timeout_ms=10)


def test_rebalance_callbacks_feed_the_loops_recorder():
    listener = Rebalance()
    made: list[FakeConsumer] = []
    kc.ConfluentConsumer(
        config(), "frames", listener, make=lambda conf: made.append(FakeConsumer(conf)) or made[-1]
    )
    cb = made[0].callbacks
    cb["on_assign"](None, [ck.TopicPartition("frames", 0), ck.TopicPartition("frames", 1)])
    cb["on_revoke"](None, [ck.TopicPartition("frames", 0)])
    assert listener.take() == ({TopicPartition("frames", 0)}, {TopicPartition("frames", 1)})


def test_choosing_confluent_when_it_is_not_installed_says_how_to_install_it(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_confluent(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "confluent_kafka":
            raise ImportError("No module named 'confluent_kafka'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_confluent)
    with pytest.raises(FramewatchError, match=r"pip install 'framewatch\[confluent\]'"):
        kc.require()


def test_client_chosen_by_flag_then_environment_default_kafka_python():
    from framewatch.settings import ConfigError, kafka_client

    assert kafka_client(None, {}) == "kafka-python"
    assert kafka_client(None, {"FRAMEWATCH_KAFKA_CLIENT": "confluent"}) == "confluent"
    assert kafka_client("kafka-python", {"FRAMEWATCH_KAFKA_CLIENT": "confluent"}) == "kafka-python"
    with pytest.raises(ConfigError, match="kafka-python, confluent"):
        kafka_client(None, {"FRAMEWATCH_KAFKA_CLIENT": "librdkafka"})
    with pytest.raises(FramewatchError, match="kafka_client"):
        WorkerConfig(kafka=KafkaSettings(), redis=RedisSettings(), kafka_client="rdkafka")


# -- the producer: the outbox's interface over librdkafka ------------------------------------------
class FakeProducer:
    """confluent_kafka.Producer's produce/poll/flush: records wait for poll() to report their delivery."""

    def __init__(self, conf: dict, refuse: Optional[BaseException] = None) -> None:
        self.conf, self.refuse = conf, refuse
        self.queued: list[tuple[Any, Any]] = []
        self.fail_with: Optional[Any] = None  # a confluent KafkaError every delivery reports, while set

    def produce(self, topic: str, value: Any = None, key: Any = None, headers: Any = None, on_delivery: Any = None) -> None:
        if self.refuse is not None:
            raise self.refuse
        self.queued.append((on_delivery, (topic, key, value, headers)))

    def poll(self, timeout: float) -> int:
        done, self.queued = self.queued, []
        for callback, _msg in done:
            callback(self.fail_with, None)
        return len(done)

    def flush(self, timeout: float) -> int:
        return 0 if self.poll(0) >= 0 else 0


def producer_with(**fake: Any) -> tuple[Any, FakeProducer]:
    from worker.kafka_confluent_producer import ConfluentProducer

    made: list[FakeProducer] = []
    producer = ConfluentProducer(config(), 2 * 1024 * 1024, make=lambda conf: made.append(FakeProducer(conf, **fake)) or made[-1])
    return producer, made[0]


def test_outputs_through_the_confluent_producer_are_acknowledged_by_the_outbox():
    from worker.outbox import Outbox, Output

    producer, fake = producer_with()
    box = Outbox(lambda: producer)
    try:
        for i in range(3):
            box.send(Output("scores", b"cam", b"{}", [("fw-frame-id", str(i).encode())]))
        assert wait_for(lambda: bool(box.collect() or True) and box.pending() == 0)
        assert box.pending() == 0 and box.failing() is None
        assert fake.conf["acks"] == "all" and fake.conf["message.max.bytes"] == 2 * 1024 * 1024
    finally:
        producer.close(timeout=1)


def test_a_failed_delivery_holds_the_outbox_and_is_sent_again_once_the_broker_answers():
    from worker.outbox import Outbox, Output

    producer, fake = producer_with()
    fake.fail_with = ck.KafkaError(ck.KafkaError._MSG_TIMED_OUT)
    box = Outbox(lambda: producer, retry_s=0.0)
    try:
        box.send(Output("scores", b"cam", b"{}"))
        assert wait_for(lambda: box.collect() == [] and box.failing() is not None)
        assert "KafkaTimeoutError" in (box.failing() or "")
        fake.fail_with = None
        assert wait_for(lambda: bool(box.collect() or True) and box.pending() == 0)
        assert box.pending() == 0 and box.failing() is None
    finally:
        producer.close(timeout=1)


def test_a_record_over_the_limit_is_refused_for_good_and_replaced_by_its_fallback():
    from worker.outbox import Outbox, Output

    producer, fake = producer_with(refuse=ck.KafkaException(ck.KafkaError(ck.KafkaError.MSG_SIZE_TOO_LARGE)))
    with pytest.raises(kerr.MessageSizeTooLargeError):
        producer.send("scores", value=b"x")
    box = Outbox(lambda: producer)
    small = Output("dlq", None, b"", [("fw-error-reason", b"output-refused")])
    box.send(Output("scores", b"cam", b"x" * 100, fallback=lambda why: small))
    fake.refuse = None
    try:
        assert wait_for(lambda: [o.topic for o in box.collect()] == ["dlq"])
        assert box.replaced == 1
    finally:
        producer.close(timeout=1)


def test_a_full_local_queue_is_a_timeout_to_retry_not_a_refusal():
    producer, _fake = producer_with(refuse=BufferError("Local: Queue full"))
    try:
        with pytest.raises(kerr.KafkaTimeoutError):
            producer.send("scores", value=b"x")
    finally:
        producer.close(timeout=1)


def test_the_worker_sends_through_the_client_it_consumes_with():
    from worker.kafka_confluent_producer import ConfluentProducer
    from worker.kafka_io import make_producer

    producer = make_producer(replace(config(), kafka_client="confluent"))
    try:
        assert isinstance(producer, ConfluentProducer)
    finally:
        producer.close(timeout=0)


def wait_for(condition: Any, timeout_s: float = 5.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_offsets_by_time_and_log_bounds_in_kafka_pythons_shape():
    """What worker/start_position.py asks of either client: log bounds and the broker's offsets_for_times."""
    ck = pytest.importorskip("confluent_kafka")
    made: list[FakeConsumer] = []
    consumer = adapter(made)
    fake = made[0]
    fake.get_watermark_offsets = lambda part, timeout: (3, 40)  # type: ignore[attr-defined]
    fake.offsets_for_times = lambda parts, timeout: [  # type: ignore[attr-defined]
        ck.TopicPartition(p.topic, p.partition, 17 if p.partition == 0 else -1) for p in parts
    ]
    tp0, tp1 = TopicPartition("frames", 0), TopicPartition("frames", 1)
    assert consumer.beginning_offsets([tp0]) == {tp0: 3} and consumer.end_offsets([tp0]) == {tp0: 40}
    found = consumer.offsets_for_times({tp0: 1_000, tp1: 1_000})
    assert found[tp0] is not None and found[tp0].offset == 17 and found[tp1] is None  # none that recent
    assert consumer.connected() is None  # no statistics yet: /readyz says "connecting", not "unreachable"
