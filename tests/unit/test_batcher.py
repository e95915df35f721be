"""Dynamic batching rules, with an injected clock (no sleeping)."""

from __future__ import annotations

from worker.batcher import Batcher


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_batch_is_ready_when_full():
    b = Batcher(max_size=3, max_wait_s=10, clock=Clock())
    for i in range(2):
        b.add(i)
    assert not b.ready()
    b.add(2)
    assert b.ready() and b.take() == [0, 1, 2] and len(b) == 0


def test_batch_is_ready_at_the_deadline_of_its_oldest_item():
    clock = Clock()
    b = Batcher(max_size=8, max_wait_s=0.5, clock=clock)
    assert not b.ready()  # empty is never ready
    b.add("a")
    clock.t += 0.3
    b.add("b")
    assert not b.ready() and abs(b.time_left() - 0.2) < 1e-9
    clock.t += 0.2
    assert b.ready() and b.take() == ["a", "b"]


def test_past_its_deadline_a_partial_batch_keeps_filling_while_another_is_queued_ahead_of_it():
    """The queued batch runs first anyway: going now would only make this one smaller (and the next)."""
    clock = Clock()
    b = Batcher(max_size=4, max_wait_s=0.5, clock=clock)
    b.add("a")
    clock.t += 1.0
    assert b.ready() and not b.ready(queued_ahead=1)
    b.add("b")
    assert not b.ready(queued_ahead=1) and b.ready(queued_ahead=0)  # the one ahead started: this one goes
    b.add("c")
    b.add("d")
    assert b.ready(queued_ahead=1)  # full: it goes whatever is queued


def test_take_returns_at_most_max_size_and_restarts_the_clock_for_the_rest():
    clock = Clock()
    b = Batcher(max_size=2, max_wait_s=1.0, clock=clock)
    for i in range(5):
        b.add(i)
    assert b.take() == [0, 1]
    assert b.ready()  # still full
    assert b.take() == [2, 3]
    assert not b.ready() and b.time_left() == 1.0
    clock.t += 1.0
    assert b.take() == [4]


def test_drop_removes_items_of_revoked_partitions():
    b = Batcher(max_size=10, max_wait_s=1.0, clock=Clock())
    for i in range(6):
        b.add(i)
    assert b.drop(lambda i: i % 2 == 0) == [1, 3, 5]
    assert b.items == [0, 2, 4]
