"""Topic names (defaults from DESIGN.md) and header keys, in one place."""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = 1  # frame messages (the fw-schema header)
# Score records: 2 added "why" (the frame's Kafka coordinates, hotspot, anomaly map, neighbours).
# Readers accept every version up to theirs and ignore fields they do not know.
SCORE_SCHEMA_VERSION = 5  # 3: frame_size and geometry; 4: camera_index and index_fallback; 5: shadow

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
H_ERROR_PAYLOAD = "fw-error-payload"  # "omitted" when the original value (or headers) did not fit
H_ERROR_PAYLOAD_SIZE = "fw-error-payload-size"  # the original value's size in bytes
H_ERROR_PAYLOAD_SHA256 = "fw-error-payload-sha256"  # and its sha256, so the frame can still be identified

# Bounds on what input can carry into outputs (score records and dead letters), so that
# no frame, however malformed, can make an output too large to deliver.
MAX_ID_CHARS = 256  # frame id and source id: longer ones make the frame a dead letter
MAX_ORIGIN_CHARS = 1024  # origin: longer ones are cut (with a marker) in score records
MAX_CONTENT_TYPE_CHARS = 255  # content type: a longer one makes the frame a dead letter
MAX_DETAIL_CHARS = 1000  # the human-readable error detail of a dead letter
MAX_KEPT_HEADER_BYTES = 64 * 1024  # original headers a dead letter keeps; over this they are omitted

CONTENT_TYPES = ("image/jpeg", "image/png")

# Every reason a dead letter can carry (its fw-error-reason header; a metric label).
DEAD_LETTER_REASONS = (
    "empty-value", "message-too-large", "unsupported-content-type", "undecodable", "truncated",
    "image-too-small", "image-too-large",  # the image (worker/decode.py)
    "malformed-header", "missing-header", "unsupported-schema",  # the message (wire/records.py)
    "unparseable-record",  # the Kafka client could not parse the record at all (worker/kafka_python_client.py)
    "scoring-error",  # embedding or kNN failed for this frame alone
    "output-refused",  # the broker refused the frame's output for good (too large): coordinates only
)  # fmt: skip


@dataclass(frozen=True)
class Topics:
    """The three topics of a deployment."""

    frames: str = "frames"
    scores: str = "scores"
    dead_letters: str = "frames.dlq"


@dataclass(frozen=True)
class AlertTopics:
    """The alerter's own output topics (FRAMEWATCH_TOPIC_ALERTS_DLQ, FRAMEWATCH_TOPIC_INCIDENTS).

    ``dead_letters`` receives every alert a sink could not take within its retry
    time (the alert, the sink, why), keyed by source, so none is lost silently.
    """

    dead_letters: str = "alerts.dlq"
    incidents: str = "incidents"
