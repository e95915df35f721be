"""The wire contracts: round trips and typed decode errors."""

from __future__ import annotations

import json

import pytest

from wire.errors import FrameDecodeError, ScoreDecodeError
from wire.records import DeadLetter, FrameRecord, ScoreRecord
from wire.settings import KafkaSettings, RedisSettings
from wire.topics import H_CAPTURE_TIME, H_FRAME_ID, H_SEQUENCE


def frame(**kw) -> FrameRecord:
    base = dict(frame_id="cam1-abc-7", source="cam1", sequence=7, capture_time=1700000000.25,
                image=b"\x89PNG...", content_type="image/png", origin="sub/dir/img.png")  # fmt: skip
    base.update(kw)
    return FrameRecord(**base)


def test_frame_round_trip_keeps_every_field_and_uses_raw_bytes_as_value():
    f = frame()
    key, value, headers = f.encode()
    assert key == b"cam1" and value == b"\x89PNG..."  # never wrapped
    assert FrameRecord.decode(key, value, headers) == f


def test_frame_without_optional_headers_uses_fallbacks():
    key, value, headers = frame().encode()
    stripped = [(k, v) for k, v in headers if k in ()]
    got = FrameRecord.decode(key, value, stripped, fallback_id="frames/0/42", fallback_time=12.5)
    assert (got.frame_id, got.source, got.sequence, got.capture_time) == ("frames/0/42", "cam1", -1, 12.5)


@pytest.mark.parametrize(
    "headers,reason",
    [
        ([(H_SEQUENCE, b"seven")], "malformed-header"),
        ([(H_CAPTURE_TIME, b"nan")], "malformed-header"),
        ([(H_FRAME_ID, b"\xff\xfe")], "malformed-header"),
        ([("fw-schema", b"99")], "unsupported-schema"),
    ],
)
def test_bad_headers_raise_typed_errors(headers, reason):
    with pytest.raises(FrameDecodeError) as e:
        FrameRecord.decode(b"cam1", b"img", headers, fallback_id="x")
    assert e.value.reason == reason


def test_empty_value_and_missing_id_are_typed_errors():
    with pytest.raises(FrameDecodeError) as e:
        FrameRecord.decode(b"cam1", b"", [], fallback_id="x")
    assert e.value.reason == "empty-value"
    with pytest.raises(FrameDecodeError) as e:
        FrameRecord.decode(b"cam1", b"img", [])
    assert e.value.reason == "missing-header"


def test_score_round_trip_and_json_shape():
    s = ScoreRecord(frame_id="f", source="cam1", sequence=3, capture_time=1.0, score_time=2.0, score=4.5,
                    threshold=3.0, is_anomaly=True, index_name="lot", index_version=2, backbone="resnet50/V2",
                    latency_s=1.0, origin="a.png", normalized_score=1.5)  # fmt: skip
    key, value = s.encode()
    assert key == b"cam1"
    data = json.loads(value)
    assert data["is_anomaly"] is True and data["index_version"] == 2 and data["schema_version"] == 1
    assert ScoreRecord.decode(value) == s


@pytest.mark.parametrize("raw", [b"not json", b"[1,2]", b'{"frame_id": "x"}'])
def test_bad_score_records_raise_typed_errors(raw):
    with pytest.raises(ScoreDecodeError):
        ScoreRecord.decode(raw)


def test_dead_letter_keeps_original_message_and_adds_reason():
    key, value, headers = frame().encode()
    letter = DeadLetter(key, value, headers, "undecodable", "bad bytes", "frames", 1, 99)
    k2, v2, h2 = letter.encode()
    assert (k2, v2) == (key, value) and h2[: len(headers)] == headers
    assert DeadLetter.decode(k2, v2, h2) == letter


def test_secrets_stay_out_of_reprs():
    k = KafkaSettings(bootstrap="b:9092", sasl_mechanism="PLAIN", sasl_username="u", sasl_password="hunter2")
    r = RedisSettings(url="redis://:s3cret@host:6379/0")
    assert "hunter2" not in repr(k) and "hunter2" not in k.redacted()
    assert "s3cret" not in repr(r) and "s3cret" not in r.redacted()
    assert k.client_kwargs()["sasl_plain_password"] == "hunter2"
