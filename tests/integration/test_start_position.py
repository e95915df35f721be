"""Issue 18, findings 9 and 11: where a worker starts reading, and what /readyz says while it starts.

A worker with ``--start-from latest`` scores every frame published after its
process started, however long the model takes to build; frames published
before it are skipped, counted and logged; a partition never committed keeps
its frames when it moves to a worker started later. While the embedder builds,
/readyz says so, and (confluent-kafka) does not call an up broker unreachable.
Real broker, real Redis, both Kafka clients.
"""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time

import pytest
from kafka import KafkaProducer

from index_store.embedder import Embedder
from tests.integration import harness as h
from worker.loop import Worker

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ids = h.ids
CLIENTS = ["kafka-python", "confluent"]


@pytest.fixture(params=CLIENTS)
def client(request):  # type: ignore[no-untyped-def]
    if request.param == "confluent":
        pytest.importorskip(
            "confluent_kafka", reason="confluent-kafka not installed (pip install '.[confluent]')"
        )
    return request.param


@pytest.fixture
def setup(kafka_settings, redis_url, unique):  # type: ignore[no-untyped-def]
    topics = h.topics_for(unique, kafka_settings, partitions=2)
    return topics, f"t-{unique}"


get = h.http_get


def produce_at(settings, topic: str, frames: list, timestamp_ms: int) -> None:  # type: ignore[no-untyped-def]
    """Frames with a record timestamp of our choosing (frames retained from an hour ago)."""
    producer = KafkaProducer(acks="all", **settings.client_kwargs())
    for f in frames:
        key, value, headers = f.encode()
        producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=timestamp_ms)
    producer.flush()
    producer.close()


def test_a_worker_started_0s_before_its_cameras_scores_every_frame(
    kafka_settings, redis_url, setup, unique, client
):
    """`framewatch work --start-from latest`, then the cameras at once: no frame is lost to the model build.
    Its /metrics listen only where --metrics-host (or FRAMEWATCH_METRICS_HOST) says."""
    topics, prefix = setup
    h.publish_index(redis_url, prefix, "idx")
    produced = h.interleave(*(h.frames(source, 15) for source in h.sources_covering(2)))
    listen = ("--metrics-host", "127.0.0.2") if client == "kafka-python" else ()
    worker = h.worker_process(kafka_settings, redis_url, prefix, topics, f"g-{unique}",
                              extra=("--start-from", "latest", "--kafka-client", client, *listen),
                              env_extra=None if listen else {"FRAMEWATCH_METRICS_HOST": "127.0.0.2"})  # fmt: skip
    try:
        # 3 s of frames, from the worker's first second
        h.Feeder(kafka_settings, topics.frames, produced, rate=10).start().join()
        assert h.wait_for_ids(kafka_settings, topics, ids(produced), 120), worker.output()
        scored, _ = h.assert_nothing_lost(kafka_settings, topics, ids(produced))
        assert worker.metric("framewatch_frames_skipped_total") == 0
        assert "has no committed offset: it starts at offset 0" in worker.output()
        assert worker.address()[0] == "127.0.0.2"
        with pytest.raises(OSError):  # not on 127.0.0.1 (nor on any other interface)
            socket.create_connection(("127.0.0.1", worker.port()), timeout=5).close()
    finally:
        worker.close()


def test_frames_published_before_the_start_are_skipped_counted_and_logged(
    kafka_settings, redis_url, setup, unique, client, caplog
):
    topics, prefix = setup
    h.publish_index(redis_url, prefix, "idx")
    sources = h.sources_covering(2)
    old = [f for source in sources for f in h.frames(source, 6)]
    produce_at(kafka_settings, topics.frames, old, int((time.time() - 3600) * 1000))
    cfg = h.worker_config(
        kafka_settings, redis_url, prefix, topics, unique, start_from="latest", kafka_client=client
    )
    caplog.set_level(logging.INFO, logger="worker.intake")
    running = h.start_worker(cfg)
    try:
        new = [f for source in sources for f in h.frames(source, 6, start=100)]
        h.produce_frames(kafka_settings, topics.frames, new)  # while the worker starts
        assert h.wait_for_ids(kafka_settings, topics, ids(new), 90)
        scored, _ = h.outcome(kafka_settings, topics)
        assert not ids(old) & set(scored), "frames from before the start were scored"
        body = get(running.worker.health.port, "/metrics")[1]
        assert h.metric_value(body, "framewatch_frames_skipped_total") == len(old)
        skipped = [
            r.getMessage() for r in caplog.records if "older frames there are skipped" in r.getMessage()
        ]
        assert len(skipped) == 2 and all("6 older frames" in m for m in skipped), skipped
    finally:
        running.close()
    assert running.exit_code == [0]


def test_a_partition_never_committed_keeps_its_frames_when_it_moves_to_a_worker_started_later(
    kafka_settings, redis_url, setup, unique, client
):
    """The first worker holds both partitions without committing anything (no index yet); frames arrive;
    a second worker joins and takes a partition: it resumes where the first one started, not at its own start."""
    topics, prefix = setup
    cfg = h.worker_config(kafka_settings, redis_url, prefix, topics, unique, start_from="latest", kafka_client=client,
                          start_slack_s=0.0)  # fmt: skip
    first = h.start_worker(cfg)
    second = None
    try:
        assert h.wait_until(
            lambda: len(first.worker.status().partitions) == 2
        )
        produced = h.interleave(*(h.frames(source, 8) for source in h.sources_covering(2)))
        h.produce_frames(kafka_settings, topics.frames, produced)
        second = h.start_worker(cfg)  # started after every one of those frames
        assert h.wait_until(
            lambda: len(second.worker.status().partitions) == 1, 60
        )
        h.publish_index(redis_url, prefix, "idx")
        assert h.wait_for_ids(kafka_settings, topics, ids(produced), 90)
        h.assert_nothing_lost(kafka_settings, topics, ids(produced))
    finally:
        first.close()
        if second is not None:
            second.close()


def test_readyz_says_the_embedder_is_building_and_an_up_broker_is_never_unreachable(
    kafka_settings, redis_url, setup, unique, client
):
    topics, prefix = setup
    h.publish_index(redis_url, prefix, "idx")
    building, release = threading.Event(), threading.Event()

    def slow_embedder(spec):  # type: ignore[no-untyped-def]
        building.set()
        release.wait(120)  # the model build, held for as long as the test looks
        return Embedder(spec)

    cfg = dataclasses.replace(
        h.worker_config(kafka_settings, redis_url, prefix, topics, unique, kafka_client=client),
        start_from="latest",
    )
    worker = Worker(cfg, registry=h.CollectorRegistry(), embedder_factory=slow_embedder)
    stop = threading.Event()
    thread = threading.Thread(target=lambda: worker.run(stop), daemon=True)
    thread.start()
    try:
        assert building.wait(60)
        port = h.wait_until(lambda: worker.health is not None, 30) and worker.health.port
        seen: list[tuple[int, str]] = []

        def joined_and_said_so() -> bool:
            seen.append(get(port, "/readyz"))
            return "broker: connected" in seen[-1][1] and worker.status().assigned

        assert h.wait_until(joined_and_said_so, 60, every=0.2), seen[-1]
        status, body = get(port, "/readyz")
        assert status == 503 and "building embedder resnet18" in body, body
        assert not [b for _, b in seen if "unreachable" in b], seen
        release.set()
        assert h.wait_until(lambda: get(port, "/readyz")[0] == 200, 60), get(port, "/readyz")
        frames = h.frames("camA", 4)
        h.produce_frames(kafka_settings, topics.frames, frames)
        assert h.wait_for_ids(kafka_settings, topics, ids(frames), 60)
    finally:
        release.set()
        stop.set()
        thread.join(60)
