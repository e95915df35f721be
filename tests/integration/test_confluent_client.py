"""The worker with the optional confluent-kafka client, on the real (Tansu) broker and a real Redis.

The same promises as with kafka-python: every frame ends scored once or as a
dead letter, offsets are committed so a restarted worker does not score again,
and a record with a header key that is not UTF-8 becomes a dead letter without
wedging anything.
"""

from __future__ import annotations

import pytest

from tests.conftest import png_bytes
from tests.integration import harness as h
from tests.integration.harness import ids, readyz
from tests.integration.test_never_wedge import NotUtf8Key
from wire import topics as t

pytestmark = pytest.mark.integration
pytest.importorskip("confluent_kafka", reason="confluent-kafka not installed (pip install '.[confluent]')")


def test_confluent_worker_scores_once_dead_letters_a_bad_header_key_and_resumes_from_its_commits(
    kafka_settings, redis_url, unique
):  # fmt: skip
    topics = h.topics_for(unique, kafka_settings, partitions=2)
    prefix = f"t-{unique}"
    h.publish_index(redis_url, prefix, "idx")
    first = h.interleave(h.frames("camA", 6), h.frames("camB", 6))
    around, later = h.frames("camP", 4), h.frames("camA", 5, start=50)
    poison_value = png_bytes(99)
    poison = (b"camP", poison_value, [(t.H_FRAME_ID, b"poison-1"), (NotUtf8Key(b"bad\xff\xfekey"), b"v")])
    cfg = h.worker_config(kafka_settings, redis_url, prefix, topics, unique, kafka_client="confluent")

    running = h.start_worker(cfg)
    try:
        assert h.wait_assigned(running)
        assert running.worker.status().kafka_client == "confluent"  # its consumer and its outputs' producer
        h.produce_frames(kafka_settings, topics.frames, first)
        offsets = h.produce_messages(kafka_settings, topics.frames, [f.encode() for f in around[:2]] + [poison]
                                     + [f.encode() for f in around[2:]])  # fmt: skip
        produced = ids(first) | ids(around) | {"poison-1"}
        assert h.wait_for_ids(kafka_settings, topics, produced, 60)
        scored, letters = h.assert_nothing_lost(kafka_settings, topics, produced, {"poison-1"})
        (letter,) = letters["poison-1"]
        assert letter.reason == "malformed-header", letter.detail
        assert letter.value == poison_value and (letter.partition, letter.offset) == offsets[2]
        assert all(len(recs) == 1 for recs in scored.values())
        assert h.wait_until(lambda: readyz(running)[0] == 200, 20), readyz(running)
    finally:
        running.close()
    assert running.exit_code == [0]

    h.restart_resumes_from_commits(cfg, kafka_settings, topics, later, produced, "poison-1")  # same group
