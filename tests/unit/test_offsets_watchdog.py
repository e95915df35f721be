"""The offset tracker and the progress watchdog: pure logic, no Kafka, a fake clock."""

from __future__ import annotations

from worker.offsets import OffsetTracker
from worker.watchdog import Watchdog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_commit_never_passes_an_unacknowledged_frame_whatever_the_ack_order():
    t = OffsetTracker()
    for off in range(10, 15):
        t.opened("p0", off)
    assert t.committable() == {"p0": 10}
    for off in (13, 11, 14):
        t.closed("p0", off)
    assert t.committable() == {"p0": 10}  # 10 and 12 still open
    t.closed("p0", 10)
    assert t.committable() == {"p0": 12}
    t.committed({"p0": 12})
    assert t.committable() == {}  # nothing new to commit
    t.closed("p0", 12)
    assert t.committable() == {"p0": 15}  # all closed: one past the highest seen


def test_partitions_are_independent_and_revoked_ones_are_forgotten():
    t = OffsetTracker()
    t.opened("a", 0)
    t.opened("b", 7)
    t.closed("b", 7)
    assert t.committable() == {"a": 0, "b": 8}
    t.forget(["a"])
    t.closed("a", 0)  # an acknowledgement arriving after the revoke is ignored
    assert t.committable() == {"b": 8}
    assert t.open_count() == 0


def test_watchdog_reports_a_call_that_never_returns():
    clock = Clock()
    dog = Watchdog(stall_after_s=30, clock=clock)
    with dog.calling("score"):
        clock.now += 29
        assert dog.check() is None
        clock.now += 2
        stall = dog.check()
        assert stall is not None and stall.reason == "loop-stuck" and "score" in stall.detail
    assert dog.check() is None


def test_watchdog_reports_lag_without_consumption_but_not_a_deliberate_hold():
    clock = Clock()
    dog = Watchdog(stall_after_s=30, clock=clock)
    dog.assigned(["p0", "p1"])
    dog.lag({"p0": 0, "p1": 50})
    clock.now += 31
    stall = dog.check()
    assert stall is not None and stall.reason == "no-progress" and "lag 50" in stall.detail
    dog.holding()  # e.g. no index yet: that is reported as itself, not as a stall
    assert dog.check() is None
    clock.now += 10
    dog.consumed("p1")
    clock.now += 25
    assert dog.check() is None
    dog.revoked(["p1"])
    clock.now += 100
    assert dog.check() is None  # a partition that moved away is not ours to watch
