"""`framewatch alert`'s consumer against a real broker and a real local HTTP server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry, generate_latest

from alerting.config import AlertConfig, NoiseConfig, RetryConfig
from alerting.consumer import AlertConsumer
from alerting.dead_letters import AlertDeadLetter
from alerting.metrics import AlertMetrics
from alerting.sinks import SlackSink, WebhookSink
from framewatch.admin import ensure_named_topics
from tests.integration import harness as h
from wire.records import ScoreRecord
from wire.topics import AlertTopics

pytestmark = pytest.mark.integration


class Hook:
    """A real HTTP server that answers 500 to the first ``fail_first`` POSTs (or to every POST until the
    monotonic time ``fail_until``), then 200, keeping every body and Authorization header; with ``hang`` it
    accepts each request and never answers."""

    def __init__(self, fail_first: int = 0, fail_until: float = 0.0, hang: bool = False) -> None:
        self.fail_first, self.fail_until, self.hang = fail_first, fail_until, hang
        self.attempts, self.accepted, self.auth, self.paths = 0, [], [], []
        self.released = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # noqa: ANN002
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.attempts += 1
                hook.auth.append(self.headers.get("Authorization"))
                hook.paths.append(self.path)
                if hook.hang:
                    hook.released.wait()
                    return
                ok = hook.attempts > hook.fail_first and time.monotonic() >= hook.fail_until
                if ok:
                    hook.accepted.append(body)
                self.send_response(200 if ok else 500)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hooks/secret-token"

    def close(self) -> None:
        self.released.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def record(fid: str, source: str, anomaly: bool = True) -> ScoreRecord:
    return ScoreRecord(frame_id=fid, source=source, sequence=0, capture_time=0.0, score_time=0.0,
                       score=9.0 if anomaly else 1.0, threshold=5.0, is_anomaly=anomaly, index_name="idx",
                       index_version=1, backbone="resnet18", latency_s=0.1, frame_topic="frames",
                       frame_partition=0, frame_offset=7)  # fmt: skip


def alert_topics_for(unique: str, settings) -> AlertTopics:  # type: ignore[no-untyped-def]
    topics = AlertTopics(dead_letters=f"alerts-dlq-{unique}", incidents=f"incidents-{unique}")
    ensure_named_topics(settings, [topics.dead_letters, topics.incidents], partitions=2)
    return topics


def alert_dead_letters(settings, topic: str) -> list[AlertDeadLetter]:  # type: ignore[no-untyped-def]
    return [AlertDeadLetter.decode(m.value) for m in h.read_topic(settings, topic)]


def produce_scores(kafka, topic: str, records: list[ScoreRecord]) -> None:
    producer = KafkaProducer(acks="all", **kafka.client_kwargs())
    for r in records:
        key, value = r.encode()
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def test_alerts_retried_on_500_delivered_once_per_frame_and_held_back_by_cooldown(kafka_settings, unique):
    topics = h.topics_for(unique, kafka_settings)
    webhook, slack = Hook(fail_first=2), Hook()
    registry = CollectorRegistry()
    cfg = AlertConfig(kafka=kafka_settings, topics=topics, alert_topics=alert_topics_for(unique, kafka_settings),
                      group_id=f"alerts-{unique}", from_beginning=True, noise=NoiseConfig(cooldown_s=3600),
                      retry=RetryConfig(first_backoff_s=0.05))  # fmt: skip
    sinks = [WebhookSink(webhook.url), SlackSink(slack.url)]
    consumer = AlertConsumer(cfg, sinks, AlertMetrics(registry, ["webhook", "slack"]))
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        produce_scores(kafka_settings, topics.scores, [
            record("A-1", "camA"),
            record("A-1", "camA"),  # the same frame again (at-least-once)
            record("A-2", "camA"),  # within camA's cooldown
            record("A-3", "camA", anomaly=False),
            record("B-1", "camB"),
        ])  # fmt: skip
        assert h.wait_until(lambda: len(webhook.accepted) >= 2 and len(slack.accepted) >= 2, timeout=60)
        body = generate_latest(registry).decode()
        assert h.wait_until(
            lambda: (
                'framewatch_alert_records_total{outcome="normal"} 1.0' in generate_latest(registry).decode()
            ),
            30,
        )
    finally:
        stop.set()
        thread.join(30)
        webhook.close()
        slack.close()
    assert sorted(a["frame_id"] for a in webhook.accepted) == ["A-1", "B-1"]
    assert webhook.attempts == 4  # two 500s, then one success for each of the two alerts
    first = webhook.accepted[0]
    assert first["source"] == "camA" and first["score"] == 9.0 and first["threshold"] == 5.0
    assert first["frame"] == {"topic": "frames", "partition": 0, "offset": 7}
    assert len(slack.accepted) == 2 and all("Anomaly on cam" in a["text"] for a in slack.accepted)
    body = generate_latest(registry).decode()
    assert 'framewatch_alert_retries_total{sink="webhook"} 2.0' in body
    assert 'framewatch_alerts_delivered_total{sink="webhook"} 2.0' in body
    assert 'framewatch_alerts_dead_lettered_total{reason="retry-time-exceeded",sink="webhook"} 0.0' in body
    assert 'framewatch_alert_records_total{outcome="duplicate"} 1.0' in body
    assert 'framewatch_alert_records_total{outcome="cooldown"} 1.0' in body


def test_an_alert_that_cannot_be_delivered_in_its_retry_time_is_dead_lettered(kafka_settings, unique, caplog):
    topics = h.topics_for(unique, kafka_settings)
    alert_topics = alert_topics_for(unique, kafka_settings)
    dead = Hook(fail_first=10**9)
    registry = CollectorRegistry()
    cfg = AlertConfig(kafka=kafka_settings, topics=topics, alert_topics=alert_topics, group_id=f"alerts-{unique}",
                      from_beginning=True, retry=RetryConfig(retry_for_s=1.0, first_backoff_s=0.05))  # fmt: skip
    consumer = AlertConsumer(cfg, [WebhookSink(dead.url)], AlertMetrics(registry, ["webhook"]))
    stop = threading.Event()
    thread = threading.Thread(target=consumer.run, args=(stop,), daemon=True)
    thread.start()
    try:
        produce_scores(kafka_settings, topics.scores, [record("X-1", "camX")])
        assert h.wait_until(
            lambda: len(alert_dead_letters(kafka_settings, alert_topics.dead_letters)) == 1, 90
        )
    finally:
        stop.set()
        thread.join(30)
        dead.close()
    [letter] = alert_dead_letters(kafka_settings, alert_topics.dead_letters)
    assert letter.alert["frame_id"] == "X-1" and letter.source == "camX" and letter.sink == "webhook"
    assert letter.reason == "retry-time-exceeded" and letter.attempts >= 2 and "HTTP 500" in letter.detail
    assert dead.attempts == letter.attempts
    assert "secret-token" not in letter.target and letter.target.endswith("/***")
    body = generate_latest(registry).decode()
    assert 'framewatch_alerts_dead_lettered_total{reason="retry-time-exceeded",sink="webhook"} 1.0' in body
    logged = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("X-1" in m and "dead-letter" in m for m in logged)
    assert not any(
        "secret-token" in r.getMessage() for r in caplog.records
    )  # the webhook path stays out of logs


def test_a_rebalance_mid_stream_neither_stops_an_alerter_nor_loses_an_alert(kafka_settings, unique):
    topics, alert_topics = h.topics_for(unique, kafka_settings), alert_topics_for(unique, kafka_settings)
    hook, stop = Hook(), threading.Event()
    cfg = AlertConfig(kafka=kafka_settings, topics=topics, alert_topics=alert_topics, group_id=f"alerts-{unique}",
                      from_beginning=True, noise=NoiseConfig(cooldown_s=0), session_timeout_ms=6000)  # fmt: skip
    registries = [CollectorRegistry(), CollectorRegistry()]
    consumers = [
        AlertConsumer(cfg, [WebhookSink(hook.url)], AlertMetrics(r, ["webhook"])) for r in registries
    ]
    threads = [threading.Thread(target=c.run, args=(stop,), daemon=True) for c in consumers]
    seen = lambda: {a["frame_id"] for a in hook.accepted}  # noqa: E731
    try:
        threads[0].start()
        first = [f"a-{i}" for i in range(20)]
        produce_scores(kafka_settings, topics.scores, [record(f, f"cam{i}") for i, f in enumerate(first)])
        assert h.wait_until(lambda: set(first) <= seen(), 90)
        threads[1].start()  # the group rebalances while scores keep coming
        second = [f"b-{i}" for i in range(40)]
        for i, f in enumerate(second):
            produce_scores(kafka_settings, topics.scores, [record(f, f"cam{i}")])
            time.sleep(0.1)
        assert h.wait_until(lambda: set(second) <= seen(), 120)
        body = generate_latest(registries[0]).decode()
        assert h.metric_value(body, "framewatch_alert_partitions_revoked_total") >= 1  # it did rebalance ...
        assert all(t.is_alive() for t in threads)  # ... and neither alerter left its loop
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        hook.close()
