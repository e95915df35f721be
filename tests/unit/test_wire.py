"""The wire contracts: round trips and typed decode errors."""

from __future__ import annotations

import json

import pytest

from tests.frame_corpus import hostile_headers, with_headers
from wire.anomaly_map import decode_map, encode_map
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
    got = FrameRecord.decode(key, value, stripped, fallback_id="frames/0/42", fallback_time=1700000012.5)
    assert (got.frame_id, got.source, got.sequence, got.capture_time) == (
        "frames/0/42",
        "cam1",
        -1,
        1700000012.5,
    )
    assert not got.capture_time_replaced


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
    assert data["is_anomaly"] is True and data["index_version"] == 2 and data["schema_version"] == 5
    assert ScoreRecord.decode(value) == s


def test_score_record_why_fields_round_trip_and_map_decodes_close():
    grid = [[0.0, 1.0, 2.0], [4.0, 8.0, 0.5]]
    s = ScoreRecord(frame_id="f", source="cam1", sequence=3, capture_time=1.0, score_time=2.0, score=8.0,
                    threshold=3.0, is_anomaly=True, index_name="lot", index_version=2, backbone="r18",
                    latency_s=1.0, frame_topic="frames", frame_partition=1, frame_offset=42,
                    hotspot=[10, 20, 30, 40], anomaly_map=encode_map(grid), neighbors=["a.png", "b.png"])  # fmt: skip
    back = ScoreRecord.decode(s.encode()[1])
    assert back == s and (back.frame_topic, back.frame_partition, back.frame_offset) == ("frames", 1, 42)
    decoded = decode_map(back.anomaly_map)
    assert all(abs(a - b) <= 8.0 / 510 + 1e-9 for ra, rb in zip(decoded, grid) for a, b in zip(ra, rb))


def test_version_1_score_records_still_parse_and_unknown_fields_are_ignored():
    v1 = {"frame_id": "f", "source": "cam1", "sequence": 3, "capture_time": 1.0, "score_time": 2.0, "score": 4.5,
          "threshold": 3.0, "is_anomaly": True, "index_name": "lot", "index_version": 2, "backbone": "r18",
          "latency_s": 1.0, "origin": "", "normalized_score": 1.5, "window_score": None, "worker": "w"}  # fmt: skip
    rec = ScoreRecord.decode(json.dumps(v1).encode())
    assert rec.schema_version == 1 and rec.frame_offset == -1 and rec.anomaly_map is None
    newer = dict(v1, schema_version=3, something_new={"x": 1})
    assert ScoreRecord.decode(json.dumps(newer).encode()).schema_version == 3


def test_non_finite_scores_are_refused_at_encode():
    s = ScoreRecord(frame_id="f", source="c", sequence=0, capture_time=0, score_time=0, score=float("nan"),
                    threshold=1.0, is_anomaly=False, index_name="i", index_version=1, backbone="b", latency_s=0)  # fmt: skip
    with pytest.raises(ValueError):
        s.encode()


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


def test_ids_are_bounded_and_a_long_origin_is_cut():
    key, value, headers = frame().encode()
    long_id = [(k, b"x" * 300 if k == H_FRAME_ID else v) for k, v in headers]
    with pytest.raises(FrameDecodeError, match="frame id is 300 characters"):
        FrameRecord.decode(key, value, long_id)
    control = [(k, b"cam\x00one" if k == "fw-source" else v) for k, v in headers]
    with pytest.raises(FrameDecodeError, match="control characters"):
        FrameRecord.decode(key, value, control)
    huge_origin = [(k, b"o" * 3_600_000 if k == "fw-origin" else v) for k, v in headers]
    rec = FrameRecord.decode(key, value, huge_origin)
    assert len(rec.origin) <= 1024 and rec.origin.endswith("[3600000 chars]")


def test_a_dead_letter_that_would_not_fit_keeps_reason_size_and_hash_but_not_the_payload():
    import hashlib

    big = b"\x00" * 2_000_000
    letter = DeadLetter(b"cam1", big, [("fw-origin", b"o" * 100_000)], "undecodable", "x" * 5000, "frames", 2, 9)
    key, value, headers = letter.encode(max_bytes=1_000_000)
    h = dict(headers)
    assert value is None and h["fw-error-payload"] == b"omitted"
    assert h["fw-error-payload-size"] == b"2000000"
    assert h["fw-error-payload-sha256"] == hashlib.sha256(big).hexdigest().encode()
    assert "fw-origin" not in h and len(h["fw-error-detail"]) <= 1000  # 100 KB of headers dropped too
    back = DeadLetter.decode(key, value, headers)
    assert back.payload_omitted and back.reason == "undecodable" and (back.partition, back.offset) == (2, 9)
    assert (back.payload_size, back.payload_sha256) == (2_000_000, hashlib.sha256(big).hexdigest())
    again = dict(back.encode(max_bytes=1_000_000)[2])  # passed on (a DLQ replayer): size and hash unchanged
    assert again["fw-error-payload-size"] == b"2000000" and again["fw-error-payload-sha256"] == h["fw-error-payload-sha256"]
    assert letter.encode(max_bytes=5_000_000)[1] == big  # it fits: kept whole


def test_a_header_key_that_was_not_utf8_makes_a_malformed_header_error():
    key, value, headers = frame().encode()
    with pytest.raises(FrameDecodeError, match="header key") as e:
        FrameRecord.decode(key, value, headers + [("\ufffdbad\\xff", b"1")])
    assert e.value.reason == "malformed-header"


def test_redis_url_secrets_redacted_in_every_form():
    for url, password, fragment in [
        ("redis://:p@ss-word@host:6379/0", "p@ss-word", "ss-word"),  # a raw @ inside the password
        ("redis://user:pa:ss@host/0", "pa:ss", "pa:ss"),
        ("redis://host:6379/0?password=hunter2&db=1", "hunter2", "hunter2"),
        ("rediss://host/0?ssl_cert_reqs=none&Password=hunter3", "hunter3", "hunter3"),
    ]:
        r = RedisSettings(url=url)
        assert fragment not in r.redacted() and fragment not in repr(r), r.redacted()
        assert "host" in r.redacted()
        assert fragment not in r.scrub(f"Error connecting with {url}: bad password {password}")


HOSTILE = hostile_headers()


@pytest.mark.parametrize("sample", HOSTILE, ids=[s.name for s in HOSTILE])
def test_hostile_headers_are_refused_or_made_sane(sample):
    now = 1_800_000_000.0
    key, value, headers = frame(capture_time=now - 5).encode()
    hostile = with_headers(headers, sample.headers)
    if sample.reason:
        with pytest.raises(FrameDecodeError) as e:
            FrameRecord.decode(key, value, hostile, fallback_time=now - 2, now=now)
        assert e.value.reason == sample.reason and e.value.message
        assert "\r" not in str(e.value) and "\n" not in str(e.value)  # the detail is a dead-letter header too
        return
    rec = FrameRecord.decode(key, value, hostile, fallback_time=now - 2, now=now)
    assert rec.capture_time == now - 2 and rec.capture_time_replaced  # the message's timestamp instead


def test_an_absurd_capture_time_with_an_absurd_timestamp_falls_back_to_now():
    key, value, headers = frame().encode()
    hostile = with_headers(headers, {H_CAPTURE_TIME: b"-1e300"})
    rec = FrameRecord.decode(key, value, hostile, fallback_time=0.0, now=1_800_000_000.0)
    assert rec.capture_time == 1_800_000_000.0 and rec.capture_time_replaced
    sane = FrameRecord.decode(key, value, headers, now=1_800_000_000.0)
    assert sane.capture_time == 1700000000.25 and not sane.capture_time_replaced
    ahead = with_headers(
        headers, {H_CAPTURE_TIME: b"1800086000.0"}
    )  # 23 h ahead: a clock off by a zone, kept
    assert FrameRecord.decode(key, value, ahead, now=1_800_000_000.0).capture_time == 1800086000.0


def test_numbers_are_bounded_but_int64_edges_pass():
    key, value, headers = frame().encode()
    top = FrameRecord.decode(key, value, with_headers(headers, {H_SEQUENCE: str(2**63 - 1).encode()}))
    assert top.sequence == 2**63 - 1


def _score_json(**kw) -> bytes:
    s = ScoreRecord(frame_id="f", source="cam1", sequence=3, capture_time=1.7e9, score_time=1.7e9, score=4.5,
                    threshold=3.0, is_anomaly=True, index_name="lot", index_version=2, backbone="r18", latency_s=1.0)  # fmt: skip
    data = json.loads(s.encode()[1])
    data.update(kw)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    "fields",
    [
        {"capture_time": 1e300},
        {"capture_time": -1e300},
        {"score_time": -1},
        {"score": "high"},
        {"score": True},
        {"sequence": 10**400},
        {"sequence": 1.5},
        {"source": 7},
        {"source": "cam\x1b[2J"},
        {"frame_id": "f\r\nX: y"},
        {"origin": "a\u2028b"},
        {"threshold": "3"},
        {"is_anomaly": 1},
        {"hotspot": [1, 2, "x", 4]},
        {"neighbors": "a.png"},
        {"anomaly_map": [1]},
        {"source": "c" * 300},
    ],
    ids=str,
)
def test_score_records_out_of_contract_are_typed_errors_for_every_reader(fields):
    with pytest.raises(ScoreDecodeError, match="out of their contract"):
        ScoreRecord.decode(_score_json(**fields))
