"""Where a partition without a committed offset starts (worker/start_position.py), on a log held in memory."""

from __future__ import annotations

import time
from typing import Optional

import pytest

from worker.start_position import StartPosition, first_offset_since, process_started_at


class Log:
    """A partition: record offsets (gaps allowed) and their timestamps; counts the records read."""

    def __init__(self, stamps: dict[int, int], broker: Optional[int] = None) -> None:
        self.stamps, self.broker, self.reads = stamps, broker, 0

    def bounds(self, tp: object) -> tuple[int, int]:
        return min(self.stamps, default=0), max(self.stamps, default=-1) + 1

    def broker_answer(self, tp: object, timestamp_ms: int) -> Optional[int]:
        return self.broker

    def first_at(self, tp: object, offset: int) -> Optional[tuple[int, int]]:
        self.reads += 1
        later = [o for o in self.stamps if o >= offset]
        return (min(later), self.stamps[min(later)]) if later else None

    def close(self) -> None:
        pass


def log_of(n_old: int, n_new: int, start_ms: int, broker: Optional[int] = None, first: int = 0) -> Log:
    stamps = {first + i: start_ms - 3_600_000 + i for i in range(n_old)}
    stamps.update({first + n_old + i: start_ms + 10 + i for i in range(n_new)})
    return Log(stamps, broker)


# the broker's offsets_for_times answer: none, wrong ones (Tansu answers 0 whatever the time), the right one
@pytest.mark.parametrize("broker", [None, 0, 3, 250, 10_000])
def test_latest_starts_at_the_first_frame_since_the_start_whatever_the_broker_answers(broker):
    start = StartPosition("latest", started_at=1_000_000.0, slack_s=0)
    log = log_of(250, 40, 1_000_000_000, broker, first=7)
    found = start.find("tp", log)
    assert (found.offset, found.skipped) == (7 + 250, 250)
    assert log.reads <= 2 * 10 + 2  # a binary search, not a scan


def test_a_right_broker_answer_costs_two_reads():
    log = log_of(250, 40, 1_000_000_000, broker=250)
    assert StartPosition("latest", 1_000_000.0, 0).find("tp", log).offset == 250
    assert log.reads == 2


def test_slack_takes_in_frames_published_just_before_the_start():
    stamps = {0: 990_000_000, 1: 999_000_000, 2: 999_999_000, 3: 1_000_001_000}
    assert StartPosition("latest", 1_000_000.0, slack_s=5).find("tp", Log(stamps)).offset == 2


def test_nothing_since_the_start_means_the_end_and_everything_there_skipped():
    found = StartPosition("latest", 1_000_000.0, 0).find("tp", log_of(30, 0, 1_000_000_000, broker=0))
    assert (found.offset, found.skipped) == (30, 30)


def test_an_empty_partition_and_earliest_skip_nothing():
    assert StartPosition("latest", 1_000_000.0).find("tp", Log({})).skipped == 0
    found = StartPosition("earliest", 1_000_000.0).find("tp", log_of(30, 5, 1_000_000_000, first=4))
    assert (found.offset, found.skipped, found.since_ms) == (4, 0, None)


def test_gaps_in_the_offsets_are_searched_over():
    stamps = {0: 1, 5: 2, 9: 3, 20: 2_000_000_000, 21: 2_000_000_001}
    log = Log(stamps)
    found = first_offset_since(1_000_000_000, 0, 22, lambda o: log.first_at("tp", o))
    # the first record read from there is the first new one
    assert log.first_at("tp", found) == (20, 2_000_000_000)


def test_the_process_start_is_before_now_and_recent():
    started = process_started_at()
    assert time.time() - 3600 < started <= time.time()
