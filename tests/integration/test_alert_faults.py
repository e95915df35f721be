"""`framewatch alert` as an operator runs it (a child process) against a real broker and local HTTP servers:
a webhook that hangs, one that fails for a while, credentials in URLs, Slack escaping, the start position."""

from __future__ import annotations

import base64
import json
import os
import sys
import time

import pytest
from kafka import KafkaConsumer, TopicPartition

from tests.integration import harness as h
from tests.integration.test_alerting import Hook, alert_dead_letters, alert_topics_for, produce_scores, record

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def alerter(
    kafka, topics, alert_topics, group: str, *extra: str, env: dict[str, str] | None = None
) -> h.WorkerProcess:  # type: ignore[no-untyped-def]
    env = {"FRAMEWATCH_TOPIC_SCORES": topics.scores, "FRAMEWATCH_TOPIC_ALERTS_DLQ": alert_topics.dead_letters,
           **(env or {})}  # fmt: skip
    cmd = [sys.executable, "-m", "framewatch.cli", "alert", "--kafka", kafka.bootstrap, "--group", group,
           "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--cooldown", "0", *extra]  # fmt: skip
    return h.WorkerProcess(cmd, {**os.environ, **env})


def stdout_alerts(proc: h.WorkerProcess) -> list[str]:
    return [
        json.loads(line)["frame_id"]
        for line in list(proc.lines)
        if line.startswith('{"type": "framewatch.anomaly"')
    ]


def committed(kafka, group: str, topic: str) -> dict[int, int]:  # type: ignore[no-untyped-def]
    consumer = KafkaConsumer(group_id=group, enable_auto_commit=False, **kafka.client_kwargs())
    try:
        return {
            p: consumer.committed(TopicPartition(topic, p)) or 0 for p in consumer.partitions_for_topic(topic)
        }
    finally:
        consumer.close()


def read_through(kafka, topic: str) -> dict[int, int]:  # type: ignore[no-untyped-def]
    """Per partition, one past the last offset in ``topic`` (what a group that has read everything commits)."""
    out: dict[int, int] = {}
    for m in h.read_topic(kafka, topic):
        out[m.partition] = max(out.get(m.partition, 0), m.offset + 1)
    return out


def test_a_hanging_webhook_neither_evicts_the_alerter_nor_slows_stdout_and_its_alerts_are_dead_lettered(
    kafka_settings, unique
):
    topics, alert_topics = h.topics_for(unique, kafka_settings), alert_topics_for(unique, kafka_settings)
    hook, group = Hook(hang=True), f"alerts-{unique}"
    produce_scores(kafka_settings, topics.scores, [record(f"old-{i}", f"cam{i % 2}") for i in range(3)])
    proc = alerter(kafka_settings, topics, alert_topics, group, "--per-frame", "--webhook", hook.url, "--stdout",
                   "--webhook-timeout", "1", "--retry-for", "4", "--session-timeout-ms", "6000",
                   "--max-poll-interval-ms", "6000")  # fmt: skip
    try:
        proc.port()  # started: every score published from here on must be alerted, though the join takes longer
        sent = [f"new-{i}" for i in range(12)]
        for i, fid in enumerate(sent):  # flagged frames keep coming for longer than the poll interval
            produce_scores(kafka_settings, topics.scores, [record(fid, f"cam{i % 2}")])
            time.sleep(0.5)
        assert h.wait_until(lambda: sorted(stdout_alerts(proc)) == sorted(sent), 90), proc.output()
        letters = lambda: alert_dead_letters(kafka_settings, alert_topics.dead_letters)  # noqa: E731
        assert len(letters()) < 12  # stdout had every alert while the webhook still held some (--retry-for 4)
        assert h.wait_until(lambda: len(letters()) >= 12, 90), proc.output()
        ends = read_through(kafka_settings, topics.scores)
        done = lambda: {p: committed(kafka_settings, group, topics.scores).get(p) for p in ends}  # noqa: E731
        assert h.wait_until(lambda: done() == ends, 30), (done(), ends)
        assert proc.alive()
        assert proc.metric("framewatch_alert_partitions_revoked_total") == 0  # never evicted from its group
        assert proc.metric("framewatch_alert_partitions_assigned") == 2
        assert proc.metric("framewatch_alert_start_skipped_total") == 3
    finally:
        status = proc.terminate(60) if proc.alive() else proc.proc.returncode
        proc.close()
        hook.close()
    assert status == 0, proc.output()
    assert sorted(x.alert["frame_id"] for x in letters()) == sorted(sent)
    assert {(x.sink, x.reason) for x in letters()} == {("webhook", "retry-time-exceeded")}
    assert not any(a.startswith("old-") for a in stdout_alerts(proc))  # published before it started
    assert "CommitFailedError" not in proc.output()


def test_credentials_stay_out_of_logs_basic_auth_arrives_slack_is_escaped_and_500s_lose_nothing(
    kafka_settings, unique
):
    topics, alert_topics = h.topics_for(unique, kafka_settings), alert_topics_for(unique, kafka_settings)
    fail_for = 8.0
    hook, nopath, slack = Hook(fail_until=time.monotonic() + 1e9), Hook(), Hook()
    with_user = (
        f"http://al%40ice:p%40ss-w0rd-xyz@127.0.0.1:{hook.port}/hooks/path-secret-123?token=query-secret-456"
    )
    no_path = f"http://127.0.0.1:{nopath.port}?token=nopath-secret-789"
    group = f"alerts-{unique}"
    proc = alerter(kafka_settings, topics, alert_topics, group, "--per-frame", "--slack", slack.url, "--from-beginning",
                   env={"FRAMEWATCH_ALERT_WEBHOOKS": f"{with_user} {no_path}"})  # fmt: skip
    try:
        proc.port()
        hook.fail_until = time.monotonic() + fail_for  # answers 500 for a while, then 200
        sent = [f"f-{i}" for i in range(10)]
        produce_scores(
            kafka_settings, topics.scores, [record(fid, f"cam{i % 3}") for i, fid in enumerate(sent)]
        )
        produce_scores(
            kafka_settings, topics.scores, [record("<http://evil.example|click> & more", "<!channel>")]
        )
        every = sent + ["<http://evil.example|click> & more"]
        accepted = lambda hk: sorted({a["frame_id"] for a in hk.accepted})  # noqa: E731
        assert h.wait_until(
            lambda: accepted(hook) == sorted(every) and accepted(nopath) == sorted(every), 120
        ), proc.output()
        assert h.wait_until(lambda: len(slack.accepted) >= len(every), 30)
        assert proc.metric('framewatch_alert_retries_total{sink="webhook"}') > 0
    finally:
        proc.terminate(60)
        proc.close()
        for hk in (hook, nopath, slack):
            hk.close()
    out = proc.output()
    for secret in ("p%40ss-w0rd-xyz", "p@ss-w0rd-xyz", "al%40ice", "al@ice", "path-secret-123",
                   "query-secret-456", "nopath-secret-789", "secret-token"):  # fmt: skip
        assert secret not in out, f"{secret!r} leaked into the alerter's log"
    assert "HTTP 500" in out  # the retries were logged, with the target redacted
    assert f"http://127.0.0.1:{hook.port}/***" in out
    assert {base64.b64decode(a.split()[1]).decode() for a in hook.auth} == {"al@ice:p@ss-w0rd-xyz"}
    assert set(hook.paths) == {"/hooks/path-secret-123?token=query-secret-456"}
    assert set(nopath.paths) == {"/?token=nopath-secret-789"} and set(nopath.auth) == {None}
    assert alert_dead_letters(kafka_settings, alert_topics.dead_letters) == []
    [evil] = [a["text"] for a in slack.accepted if "channel" in a["text"]]
    assert "<!channel>" not in evil and "&lt;!channel&gt;" in evil
    assert (
        "<http://evil.example|click>" not in evil and "&lt;http://evil.example|click&gt; &amp; more" in evil
    )
