"""Deliver alerts: one lane (thread and queue) per sink, so a hanging or failing sink slows no other.

A lane tries the oldest alert it holds; on failure it backs off exponentially
and tries again, until the alert has waited ``retry_for_s``; then, or at once
for an answer retrying cannot fix, the alert goes to the alert dead-letter
topic. Nothing is dropped silently: an alert is *settled* when a sink took it
or its dead letter was acknowledged, and the consumer commits a record's offset
only once every sink has settled its alert. The consumer only enqueues, so no
sink can hold it past its poll interval.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from alerting.config import RetryConfig
from alerting.dead_letters import BACKLOG_FULL, REFUSED, RETRY_TIME_EXCEEDED, AlertDeadLetter
from alerting.metrics import AlertMetrics
from alerting.sinks import Alert, DeliveryFailed, Sink

log = logging.getLogger(__name__)

DeadLetterFn = Callable[[AlertDeadLetter], None]  # publishes and waits for the ack; raises on failure


@dataclass
class _Held:
    alert: Alert
    done: Callable[[], None]
    deadline: float  # monotonic: dead-lettered when still undelivered at this time
    attempts: int = 0
    first_attempt_at: float = 0.0
    last_error: str = field(default="")


class _Latch:
    """Calls ``done`` once ``n`` sinks have settled an alert."""

    def __init__(self, n: int, done: Callable[[], None]) -> None:
        self._n, self._done, self._lock = n, done, threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self._n -= 1
            last = self._n == 0
        if last:
            self._done()


class SinkLane:
    def __init__(
        self, sink: Sink, cfg: RetryConfig, metrics: AlertMetrics, dead_letter: DeadLetterFn,
        clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.sink, self.cfg, self.metrics, self._dead_letter = sink, cfg, metrics, dead_letter
        self.clock, self.wall = clock, wall
        self._inbox: queue.SimpleQueue[Optional[_Held]] = queue.SimpleQueue()
        self._held: deque[_Held] = deque()
        self._next_try, self._backoff = 0.0, cfg.first_backoff_s
        self._last_error = ""  # the sink's latest failure, for alerts that expire before their own try
        self._close_by: Optional[float] = None
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"alert-{sink.name}", daemon=True)

    def start(self) -> "SinkLane":
        self._thread.start()
        return self

    def submit(self, alert: Alert, done: Callable[[], None]) -> None:
        """Never blocks: the consumer thread calls this."""
        self._inbox.put(_Held(alert, done, self.clock() + self.cfg.retry_for_s))

    def backlog(self) -> int:
        return len(self._held) + self._inbox.qsize()

    def close(self, deadline: float) -> None:
        """Stop taking new work; keep trying what is held until ``deadline`` (monotonic), then leave it
        unsettled (uncommitted, so it is read again after a restart)."""
        self._close_by = deadline
        self._closing.set()
        self._inbox.put(None)

    def join(self, timeout: float) -> None:
        self._thread.join(max(0.0, timeout))

    # -- the lane's thread ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            now = self.clock()
            if self._closing.is_set() and (not self._held or now >= (self._close_by or now)):
                return
            self._expire(now)
            if not self._held:
                self._wait(None)
            elif now < self._next_try:
                self._wait(min(self._next_try, self._held[0].deadline))
            else:
                self._attempt(self._held[0])

    def _wait(self, until: Optional[float]) -> None:
        """Block until ``until`` (monotonic; None = no limit) or new work arrives, whichever comes first."""
        if self._close_by is not None:
            until = self._close_by if until is None else min(until, self._close_by)
        timeout = None if until is None else max(0.0, until - self.clock())
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return
        self._take(item)
        while True:  # everything else that is waiting, without blocking
            try:
                self._take(self._inbox.get_nowait())
            except queue.Empty:
                return

    def _take(self, item: Optional[_Held]) -> None:
        if item is None:
            return
        if len(self._held) >= self.cfg.backlog:
            self._give_up(item, BACKLOG_FULL, f"{self.sink.name} already holds {len(self._held)} alerts")
        else:
            self._held.append(item)

    def _expire(self, now: float) -> None:
        while self._held and self._held[0].deadline <= now:  # held in arrival order: deadlines ascend
            item = self._held.popleft()
            detail = item.last_error or f"not tried in time; the sink's last error: {self._last_error or '-'}"
            self._give_up(item, RETRY_TIME_EXCEEDED, detail)

    def _attempt(self, item: _Held) -> None:
        item.attempts += 1
        item.first_attempt_at = item.first_attempt_at or self.wall()
        try:
            self.sink.send(item.alert)
        except DeliveryFailed as e:
            item.last_error = self._last_error = str(e)
            if not e.retryable:
                self._held.popleft()
                self._give_up(item, REFUSED, item.last_error)
                return
            self.metrics.retries.labels(self.sink.name).inc()
            log.warning("alert for frame %s: %s failed (%s), next try in %.1fs; %d alert(s) waiting",
                        item.alert.key, self._target(), e, self._backoff, len(self._held))  # fmt: skip
            self._next_try = self.clock() + self._backoff
            self._backoff = min(self._backoff * 2, self.cfg.max_backoff_s)
            return
        self._held.popleft()
        self._next_try, self._backoff = 0.0, self.cfg.first_backoff_s
        self.metrics.delivered.labels(self.sink.name).inc()
        item.done()

    def _give_up(self, item: _Held, reason: str, detail: str) -> None:
        letter = AlertDeadLetter(sink=self.sink.name, target=self._target(), reason=reason, detail=detail,
                                 attempts=item.attempts, first_attempt_at=item.first_attempt_at,
                                 dead_lettered_at=self.wall(), source=item.alert.source,
                                 alert=item.alert.to_dict())  # fmt: skip
        backoff = self.cfg.first_backoff_s
        while True:
            try:
                self._dead_letter(letter)
                break
            except Exception as e:  # noqa: BLE001 - a broker error of any kind: keep it, try again
                self.metrics.dead_letter_errors.inc()
                log.error("alert for frame %s (%s) could not be dead-lettered: %s: %s; trying again in %.1fs",
                          item.alert.key, self.sink.name, type(e).__name__, e, backoff)  # fmt: skip
                if self._closing.wait(backoff):
                    return  # stopping: left unsettled, so its record is read again after a restart
                backoff = min(backoff * 2, self.cfg.max_backoff_s)
        self.metrics.dead_lettered.labels(self.sink.name, reason).inc()
        log.error("alert for frame %s not delivered to %s after %d attempt(s) (%s: %s): sent to the alert "
                  "dead-letter topic", item.alert.key, self._target(), item.attempts, reason, detail)  # fmt: skip
        item.done()

    def _target(self) -> str:
        target = getattr(self.sink, "target", None)
        return f"{self.sink.name} {target()}" if callable(target) else self.sink.name


class Delivery:
    """Every sink's lane; ``submit`` hands an alert to all of them and reports when all have settled it."""

    def __init__(
        self, sinks: Sequence[Sink], cfg: RetryConfig, metrics: AlertMetrics, dead_letter: DeadLetterFn,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        if not sinks:
            raise ValueError("at least one sink")
        self.clock = clock
        self.lanes = [SinkLane(s, cfg, metrics, dead_letter, clock) for s in sinks]
        for name in {s.name for s in sinks}:
            metrics.backlog.labels(name).set_function(self._backlog_of(name))

    def _backlog_of(self, name: str) -> Callable[[], float]:
        same = [lane for lane in self.lanes if lane.sink.name == name]
        return lambda: float(sum(lane.backlog() for lane in same))

    def start(self) -> "Delivery":
        for lane in self.lanes:
            lane.start()
        return self

    def submit(
        self, alert: Alert, done: Callable[[], None], to: Optional[Callable[[Sink], bool]] = None
    ) -> None:
        """Hand ``alert`` to every sink (or those ``to`` accepts); ``done`` once all of them settled it."""
        lanes = [lane for lane in self.lanes if to is None or to(lane.sink)]
        if not lanes:
            done()
            return
        latch = _Latch(len(lanes), done)
        for lane in lanes:
            lane.submit(alert, latch)

    def close(self, timeout_s: float) -> None:
        """Give the lanes ``timeout_s`` to settle what they hold; what they do not stays uncommitted."""
        deadline = self.clock() + timeout_s
        for lane in self.lanes:
            lane.close(deadline)
        for lane in self.lanes:
            lane.join(deadline - self.clock() + 1.0)
        waiting = sum(lane.backlog() for lane in self.lanes)
        if waiting:
            log.warning("stopping with %d alert(s) not yet delivered: their scores stay uncommitted and are "
                        "read again on the next start", waiting)  # fmt: skip
