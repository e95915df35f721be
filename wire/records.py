"""The frame, score and dead-letter records, each with one encode/decode pair.

A frame travels as Kafka key = source id, value = the encoded image bytes
(JPEG or PNG, never wrapped), metadata in headers. A score travels as a JSON
object keyed by source id. A dead letter is the original frame message plus
error headers.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field, fields
from typing import Any, Optional, Sequence

from wire import fields as fv
from wire import topics as t
from wire.errors import FrameDecodeError, ScoreDecodeError, WireError

Headers = list[tuple[str, bytes]]


def _header_map(headers: Optional[Sequence[tuple[str, Optional[bytes]]]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, raw in headers or ():
        if "\ufffd" in key:  # the client's lenient parser marks a header key that was not UTF-8 this way
            raise FrameDecodeError("malformed-header", f"header key {_cut(key, 60)!r} is not UTF-8 text")
        if raw is None:
            continue
        try:
            out[key] = raw.decode("utf-8")
        except (UnicodeDecodeError, AttributeError) as e:
            raise FrameDecodeError("malformed-header", f"header {key!r} is not UTF-8 text") from e
    for key in _KEPT_HEADERS & out.keys():  # headers of other tools pass through untouched, and unread
        if fv.has_control(out[key]):
            raise FrameDecodeError(
                "malformed-header", f"header {key} holds control characters: {_cut(ascii(out[key]), 80)}"
            )
    return out


_KEPT_HEADERS = {
    t.H_FRAME_ID,
    t.H_SOURCE,
    t.H_SEQUENCE,
    t.H_CAPTURE_TIME,
    t.H_CONTENT_TYPE,
    t.H_ORIGIN,
    t.H_SCHEMA,
}


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
    # True when the frame's capture time was absurd (before 2000, over a day ahead, see decode) and was
    # replaced by the message's timestamp or the reader's clock. Not sent: decode decides anew.
    capture_time_replaced: bool = field(default=False, compare=False)

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
        now: Optional[float] = None,
    ) -> "FrameRecord":
        """Parse a Kafka message. Raises FrameDecodeError with a reason code.

        Optional headers may be missing: the frame id falls back to
        ``fallback_id`` (the worker passes ``topic/partition/offset``), the
        source to the message key, the capture time to ``fallback_time``.

        Every header kept is refused when it holds a control character, and
        numbers are parsed strictly within bounds (sequence: int64). A capture
        time before 2000 or more than a day after ``now`` (default: this
        machine's clock) is not refused: the frame is still worth scoring (a
        camera whose clock was never set), but its time would make latency
        metrics and tools absurd, so it is replaced by ``fallback_time`` (the
        message's timestamp) when that is sane, else by ``now``, and the
        record says so in ``capture_time_replaced``.
        """
        h = _header_map(headers)
        if not value:
            raise FrameDecodeError("empty-value", "message has no image bytes")
        schema = _int_header(h, t.H_SCHEMA, t.SCHEMA_VERSION, low=1)
        if schema > t.SCHEMA_VERSION:
            raise FrameDecodeError(
                "unsupported-schema", f"schema {schema} is newer than {t.SCHEMA_VERSION}"
            )
        source = _bounded_id(h.get(t.H_SOURCE) or _key_text(key), "source")
        frame_id = _bounded_id(h.get(t.H_FRAME_ID) or fallback_id, "frame id")
        if not frame_id:
            raise FrameDecodeError("missing-header", f"no {t.H_FRAME_ID} header and no fallback")
        content_type = h.get(t.H_CONTENT_TYPE, "")
        if len(content_type) > t.MAX_CONTENT_TYPE_CHARS:
            raise FrameDecodeError("malformed-header", f"{t.H_CONTENT_TYPE} is {len(content_type)} characters "
                                   f"(limit {t.MAX_CONTENT_TYPE_CHARS})")  # fmt: skip
        now = time.time() if now is None else now
        capture = _float_header(h, t.H_CAPTURE_TIME, fallback_time)
        replaced = not fv.sane_capture_time(capture, now)
        if replaced:
            capture = fallback_time if fv.sane_capture_time(fallback_time, now) else now
        return cls(
            frame_id=frame_id,
            source=source or "unknown",
            sequence=_int_header(h, t.H_SEQUENCE, -1),
            capture_time=capture,
            image=bytes(value),
            content_type=content_type,
            origin=_cut(h.get(t.H_ORIGIN, ""), t.MAX_ORIGIN_CHARS),
            schema_version=schema,
            capture_time_replaced=replaced,
        )


def _size(key: Optional[bytes], value: Optional[bytes], headers: Headers) -> int:
    """Bytes a message takes on the wire, near enough for a size limit (record overhead included)."""
    return 128 + len(key or b"") + len(value or b"") + sum(len(k.encode()) + len(v or b"") + 8 for k, v in headers)


def _bounded_id(value: str, what: str) -> str:
    """Ids are used as keys and for de-duplication: one that is too long or holds control characters is refused."""
    if len(value) > t.MAX_ID_CHARS:
        raise FrameDecodeError("malformed-header", f"{what} is {len(value)} characters (limit {t.MAX_ID_CHARS})")
    if fv.has_control(value):
        raise FrameDecodeError("malformed-header", f"{what} {_cut(value, 60)!r} holds control characters")
    return value


def _int_or(text: Optional[str], default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _cut(text: str, limit: int) -> str:
    """At most ``limit`` characters; a cut text ends with a marker that says how long it was."""
    if len(text) <= limit:
        return text
    marker = f"...[{len(text)} chars]"
    return text[: max(0, limit - len(marker))] + marker


def _key_text(key: Optional[bytes]) -> str:
    if not key:
        return ""
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FrameDecodeError("malformed-header", "message key is not UTF-8 text") from e


def _int_header(h: dict[str, str], name: str, default: int, low: int = fv.INT64[0]) -> int:
    if name not in h:
        return default
    value = fv.parse_int(h[name], low=low)
    if value is None:
        raise FrameDecodeError("malformed-header", f"{name}={_cut(h[name], 60)!r} is not an integer from {low} "
                               f"to 2**63-1 in decimal digits")  # fmt: skip
    return value


def _float_header(h: dict[str, str], name: str, default: float) -> float:
    if name not in h:
        return default
    value = fv.parse_float(h[name])
    if value is None:
        raise FrameDecodeError(
            "malformed-header", f"{name}={_cut(h[name], 60)!r} is not a finite decimal number"
        )
    return value


# One encoder for every score record (json.dumps with options builds a new one per call).
_STRICT_JSON = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


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
    schema_version: int = t.SCORE_SCHEMA_VERSION
    # "why" (schema 2): where the frame is, so any tool can fetch the image ...
    frame_topic: str = ""
    frame_partition: int = -1
    frame_offset: int = -1
    # ... and what made the score: patch indexes give the hotspot (x0, y0, x1, y1 in the
    # frame's own pixels) and a coarse anomaly map (wire.anomaly_map.encode_map);
    # global indexes give the origins of the nearest normal training frames.
    hotspot: Optional[list[int]] = None
    anomaly_map: Optional[dict[str, Any]] = None
    neighbors: Optional[list[str]] = None
    # (schema 3) the frame's size as sent ([width, height]) and where the model looked: "full" (the whole
    # frame), "center" (DN2's center crop), "full/stretched" (the aspect differs from the index's fit
    # frames: resized to the index's input shape all the same; refit the camera)
    frame_size: Optional[list[int]] = None
    geometry: str = ""
    # (schema 4) per-camera routes (--route 'PATTERN={source}'): ``camera_index`` names the camera's own
    # index; when ``index_fallback`` is set ("missing": it has none; "loading": not loaded in time; "refused":
    # another backbone or bad data; "error": Redis failed), the fallback index (``index_name``) scored the frame.
    camera_index: Optional[str] = None
    index_fallback: str = ""
    # (schema 5) the verdicts of the index's candidate versions on this frame, scored in the shadow on the same
    # embedding: [{"version", "score", "threshold", "is_anomaly"}], oldest version first; None when the index
    # has no candidate. Informational only: alerts and incidents follow ``is_anomaly`` (the active version's).
    shadow: Optional[list[dict[str, Any]]] = None

    def encode(self) -> tuple[bytes, bytes]:
        """Return (key, value) for a Kafka message (strict JSON: a non-finite number raises ValueError)."""
        # vars(), not asdict(): asdict deep-copies every field, and this runs once per frame
        return self.source.encode(), _STRICT_JSON.encode(vars(self)).encode()

    @classmethod
    def decode(cls, value: bytes) -> "ScoreRecord":
        try:
            data: dict[str, Any] = json.loads(value)
        except (ValueError, TypeError) as e:
            raise ScoreDecodeError(f"score record is not JSON: {e}") from e
        if not isinstance(data, dict):
            raise ScoreDecodeError("score record is not a JSON object")
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k in known}  # forward compatible: newer fields are ignored
        data.setdefault("schema_version", 1)  # version 1 records predate the field's default of 2
        bad = sorted(k for k, v in data.items() if not _SCORE_RULES[k](v))
        if bad:  # anyone who can write the topic writes records: every reader gets only sane values
            raise ScoreDecodeError(f"score record fields out of their contract: {', '.join(bad)}")
        try:
            return cls(**data)
        except TypeError as e:
            raise ScoreDecodeError(f"score record fields do not match: {e}") from e


_SCORE_RULES = fv.score_field_rules(t.MAX_ID_CHARS, t.MAX_ORIGIN_CHARS)


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
    payload_omitted: bool = False  # read back from a dead letter whose value did not fit (encode decides anew)
    payload_size: int = -1  # read back with payload_omitted: the left-out value's size in bytes
    payload_sha256: str = ""  # and its sha256 (hex), to match it with the frame in the source topic

    def encode(self, max_bytes: Optional[int] = None) -> tuple[Optional[bytes], Optional[bytes], Headers]:
        """(key, value, headers) of the dead-letter message.

        With ``max_bytes`` (the producer's limit, less headroom) the message is made
        to fit: when the original value, key or headers would not, they are left out
        and the ``fw-error-payload: omitted`` header says so, beside the value's size
        and sha256. The reason and coordinates are always kept.
        """
        extra = [
            (t.H_ERROR_REASON, _cut(self.reason, 100).encode("utf-8", "replace")),
            (t.H_ERROR_DETAIL, _cut(self.detail, t.MAX_DETAIL_CHARS).encode("utf-8", "replace")),
            (t.H_ERROR_TOPIC, _cut(self.topic, 300).encode("utf-8", "replace")),
            (t.H_ERROR_PARTITION, str(self.partition).encode()),
            (t.H_ERROR_OFFSET, str(self.offset).encode()),
        ]
        kept = [(k, v) for k, v in self.headers if not k.startswith("fw-error-")]
        key, value = self.key, self.value
        if self.payload_omitted and value is None:  # a dead letter read back: its payload was left out before
            extra += [(t.H_ERROR_PAYLOAD, b"omitted"), (t.H_ERROR_PAYLOAD_SIZE, str(self.payload_size).encode()),
                      (t.H_ERROR_PAYLOAD_SHA256, self.payload_sha256.encode())]  # fmt: skip
        elif max_bytes is not None and _size(key, value, kept) > max_bytes:
            extra += [
                (t.H_ERROR_PAYLOAD, b"omitted"),
                (t.H_ERROR_PAYLOAD_SIZE, str(len(value or b"")).encode()),
                (t.H_ERROR_PAYLOAD_SHA256, hashlib.sha256(value or b"").hexdigest().encode()),
            ]
            if _size(None, None, kept) > t.MAX_KEPT_HEADER_BYTES:
                kept = []
            if key is not None and len(key) > t.MAX_ID_CHARS * 4:
                key = None
            value = None
        return key, value, kept + extra

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
            payload_omitted=err.get(t.H_ERROR_PAYLOAD) == "omitted",
            payload_size=_int_or(err.get(t.H_ERROR_PAYLOAD_SIZE), -1),
            payload_sha256=err.get(t.H_ERROR_PAYLOAD_SHA256, ""),
        )

    def header(self, name: str) -> Optional[str]:
        for k, v in self.headers:
            if k == name:
                return v.decode("utf-8", "replace")
        return None
