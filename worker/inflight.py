"""A frame in flight: from the moment intake hands its message over until its one output is acknowledged.

``InFlight`` is what admission makes of a message, what the batcher holds,
what the embed stage scores and what delivery turns into an output; its
``state`` says how far it got. ``Outcome`` is what became of it: a score
record, or the reason for its dead letter.
"""

from __future__ import annotations

import enum
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from wire.records import FrameRecord, ScoreRecord
from worker.extract import Prepared
from worker.kafka_port import Partition, Record


class State(enum.Enum):
    DECODING = "decoding"  # in the decode pool (or waiting for it)
    DECODED = "decoded"  # the embedder's input is ready
    FAILED = "failed"  # its decode failed: a dead letter


@dataclass(eq=False)
class InFlight:
    message: Record = field(repr=False)  # where it came from, and the bytes its dead letter keeps
    record: FrameRecord = field(repr=False)
    decoding: Union["Future[Any]", Prepared, Any, None] = field(default=None, repr=False)
    prepared: Any = field(default=None, repr=False)  # the embedder's input, once decoded
    size: tuple[int, int] = (
        0,
        0,
    )  # (width, height) of the frame as sent (hotspots and maps are in its pixels)
    state: State = State.DECODING

    @classmethod
    def decoded(cls, record: FrameRecord, prepared: Any = None, topic: str = "frames", partition: int = 0,
                offset: int = 0) -> "InFlight":  # fmt: skip
        """A frame already decoded, scored without Kafka (benchmarks, tests of the scoring core)."""
        message = Record(topic, partition, offset, record.source.encode(), None)
        return cls(message, record, prepared=prepared, state=State.DECODED)

    @property
    def where(self) -> Partition:
        return self.message.where

    @property
    def topic(self) -> str:
        return self.message.topic

    @property
    def partition(self) -> int:
        return self.message.partition

    @property
    def offset(self) -> int:
        return self.message.offset

    def await_decode(self) -> None:
        """Wait for the decode pool; then ``prepared`` and ``size`` are set.
        :raises FrameDecodeError: (or any error of the decode) the frame cannot be embedded."""
        if self.state is not State.DECODING:
            return
        try:
            value = self.decoding.result() if isinstance(self.decoding, Future) else self.decoding
        except BaseException:
            self.state = State.FAILED
            raise
        finally:
            self.decoding = None
        if isinstance(value, Prepared):
            self.prepared, self.size = value.data, value.size
        else:
            self.prepared = value
        self.state = State.DECODED


@dataclass
class Outcome:
    """What became of one frame: its score record (and its encoding), or the reason for its dead letter."""

    frame: InFlight
    record: Optional[ScoreRecord] = None
    encoded: Optional[tuple[bytes, bytes]] = None
    reason: str = ""
    detail: str = ""
