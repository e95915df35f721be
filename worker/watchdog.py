"""The progress watchdog: notices a worker that has stopped making progress, says so, and gives up.

Two kinds of stall:
- ``loop-stuck``: the loop has been inside one call (poll, embed, send, ...)
  for longer than ``stall_after_s``;
- ``no-progress``: a partition has lag, consumption is not held on purpose
  (no index yet, outputs unacknowledged: those are reported by /readyz as
  themselves), and nothing has been consumed from it for ``stall_after_s``.

``check()`` is pure (state in, verdict out, clock passed in). ``WatchdogThread``
calls it every second: it logs each change, counts trips, and once a stall
has lasted ``exit_after_s`` calls ``give_up`` (the CLI exits non-zero, so an
orchestrator restarts the worker).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator, Optional

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stall:
    reason: str  # loop-stuck | no-progress
    detail: str
    since: float


class Watchdog:
    def __init__(self, stall_after_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.stall_after_s = stall_after_s
        self.clock = clock
        self._calls: dict[int, tuple[str, float]] = {}  # per thread (the loop, the embed stage): call, since when
        self._progress: dict[Hashable, float] = {}  # partition -> last time consumed (or assigned)
        self._lag: dict[Hashable, int] = {}
        self._held_until = clock()  # a hold on purpose resets the no-progress clock

    @contextlib.contextmanager
    def calling(self, name: str) -> Iterator[None]:
        """Mark the calling thread as inside ``name`` (not re-entrant: the outermost call is the one timed)."""
        me = threading.get_ident()
        if me in self._calls:
            yield
            return
        self._calls[me] = (name, self.clock())
        try:
            yield
        finally:
            self._calls.pop(me, None)

    def assigned(self, partitions: list[Hashable]) -> None:
        now = self.clock()
        for tp in partitions:
            self._progress.setdefault(tp, now)

    def revoked(self, partitions: list[Hashable]) -> None:
        for tp in partitions:
            self._progress.pop(tp, None)
            self._lag.pop(tp, None)

    def consumed(self, tp: Hashable) -> None:
        self._progress[tp] = self.clock()

    def lag(self, lags: dict[Hashable, int]) -> None:
        self._lag = dict(lags)

    def holding(self) -> None:
        """Consumption is held on purpose right now (its reason is reported elsewhere)."""
        self._held_until = self.clock()

    def check(self) -> Optional[Stall]:
        now = self.clock()
        for name, since in sorted(list(self._calls.values()), key=lambda call: call[1])[:1]:  # the oldest
            if now - since > self.stall_after_s:
                return Stall("loop-stuck", f"the worker loop has been in {name} for {now - since:.0f}s", since)
        for tp, behind in sorted(self._lag.items(), key=lambda kv: str(kv[0])):
            if behind <= 0:
                continue
            since = max(self._progress.get(tp, now), self._held_until)
            if now - since > self.stall_after_s:
                where = f"{getattr(tp, 'topic', tp)}/{getattr(tp, 'partition', '')}".rstrip("/")
                detail = f"partition {where} has lag {behind} but nothing was consumed for {now - since:.0f}s"
                return Stall("no-progress", detail, since)
        return None


class WatchdogThread:
    """Runs ``Watchdog.check`` every ``every_s``; reports changes; calls ``give_up`` after ``exit_after_s``."""

    def __init__(
        self,
        watchdog: Watchdog,
        exit_after_s: float,
        on_trip: Callable[[Stall], None],
        give_up: Callable[[Stall], None],
        every_s: float = 1.0,
    ) -> None:
        self.watchdog, self.exit_after_s = watchdog, exit_after_s
        self.on_trip, self.give_up, self.every_s = on_trip, give_up, every_s
        self.current: Optional[Stall] = None
        self._gave_up = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="watchdog", daemon=True)

    def start(self) -> "WatchdogThread":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.tick()

    def tick(self) -> Optional[Stall]:
        """One check (the thread makes one every ``every_s``; tests with an injected clock call it)."""
        stall = self.watchdog.check()
        if stall is not None and (self.current is None or stall.reason != self.current.reason):
            log.error("watchdog: %s", stall.detail)
            self.on_trip(stall)
        elif stall is None and self.current is not None:
            log.info("watchdog: progress again")
        self.current = stall
        if stall is not None and not self._gave_up and self.watchdog.clock() - stall.since > self.exit_after_s:
            log.critical("watchdog: stalled for over %.0fs (%s): giving up", self.exit_after_s, stall.detail)
            self._gave_up = True
            self.give_up(stall)
        return stall
