"""Dynamic batching: a batch is ready when it is full or its oldest item has waited long enough
(and no batch is queued ahead of it).

The clock is injected so the deadline rule is tested without sleeping.
"""

from __future__ import annotations

import time
from typing import Callable, Generic, Optional, TypeVar

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(self, max_size: int, max_wait_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.clock = clock
        self._items: list[T] = []
        self._first_at: Optional[float] = None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def items(self) -> list[T]:
        return list(self._items)

    def add(self, item: T) -> None:
        if not self._items:
            self._first_at = self.clock()
        self._items.append(item)

    def ready(self, queued_ahead: int = 0) -> bool:
        """Full; or its oldest item has waited ``max_wait_s`` and no batch is queued ahead of it (``queued_ahead``:
        batches handed on and not started). One queued would run first anyway: this one keeps filling meanwhile."""
        if not self._items:
            return False
        if len(self._items) >= self.max_size:
            return True
        return self.time_left() <= 0.0 and queued_ahead == 0

    def time_left(self) -> float:
        """Seconds until the deadline of the oldest item (max_wait if empty)."""
        if self._first_at is None:
            return self.max_wait_s
        return self.max_wait_s - (self.clock() - self._first_at)

    def take(self) -> list[T]:
        """Remove and return up to max_size items, oldest first."""
        batch, self._items = self._items[: self.max_size], self._items[self.max_size :]
        self._first_at = self.clock() if self._items else None
        return batch

    def drop(self, keep: Callable[[T], bool]) -> list[T]:
        """Remove the items for which ``keep`` is false (e.g. of revoked partitions); return them."""
        dropped = [i for i in self._items if not keep(i)]
        self._items = [i for i in self._items if keep(i)]
        if not self._items:
            self._first_at = None
        return dropped
