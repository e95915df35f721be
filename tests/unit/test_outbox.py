"""worker.outbox.Outbox with a producer double: an output leaves only acknowledged, failures are retried
one probe at a time, an output the broker refuses for good is replaced by its fallback."""

from __future__ import annotations

from worker.kafka_port import BrokerError, SendRefused
from worker.outbox import Outbox, Output


class Future:
    """A ``kafka_port.Sent`` the test resolves."""

    def __init__(self) -> None:
        self._done = False
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._done

    def error(self) -> BaseException | None:
        return self._error

    def resolve(self, error: BaseException | None = None) -> None:
        self._done, self._error = True, error


class Producer:
    """Records each send; ``refuse`` makes send() raise at once (no broker metadata, or a refusal)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, Future]] = []
        self.refuse: BaseException | None = None

    def send(self, topic, key, value, headers):  # type: ignore[no-untyped-def]
        if self.refuse is not None:
            raise self.refuse
        fut = Future()
        self.sent.append((topic, value, fut))
        return fut

    def close(self, timeout_s):  # type: ignore[no-untyped-def]
        pass


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def out(value: bytes, offset: int = 0, fallback=None) -> Output:  # type: ignore[no-untyped-def]
    return Output("scores", b"k", value, [], ("p0", offset), "score", "idx", fallback)


def test_outputs_leave_only_when_acknowledged():
    producer, clock = Producer(), Clock()
    box = Outbox(lambda: producer, clock)
    box.send(out(b"a", 0))
    box.send(out(b"b", 1))
    assert box.collect() == [] and box.pending() == 2
    producer.sent[1][2].resolve()
    assert [o.value for o in box.collect()] == [b"b"] and box.pending() == 1


def test_while_failing_nothing_new_is_handed_over_and_one_probe_retries():
    producer, clock = Producer(), Clock()
    box = Outbox(lambda: producer, clock, retry_s=1.0, renew_after_s=1e9)
    box.send(out(b"a", 0))
    producer.sent[0][2].resolve(BrokerError("broker down"))
    box.collect()
    assert box.failing() is not None
    box.send(out(b"b", 1))
    box.send(out(b"c", 2))
    assert len(producer.sent) == 1  # held back while failing
    clock.now += 1.5
    box.collect()
    assert [v for _, v, _ in producer.sent] == [b"a", b"a"]  # one probe: the oldest
    producer.sent[-1][2].resolve()
    acked = box.collect()
    assert [o.value for o in acked] == [b"a"] and box.failing() is None
    assert sorted(v for _, v, _ in producer.sent[2:]) == [b"b", b"c"]  # everything waiting goes out


def test_an_output_refused_for_good_is_replaced_by_its_fallback_not_retried_forever():
    producer, clock = Producer(), Clock()
    box = Outbox(lambda: producer, clock)
    small = Output("dlq", None, b"stub", [], None, "dead-letter", "output-refused")
    producer.refuse = SendRefused("too big")
    box.send(out(b"x" * 100, 5, fallback=lambda why: small))
    producer.refuse = None
    box.collect()
    assert [(t, v) for t, v, _ in producer.sent] == [("dlq", b"stub")]
    producer.sent[0][2].resolve()
    (done,) = box.collect()
    assert done.kind == "dead-letter" and done.token == ("p0", 5) and box.replaced == 1
