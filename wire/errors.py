"""The project's one exception hierarchy. Every part raises subclasses of FramewatchError."""

from __future__ import annotations


class FramewatchError(Exception):
    """Base of every error framewatch raises on purpose."""


class WireError(FramewatchError):
    """A record on a topic does not follow the contract."""


class FrameDecodeError(WireError):
    """A frame message cannot be turned into a FrameRecord.

    ``reason`` is a short machine-readable code (it becomes the dead letter's
    reason header and a metric label); the message is for humans.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class ScoreDecodeError(WireError):
    """A score record's JSON does not follow the contract."""
