"""Candidate versions end to end, with a real broker and Redis: a worker scores a candidate in the shadow,
the records carry its verdict, the alerter ignores it, `index status` shows both alarm rates, `index promote`
switches the worker to it."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from alerting.config import AlertConfig, NoiseConfig
from alerting.consumer import AlertConsumer
from alerting.metrics import AlertMetrics
from alerting.sinks import WebhookSink
from framewatch.cli import main
from index_store.keys import Keys
from tests.integration import harness as h
from tests.integration.test_alerting import Hook, alert_topics_for

pytestmark = pytest.mark.integration

N = 6  # frames per step


def index_status(redis_url: str, capsys) -> dict[int, dict]:  # type: ignore[no-untyped-def]
    assert main(["index", "status", "idx", "--json", "--redis", redis_url]) == 0
    return {row["version"]: row for row in json.loads(capsys.readouterr().out)["versions"]}


def by_frame(kafka, topics) -> dict[str, list]:  # type: ignore[no-untyped-def]
    out: dict[str, list] = {}
    for r in h.scores(kafka, topics.scores):
        out.setdefault(r.frame_id, []).append(r)
    return out


def test_a_candidate_is_scored_in_the_shadow_never_alerts_and_takes_over_when_promoted(
    kafka_settings, redis_url, unique, capsys, monkeypatch
):
    prefix = f"t-{unique}"
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)
    topics = h.topics_for(unique, kafka_settings)
    dim = h.SMALL_SPEC.dim
    h.publish_index(redis_url, prefix, "idx", threshold=1e12)  # v1, active: calls every frame normal
    far = np.full((20, dim), 1000.0, dtype=np.float32)
    worker = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique))
    hook = Hook()
    registry = CollectorRegistry()
    alerter = AlertConsumer(
        AlertConfig(kafka=kafka_settings, topics=topics, alert_topics=alert_topics_for(unique, kafka_settings),
                    group_id=f"alerts-{unique}", from_beginning=True, noise=NoiseConfig(cooldown_s=0)),
        [WebhookSink(hook.url)], AlertMetrics(registry, ["webhook"]),
    )  # fmt: skip
    stop_alerts = threading.Event()
    alerts = threading.Thread(target=alerter.run, args=(stop_alerts,), daemon=True)
    alerts.start()
    try:
        assert h.wait_assigned(worker)
        before = h.frames("cam0", N)
        h.produce_frames(kafka_settings, topics.frames, before)
        assert h.wait_for_ids(kafka_settings, topics, h.ids(before))

        # A candidate appears: published (as `index fit --candidate` does) while the worker runs. It calls every
        # frame anomalous. A second candidate, of another backbone, is refused as an active version would be.
        cand = h.publish_index(redis_url, prefix, "idx", vectors=far, threshold=1e-6, candidate=True)
        other = h.SMALL_SPEC.__class__("resnet18", "random:1", resize=64, crop=64)
        refused = h.publish_index(redis_url, prefix, "idx", spec=other, threshold=1.0, candidate=True)
        assert (cand.version, refused.version) == (2, 3)
        assert h.wait_until(lambda: "candidate idx@3 refused" in h.readyz(worker)[1], 30)
        status, body = h.readyz(worker)
        assert status == 200 and "(shadow: idx@2)" in body  # the refusal is shown; the worker stays ready
        shadowed = h.frames("cam0", N, start=N)
        h.produce_frames(kafka_settings, topics.frames, shadowed)
        assert h.wait_for_ids(kafka_settings, topics, h.ids(before) | h.ids(shadowed))
        scored = by_frame(kafka_settings, topics)
        for f in before:
            assert all(r.shadow is None for r in scored[f.frame_id])
        for f in shadowed:
            for r in scored[f.frame_id]:
                assert (r.index_version, r.is_anomaly) == (1, False)
                assert [(s["version"], s["is_anomaly"]) for s in r.shadow] == [(2, True)]

        # The alerter read every record and raised nothing: the candidate's verdicts are not alerts.
        def alerter_read(n: int) -> bool:
            body = generate_latest(registry).decode()
            return f'framewatch_alert_records_total{{outcome="normal"}} {float(n)}' in body

        assert h.wait_until(lambda: alerter_read(2 * N), 60)
        assert hook.attempts == 0

        # index status: both rates over the same frames, counted by the worker in Redis.
        assert h.wait_until(lambda: index_status(redis_url, capsys)[2]["frames"] == N, 30)
        rows = index_status(redis_url, capsys)
        assert (rows[1]["role"], rows[1]["frames"], rows[1]["alarm_rate"], rows[1]["workers"]) == ("active", 2 * N, 0.0, 1)
        assert (rows[2]["role"], rows[2]["alarms"], rows[2]["alarm_rate"], rows[2]["active_alarm_rate"]) == (
            "candidate", N, 1.0, 0.0)  # fmt: skip
        assert (rows[3]["frames"], rows[3]["workers"]) == (0, 0)  # refused: never scored
        assert main(["index", "status", "idx", "--redis", redis_url]) == 0
        text = capsys.readouterr().out
        assert "100.00%" in text and "framewatch index promote idx VERSION" in text
        assert h.wait_until(lambda: main(["status", "--redis", redis_url]) == 0
                            and "idx@1+v2" in capsys.readouterr().out, 30)  # fmt: skip

        # Promote: the worker switches to version 2, which leaves the shadow, and its alarms are alerts now.
        assert main(["index", "promote", "idx", "2", "--redis", redis_url]) == 0
        capsys.readouterr()
        assert h.wait_until(lambda: "indexes: idx@2;" in h.readyz(worker)[1], 30)
        after = h.frames("cam0", N, start=2 * N)
        h.produce_frames(kafka_settings, topics.frames, after)
        assert h.wait_for_ids(kafka_settings, topics, h.ids(before) | h.ids(shadowed) | h.ids(after))
        scored = by_frame(kafka_settings, topics)
        for f in after:
            assert all((r.index_version, r.is_anomaly, r.shadow) == (2, True, None) for r in scored[f.frame_id])
        assert h.wait_until(lambda: len(hook.accepted) >= N, 60)
        assert sorted(a["frame_id"] for a in hook.accepted) == sorted(f.frame_id for f in after)
        assert {a["index_version"] for a in hook.accepted} == {2}
        rows = index_status(redis_url, capsys)
        assert rows[2]["role"] == "active" and 2 not in [v for v, r in rows.items() if r["role"] == "candidate"]
    finally:
        stop_alerts.set()
        alerts.join(30)
        hook.close()
        worker.close()
    assert worker.exit_code == [0]


def test_verdict_counts_of_several_workers_add_up_and_status_counts_only_the_period_asked(
    redis_client, redis_url, unique, capsys, monkeypatch
):
    import time

    import redis

    from index_store.repository import IndexRepository, VerdictCount

    prefix = f"t-{unique}"
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)
    h.publish_index(redis_url, prefix, "idx", threshold=1.0)
    h.publish_index(redis_url, prefix, "idx", threshold=2.0, candidate=True)
    minute = int(time.time() // 60)
    for _ in range(2):  # two workers, each with its own connection, counting the same minute
        IndexRepository(redis.Redis.from_url(redis_url), prefix).count_verdicts({
            ("idx", 1, minute): VerdictCount(10, 2, 2), ("idx", 2, minute): VerdictCount(10, 1, 2),
            ("idx", 1, minute - 120): VerdictCount(50, 50, 50),  # two hours ago
        })  # fmt: skip
    rows = index_status(redis_url, capsys)
    assert (rows[1]["frames"], rows[1]["alarms"], rows[2]["frames"], rows[2]["alarms"]) == (20, 4, 20, 2)
    assert rows[2]["active_alarm_rate"] == 0.2 and rows[2]["alarm_rate"] == 0.1
    assert main(["index", "status", "idx", "--since", "3h", "--json", "--redis", redis_url]) == 0
    assert json.loads(capsys.readouterr().out)["versions"][0]["frames"] == 120
    keys = Keys(prefix)
    assert 0 < redis_client.ttl(keys.verdicts("idx", 1, minute // 60)) <= 2 * 86_400  # the counters expire
