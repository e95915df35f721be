"""Which offsets the alerter may commit: a record's offset is committable once every alert it made is settled.

Pure and thread-safe: the consumer records what it read, the sinks' lanes
release what they settled (from their own threads). Per partition, the commit
position is the lowest offset still held, or one past the last record read.
A partition's ledger is replaced when it is revoked or assigned again, so a
lane that settles an alert of a revoked assignment changes nothing.
"""

from __future__ import annotations

import threading
from typing import Callable, Hashable, Iterable, Optional


class _Ledger:
    def __init__(self) -> None:
        self.held: dict[int, int] = {}  # offset -> alerts of that record not yet settled
        self.next: Optional[int] = None  # one past the last offset read


class PendingOffsets:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ledgers: dict[Hashable, _Ledger] = {}

    def read(self, tp: Hashable, offset: int, holds: int = 0) -> Callable[[], None]:
        """Record that ``offset`` of ``tp`` was read and made ``holds`` alerts; returns the release for one."""
        with self._lock:
            ledger = self._ledgers.setdefault(tp, _Ledger())
            ledger.next = offset + 1
            if holds:
                ledger.held[offset] = ledger.held.get(offset, 0) + holds

        def release() -> None:
            with self._lock:
                left = ledger.held.get(offset, 0) - 1
                if left > 0:
                    ledger.held[offset] = left
                else:
                    ledger.held.pop(offset, None)

        return release

    def forget(self, tps: Iterable[Hashable]) -> None:
        """Partitions revoked: what their alerts settle later is not ours to commit."""
        with self._lock:
            for tp in tps:
                self._ledgers.pop(tp, None)

    def committable(self) -> dict[Hashable, int]:
        """Per partition read from: the offset to commit (every record before it is settled)."""
        with self._lock:
            out = {}
            for tp, ledger in self._ledgers.items():
                if ledger.next is not None:
                    out[tp] = min(ledger.held) if ledger.held else ledger.next
            return out

    def unsettled(self) -> int:
        """Records read whose alerts are not all settled yet."""
        with self._lock:
            return sum(len(ledger.held) for ledger in self._ledgers.values())
