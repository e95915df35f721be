"""Alert delivery without a broker: secret webhook URLs, Slack escaping, per-sink lanes, committable offsets."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from alerting.config import RetryConfig
from alerting.delivery import Delivery
from alerting.endpoints import BadEndpoint, Endpoint
from alerting.metrics import AlertMetrics
from alerting.offsets import PendingOffsets
from alerting.sinks import Alert, DeliveryFailed, slack_escape
from tests.integration.harness import wait_until
from wire.records import ScoreRecord


def rec(fid: str, source: str = "cam") -> ScoreRecord:
    return ScoreRecord(frame_id=fid, source=source, sequence=0, capture_time=0.0, score_time=0.0, score=9.0,
                       threshold=5.0, is_anomaly=True, index_name="idx", index_version=1, backbone="resnet18",
                       latency_s=0.1)  # fmt: skip


@pytest.mark.parametrize("url, shown, secrets", [
    ("https://alice:s3cr%40t@hooks.example:8443/path/tok123456", "https://hooks.example:8443/***",
     ["alice", "s3cr%40t", "s3cr@t", "tok123456"]),
    ("https://hooks.example?token=abcdef", "https://hooks.example/***", ["abcdef"]),
    ("http://bob:pw9@hooks.example", "http://hooks.example", ["bob", "pw9"]),
    ("https://hooks.slack.com/services/T000/B000/XXXXXXXXXXXX", "https://hooks.slack.com/***",
     ["XXXXXXXXXXXX", "services/T000"]),
])  # fmt: skip
def test_only_scheme_host_and_port_of_a_webhook_url_are_shown(url, shown, secrets):
    e = Endpoint.parse(url)
    assert e.redacted() == shown and repr(e) == f"Endpoint(shown={shown!r})"
    scrubbed = e.scrub(f"error talking to {url}: {' '.join(secrets)}")
    assert not any(s in scrubbed for s in secrets)


def test_userinfo_becomes_basic_auth_and_leaves_the_request_url():
    e = Endpoint.parse("https://alice:s3cr%40t@hooks.example/x")
    assert e.request_url == "https://hooks.example/x"
    import base64

    assert base64.b64decode(e.authorization.split()[1]).decode() == "alice:s3cr@t"


def test_a_bad_webhook_url_is_refused_without_repeating_it():
    with pytest.raises(BadEndpoint) as err:
        Endpoint.parse("ftp://u:topsecret@host/x")
    assert "topsecret" not in str(err.value)


def test_slack_text_escapes_mentions_and_links():
    assert slack_escape("<!channel> & <http://x|y>") == "&lt;!channel&gt; &amp; &lt;http://x|y&gt;"


def test_committable_offset_waits_for_the_oldest_unsettled_alert():
    p = PendingOffsets()
    p.read("tp", 10)
    r11 = p.read("tp", 11, holds=2)
    p.read("tp", 12)
    assert p.committable() == {"tp": 11}
    r11()
    assert p.committable() == {"tp": 11}
    r11()
    assert p.committable() == {"tp": 13}
    late = p.read("tp", 13, holds=1)
    p.forget(["tp"])
    late()  # a lane settling after the revocation changes nothing
    assert p.committable() == {}


class FakeSink:
    def __init__(self, name: str, fail: int = 0, hang: float = 0.0, retryable: bool = True) -> None:
        self.name, self.fail, self.hang, self.retryable, self.got = name, fail, hang, retryable, []

    def send(self, alert: Alert) -> None:
        if self.hang:
            time.sleep(self.hang)
        if self.fail:
            self.fail -= 1
            raise DeliveryFailed("HTTP 500", self.retryable)
        self.got.append(alert.key)


def delivery(sinks, retry_for=5.0):  # type: ignore[no-untyped-def]
    registry, letters = CollectorRegistry(), []
    d = Delivery(sinks, RetryConfig(retry_for_s=retry_for, first_backoff_s=0.01, max_backoff_s=0.05),
                 AlertMetrics(registry, [s.name for s in sinks]), letters.append)  # fmt: skip
    return d.start(), letters, registry


def test_a_hanging_sink_does_not_slow_another_and_ends_in_dead_letters():
    slow, fast = FakeSink("webhook", fail=10**6, hang=0.2), FakeSink("stdout")
    d, letters, registry = delivery([slow, fast], retry_for=0.5)
    settled = []
    for i in range(5):
        d.submit(Alert(rec(f"f{i}")), lambda i=i: settled.append(i))
    assert wait_until(lambda: len(fast.got) == 5, timeout=0.5, every=0.01)  # not 5 x 0.2 s behind the webhook
    assert wait_until(lambda: len(settled) == 5, timeout=10, every=0.05)
    d.close(1.0)
    assert sorted(letter.alert["frame_id"] for letter in letters) == [f"f{i}" for i in range(5)]
    assert {letter.reason for letter in letters} == {"retry-time-exceeded"}
    body = generate_latest(registry).decode()
    assert 'framewatch_alerts_dead_lettered_total{reason="retry-time-exceeded",sink="webhook"} 5.0' in body
    assert 'framewatch_alert_backlog{sink="webhook"} 0.0' in body


def test_a_refused_alert_is_dead_lettered_at_once_and_failures_then_success_lose_nothing():
    refusing, flaky = FakeSink("slack", fail=1, retryable=False), FakeSink("webhook", fail=3)
    d, letters, _ = delivery([refusing, flaky])
    done = threading.Event()
    d.submit(Alert(rec("a")), done.set)
    d.submit(Alert(rec("b")), lambda: None)
    assert wait_until(lambda: flaky.got == ["a", "b"] and refusing.got == ["b"], timeout=5, every=0.01)
    assert done.wait(1)
    d.close(1.0)
    assert [(x.sink, x.reason, x.alert["frame_id"]) for x in letters] == [("slack", "refused", "a")]
