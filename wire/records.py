"""The frame, score and dead-letter records, each with one encode/decode pair.

A frame travels as Kafka key = source id, value = the encoded image bytes
(JPEG or PNG, never wrapped), metadata in headers. A score travels as a JSON
object keyed by source id. A dead letter is the original frame message plus
error headers.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from wire import topics as t
from wire.errors import FrameDecodeError, ScoreDecodeError, WireError

Headers = list[tuple[str, bytes]]


def _header_map(headers: Optional[Sequence[tuple[str, Optional[bytes]]]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, raw in headers or ():
        if raw is None:
            continue
        try:
            out[key] = raw.decode("utf-8")
        except (UnicodeDecodeError, AttributeError) as e:
            raise FrameDecodeError("malformed-header", f"header {key!r} is not UTF-8 text") from e
    return out


@dataclass(frozen=True)
class FrameRecord:
    """One camera/sensor frame.

    ``origin`` says where it came from: a file path relative to the folder the
    producer was given, or ``URI#frame-number`` for a stream.
    """

    frame_id: str
    source: str
    sequence: int
    capture_time: float
    image: bytes = field(repr=False)
    content_type: str = "image/jpeg"
    origin: str = ""
    schema_version: int = t.SCHEMA_VERSION

    def encode(self) -> tuple[bytes, bytes, Headers]:
        """Return (key, value, headers) for a Kafka message."""
        headers: Headers = [
            (t.H_FRAME_ID, self.frame_id.encode()),
            (t.H_SOURCE, self.source.encode()),
            (t.H_SEQUENCE, str(self.sequence).encode()),
            (t.H_CAPTURE_TIME, repr(float(self.capture_time)).encode()),
            (t.H_CONTENT_TYPE, self.content_type.encode()),
            (t.H_ORIGIN, self.origin.encode()),
            (t.H_SCHEMA, str(self.schema_version).encode()),
        ]
        return self.source.encode(), self.image, headers

    @classmethod
    def decode(
        cls,
        key: Optional[bytes],
        value: Optional[bytes],
        headers: Optional[Sequence[tuple[str, Optional[bytes]]]],
        *,
        fallback_id: str = "",
        fallback_time: float = 0.0,
    ) -> "FrameRecord":
        """Parse a Kafka message. Raises FrameDecodeError with a reason code.

        Optional headers may be missing: the frame id falls back to
        ``fallback_id`` (the worker passes ``topic/partition/offset``), the
        source to the message key, the capture time to ``fallback_time``.
        """
        h = _header_map(headers)
        if not value:
            raise FrameDecodeError("empty-value", "message has no image bytes")
        schema = _int_header(h, t.H_SCHEMA, t.SCHEMA_VERSION)
        if schema > t.SCHEMA_VERSION:
            raise FrameDecodeError(
                "unsupported-schema", f"schema {schema} is newer than {t.SCHEMA_VERSION}"
            )
        source = h.get(t.H_SOURCE) or _key_text(key)
        frame_id = h.get(t.H_FRAME_ID) or fallback_id
        if not frame_id:
            raise FrameDecodeError("missing-header", f"no {t.H_FRAME_ID} header and no fallback")
        capture = _float_header(h, t.H_CAPTURE_TIME, fallback_time)
        return cls(
            frame_id=frame_id,
            source=source or "unknown",
            sequence=_int_header(h, t.H_SEQUENCE, -1),
            capture_time=capture,
            image=bytes(value),
            content_type=h.get(t.H_CONTENT_TYPE, ""),
            origin=h.get(t.H_ORIGIN, ""),
            schema_version=schema,
        )


def _key_text(key: Optional[bytes]) -> str:
    if not key:
        return ""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FrameDecodeError("malformed-header", "message key is not UTF-8 text") from e


def _int_header(h: dict[str, str], name: str, default: int) -> int:
    if name not in h:
        return default
    try:
        return int(h[name])
    except ValueError as e:
        raise FrameDecodeError("malformed-header", f"{name}={h[name]!r} is not an integer") from e


def _float_header(h: dict[str, str], name: str, default: float) -> float:
    if name not in h:
        return default
    try:
        value = float(h[name])
    except ValueError as e:
        raise FrameDecodeError("malformed-header", f"{name}={h[name]!r} is not a number") from e
    if not math.isfinite(value):
        raise FrameDecodeError("malformed-header", f"{name}={h[name]!r} is not finite")
    return value


@dataclass(frozen=True)
class ScoreRecord:
    """One anomaly score for one frame, published as JSON to the score topic.

    ``normalized_score`` is score / threshold (1.0 = on the threshold), so
    dashboards can compare cameras whose indexes differ.
    """

    frame_id: str
    source: str
    sequence: int
    capture_time: float
    score_time: float
    score: float
    threshold: Optional[float]
    is_anomaly: bool
    index_name: str
    index_version: int
    backbone: str
    latency_s: float
    origin: str = ""
    normalized_score: Optional[float] = None
    window_score: Optional[float] = None
    worker: str = ""
    schema_version: int = t.SCHEMA_VERSION

    def encode(self) -> tuple[bytes, bytes]:
        """Return (key, value) for a Kafka message."""
        return self.source.encode(), json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes) -> "ScoreRecord":
        try:
            data: dict[str, Any] = json.loads(value)
        except (ValueError, TypeError) as e:
            raise ScoreDecodeError(f"score record is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise ScoreDecodeError("score record is not a JSON object")
        try:
            return cls(**data)
        except TypeError as e:
            raise ScoreDecodeError(f"score record fields do not match: {e}") from e


@dataclass(frozen=True)
class DeadLetter:
    """A frame message that could not be scored, with the reason.

    Carries the original key, value and headers untouched, so the frame can be
    replayed once the cause is fixed.
    """

    key: Optional[bytes]
    value: Optional[bytes] = field(repr=False)
    headers: Headers
    reason: str
    detail: str
    topic: str = ""
    partition: int = -1
    offset: int = -1

    def encode(self) -> tuple[Optional[bytes], Optional[bytes], Headers]:
        extra = [
            (t.H_ERROR_REASON, self.reason.encode()),
            (t.H_ERROR_DETAIL, self.detail[:1000].encode("utf-8", "replace")),
            (t.H_ERROR_TOPIC, self.topic.encode()),
            (t.H_ERROR_PARTITION, str(self.partition).encode()),
            (t.H_ERROR_OFFSET, str(self.offset).encode()),
        ]
        kept = [(k, v) for k, v in self.headers if not k.startswith("fw-error-")]
        return self.key, self.value, kept + extra

    @classmethod
    def decode(
        cls, key: Optional[bytes], value: Optional[bytes], headers: Sequence[tuple[str, bytes]]
    ) -> "DeadLetter":
        plain = [(k, v) for k, v in headers if not k.startswith("fw-error-")]
        err = {k: v.decode("utf-8", "replace") for k, v in headers if k.startswith("fw-error-")}
        if t.H_ERROR_REASON not in err:
            raise WireError(f"dead letter has no {t.H_ERROR_REASON} header")
        return cls(
            key=key,
            value=value,
            headers=list(plain),
            reason=err[t.H_ERROR_REASON],
            detail=err.get(t.H_ERROR_DETAIL, ""),
            topic=err.get(t.H_ERROR_TOPIC, ""),
            partition=int(err.get(t.H_ERROR_PARTITION, "-1")),
            offset=int(err.get(t.H_ERROR_OFFSET, "-1")),
        )

    def header(self, name: str) -> Optional[str]:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace")
        return None
