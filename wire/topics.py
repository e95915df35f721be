"""Topic names (defaults from DESIGN.md) and header keys, in one place."""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1

# Header keys of a frame message. Values are UTF-8 strings.
H_FRAME_ID = "fw-frame-id"
H_SOURCE = "fw-source"
H_SEQUENCE = "fw-seq"
H_CAPTURE_TIME = "fw-capture-time"  # seconds since the epoch, float as text
H_CONTENT_TYPE = "content-type"
H_ORIGIN = "fw-origin"  # file path relative to the folder, or "URI#frame"
H_SCHEMA = "fw-schema"
# Added on dead letters.
H_ERROR_REASON = "fw-error-reason"
H_ERROR_DETAIL = "fw-error-detail"
H_ERROR_TOPIC = "fw-error-topic"
H_ERROR_PARTITION = "fw-error-partition"
H_ERROR_OFFSET = "fw-error-offset"

CONTENT_TYPES = ("image/jpeg", "image/png")


@dataclass(frozen=True)
class Topics:
    """The three topics of a deployment."""

    frames: str = "frames"
    scores: str = "scores"
    dead_letters: str = "frames.dlq"
