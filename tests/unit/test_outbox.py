"""worker.kafka_io.Outbox with a fake producer: nothing acknowledged is forgotten, nothing pending is sent twice."""

from __future__ import annotations

from typing import Any, Optional

import pytest
from kafka.errors import KafkaError, KafkaTimeoutError

from worker.kafka_io import Outbox


class FakeFuture:
    def __init__(self, outcome: Optional[Exception] = None, done: bool = True) -> None:
        self.outcome, self.is_done = outcome, done

    def get(self, timeout: float = 0.0) -> Any:
        if not self.is_done:
            raise KafkaTimeoutError("still waiting")
        if self.outcome is not None:
            raise self.outcome
        return "metadata"


class FakeProducer:
    """Each send takes the next planned future (default: acknowledged)."""

    def __init__(self, plan: Optional[list[Any]] = None) -> None:
        self.plan = list(plan or [])
        self.sent: list[bytes] = []
        self.closed = False

    def send(self, topic: str, key: Any = None, value: Any = None, headers: Any = None) -> Any:
        self.sent.append(value)
        step = self.plan.pop(0) if self.plan else FakeFuture()
        if isinstance(step, Exception):
            raise step
        return step

    def flush(self, timeout: float = 0.0) -> None:
        pass

    def close(self, timeout: float = 0.0) -> None:
        self.closed = True


def test_acknowledged_records_are_forgotten():
    outbox = Outbox(FakeProducer())  # type: ignore[arg-type]
    for i in range(3):
        outbox.send("scores", b"k", b"%d" % i)
    outbox.confirm(timeout_s=0.1)
    assert outbox.pending() == 0


def test_failed_records_are_resent_pending_ones_are_not():
    pending = FakeFuture(done=False)
    producer = FakeProducer([FakeFuture(), FakeFuture(KafkaError("broker said no")), pending])
    outbox = Outbox(producer)  # type: ignore[arg-type]
    for value in (b"ok", b"failed", b"pending"):
        outbox.send("scores", None, value)
    with pytest.raises(KafkaError):
        outbox.confirm(timeout_s=0.1)
    assert outbox.pending() == 2
    outbox.resend()
    assert producer.sent == [b"ok", b"failed", b"pending", b"failed"]  # the pending one is left to the producer
    pending.is_done = True
    outbox.confirm(timeout_s=0.1)
    assert outbox.pending() == 0


def test_a_send_that_raises_is_kept_for_another_try():
    producer = FakeProducer([KafkaTimeoutError("no metadata"), RuntimeError("unexpected")])
    outbox = Outbox(producer)  # type: ignore[arg-type]
    outbox.send("scores", None, b"a")
    outbox.send("scores", None, b"b")
    with pytest.raises(KafkaError):
        outbox.confirm(timeout_s=0.1)
    assert outbox.pending() == 2
    outbox.resend()
    outbox.confirm(timeout_s=0.1)
    assert outbox.pending() == 0 and producer.sent == [b"a", b"b", b"a", b"b"]


def test_renew_sends_everything_unacknowledged_through_the_new_producer():
    stuck = FakeProducer([FakeFuture(done=False), FakeFuture(KafkaError("fatal"))])
    outbox = Outbox(stuck)  # type: ignore[arg-type]
    outbox.send("scores", None, b"a")
    outbox.send("frames.dlq", None, b"b")
    with pytest.raises(KafkaError):
        outbox.confirm(timeout_s=0.1)
    fresh = FakeProducer()
    outbox.renew(fresh)  # type: ignore[arg-type]
    assert stuck.closed and fresh.sent == [b"a", b"b"]
    outbox.confirm(timeout_s=0.1)
    assert outbox.pending() == 0
