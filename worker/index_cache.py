"""Loaded per-camera indexes held under a memory budget, least recently used evicted first. Pure: no Redis.

The budget counts what an index holds in memory: its vectors and the search
structure's copy of them (faiss keeps its own; a device searcher holds one on
the GPU), as ``held_bytes`` measures. Python's per-object overhead (a few KiB
an index) is not counted. An index larger than the whole budget is still held,
alone, so its camera is scored by it, and evicted by the next one loaded.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Generic, Hashable, Iterator, Optional, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def held_bytes(index: object) -> int:
    """Bytes an index holds: its vectors twice (the array, and the searcher's copy). Positional memories
    (``to_arrays``) count every array they hold."""
    vectors = getattr(index, "vectors", None)
    if vectors is not None:
        return 2 * int(vectors.nbytes)
    if hasattr(index, "to_arrays"):
        arrays, _ = index.to_arrays()  # type: ignore[attr-defined]
        return 2 * int(arrays.nbytes)
    return 0


class LruBudget(Generic[K, V]):
    """key -> value with a size each; ``put`` evicts the least recently used until the sizes fit the budget.

    Thread-safe: the loader puts, the scoring thread gets."""

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 1:
            raise ValueError("the budget must be at least 1 byte")
        self.budget_bytes = budget_bytes
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.evictions = 0

    def get(self, key: K) -> Optional[V]:
        """The value, marked most recently used; None when not held."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def peek(self, key: K) -> Optional[V]:
        """The value without touching its recency."""
        item = self._items.get(key)
        return item[0] if item is not None else None

    def put(self, key: K, value: V, size: int) -> list[K]:
        """Hold ``value`` (replacing what ``key`` held) as the most recently used; return the keys evicted."""
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, size)
            self._bytes += size
            evicted = []
            while self._bytes > self.budget_bytes and len(self._items) > 1:
                gone, (_, gone_size) = self._items.popitem(last=False)
                self._bytes -= gone_size
                evicted.append(gone)
            self.evictions += len(evicted)
            return evicted

    def pop(self, key: K) -> Optional[V]:
        with self._lock:
            item = self._items.pop(key, None)
            if item is None:
                return None
            self._bytes -= item[1]
            return item[0]

    def keys(self) -> list[K]:
        """Held keys, least recently used first."""
        with self._lock:
            return list(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())

    @property
    def bytes(self) -> int:
        return self._bytes
