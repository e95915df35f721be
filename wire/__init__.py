"""Contracts between framewatch's parts: topics, headers, records, connection settings.

Pure: stdlib only. Producer, worker and index_store all import from here and
never from each other.
"""

from wire.errors import FrameDecodeError, FramewatchError, ScoreDecodeError, WireError
from wire.records import DeadLetter, FrameRecord, ScoreRecord
from wire.topics import Topics

__all__ = [
    "DeadLetter",
    "FrameDecodeError",
    "FrameRecord",
    "FramewatchError",
    "ScoreDecodeError",
    "ScoreRecord",
    "Topics",
    "WireError",
]
