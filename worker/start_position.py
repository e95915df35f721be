"""Where a partition without a committed offset starts: "from when the worker started".

A group's commits say where each partition resumes. A partition without one
(a brand-new group, a partition never consumed, commits expired) needs a start.
Kafka's own answer for ``--start-from latest`` is the end of the log *when the
group joins*, and a worker joins tens of seconds after it starts (torch import,
index load, embedder build): every frame published meanwhile was skipped, with
lag 0 and /readyz 200. Here the start is pinned to the worker process's start
time instead: the first record whose timestamp is at or after it (less
``SLACK_S`` for producer clocks a little behind), whenever such a partition is
assigned, at start-up or at any later rebalance. The loop then commits that
offset at once, so a later owner of the partition resumes there rather than
from its own start (worker/intake.py).

Record timestamps decide (the producer's clock for CreateTime topics, the
broker's for LogAppendTime). A producer whose clock runs more than ``SLACK_S``
behind can have frames published after the start placed before it; they are
counted as skipped like any other.

Finding the offset: the broker's ``offsets_for_times`` answer is taken when two
record reads confirm it (some Kafka-protocol brokers answer the earliest
offset whatever the time); otherwise a binary search over record timestamps
finds it, one record read per step. Both happen only when a partition without
a committed offset is assigned.

``--start-from earliest`` starts such a partition at its first record: nothing
is skipped.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

from worker.kafka_port import OffsetLookup, Partition

log = logging.getLogger(__name__)

SLACK_S = 5.0
RecordAt = Optional[
    tuple[int, int]
]  # (offset, timestamp ms) of the first record at or after an offset; None: none


@dataclass(frozen=True)
class Start:
    offset: int
    skipped: int  # records of the log before ``offset``: never scored by this group
    since_ms: Optional[int]  # the time pinned (None for earliest)


def process_started_at(now: Callable[[], float] = time.time) -> float:
    """This process's start (seconds since the epoch), from /proc; ``now()`` where /proc does not say."""
    try:
        with open("/proc/self/stat", encoding="ascii") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime: ticks after boot
        with open("/proc/stat", encoding="ascii") as f:
            boot = next(int(line.split()[1]) for line in f if line.startswith("btime "))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return now()


def first_offset_since(target_ms: int, low: int, high: int, first_at: Callable[[int], RecordAt],
                       hint: Optional[int] = None) -> int:  # fmt: skip
    """The offset of the first record in [low, high) with timestamp >= ``target_ms``; ``high`` if none.

    Timestamps are taken as non-decreasing along the log (one producer clock per partition, or the
    broker's). ``hint`` (the broker's answer) is returned when the records around it confirm it.
    """
    if high <= low:
        return high
    if hint is not None and hint <= high and _confirmed(target_ms, low, hint, first_at):
        return max(hint, low)
    lo, hi = low, high
    while lo < hi:
        mid = (lo + hi) // 2
        found = first_at(mid)
        if found is None or found[1] >= target_ms:
            hi = mid
        else:
            lo = found[0] + 1
    return min(lo, hi)


def _confirmed(target_ms: int, low: int, offset: int, first_at: Callable[[int], RecordAt]) -> bool:
    """The record at ``offset`` is at or after the target and the one before it is not."""
    offset = max(offset, low)
    at = first_at(offset)
    if at is not None and at[1] < target_ms:
        return False
    if offset == low:
        return True
    before = first_at(offset - 1)
    return before is None or before[0] >= offset or before[1] < target_ms


class StartPosition:
    """Where to start a partition without a committed offset (see the module docstring)."""

    def __init__(self, start_from: str, started_at: float, slack_s: float = SLACK_S) -> None:
        self.start_from, self.started_at, self.slack_s = start_from, started_at, slack_s

    def find(self, tp: Partition, lookup: OffsetLookup) -> Start:
        """:raises BrokerError: the broker could not be asked."""
        low, high = lookup.bounds(tp)
        if self.start_from == "earliest":
            return Start(low, 0, None)
        since_ms = int((self.started_at - self.slack_s) * 1000)
        offset = first_offset_since(since_ms, low, high, lambda o: lookup.first_at(tp, o),
                                    lookup.broker_answer(tp, since_ms))  # fmt: skip
        return Start(offset, offset - low, since_ms)
