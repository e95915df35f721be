"""Which offsets may be committed: per partition, the lowest offset whose output is not yet acknowledged.

A frame is *open* from the moment it is consumed until its one output (score
record or dead letter) is acknowledged by the broker. The committable offset of
a partition is its lowest open offset, or one past the highest offset seen when
none is open, so a commit never passes a frame that could still be lost.
Outputs are acknowledged in any order. Pure: no Kafka here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Iterable

Partition = Hashable  # a kafka TopicPartition in the worker; anything hashable in tests


@dataclass
class _PartitionState:
    open: set[int] = field(default_factory=set)
    next_offset: int = 0  # one past the highest offset seen
    committed: int = -1  # the last offset committed (or -1)


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[Partition, _PartitionState] = {}

    def opened(self, tp: Partition, offset: int) -> None:
        """A message at ``offset`` was consumed; its output is not yet acknowledged."""
        state = self._parts.setdefault(tp, _PartitionState())
        state.open.add(offset)
        state.next_offset = max(state.next_offset, offset + 1)

    def closed(self, tp: Partition, offset: int) -> None:
        """The output of the message at ``offset`` was acknowledged (unknown partitions are ignored)."""
        state = self._parts.get(tp)
        if state is not None:
            state.open.discard(offset)

    def forget(self, partitions: Iterable[Partition]) -> None:
        """Partitions revoked: their open frames will be consumed again by their new owner."""
        for tp in partitions:
            self._parts.pop(tp, None)

    def open_count(self) -> int:
        return sum(len(s.open) for s in self._parts.values())

    def committable(self) -> dict[Partition, int]:
        """Per partition, the offset to commit now, for partitions where it moved since the last commit."""
        out = {}
        for tp, state in self._parts.items():
            position = min(state.open) if state.open else state.next_offset
            if position > state.committed:
                out[tp] = position
        return out

    def committed(self, positions: dict[Partition, int]) -> None:
        """Record a successful commit of ``positions``."""
        for tp, offset in positions.items():
            state = self._parts.get(tp)
            if state is not None:
                state.committed = max(state.committed, offset)
