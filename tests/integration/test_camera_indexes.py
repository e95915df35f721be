"""One index per camera, on a real broker and Redis, through ``framewatch work --route 'cam-*={source}'``:
a camera with its own index is scored against it, one without goes to the fallback (and its record says
so), an index of another backbone is refused (record, /readyz, metric), and a new version of a camera's
index takes effect on its event."""

from __future__ import annotations

import pytest

from index_store.spec import EmbedderSpec
from tests.integration import harness as h

pytestmark = pytest.mark.integration

OTHER_SPEC = EmbedderSpec("resnet18", "random:1", resize=64, crop=64)  # other weights: another embedder


def test_each_camera_is_scored_by_its_own_index_or_the_fallback(kafka_settings, redis_url, unique):
    topics = h.topics_for(unique, kafka_settings, partitions=2)
    prefix = f"t-{unique}"
    h.publish_index(redis_url, prefix, "yard", seed=1)
    h.publish_index(redis_url, prefix, "cam-a", seed=2)
    h.publish_index(redis_url, prefix, "cam-x", spec=OTHER_SPEC, seed=3)
    worker = h.worker_process(kafka_settings, redis_url, prefix, topics, f"g-{unique}", index="yard",
                              extra=("--route", "cam-*={source}", "--index-memory", "1MiB"))  # fmt: skip
    try:
        produced = h.interleave(h.frames("cam-a", 4), h.frames("cam-b", 4), h.frames("cam-x", 4),
                                h.frames("lobby", 4))  # fmt: skip
        h.produce_frames(kafka_settings, topics.frames, produced)
        assert h.wait_for_ids(kafka_settings, topics, h.ids(produced), 120), worker.output()[-3000:]
        scored, _ = h.assert_nothing_lost(kafka_settings, topics, h.ids(produced))
        seen = {(r.source, r.index_name, r.camera_index, r.index_fallback) for rs in scored.values() for r in rs}
        assert seen == {
            ("cam-a", "cam-a", "cam-a", ""),  # its own index
            ("cam-b", "yard", "cam-b", "missing"),  # none of its own: the fallback, and the record says so
            ("cam-x", "yard", "cam-x", "refused"),  # another backbone: refused, the fallback scores it
            ("lobby", "yard", None, ""),  # no route: the default index, as before
        }, seen
        status, body = worker.get("/readyz")
        assert status == 200 and "cam-x@1" in body and "refused" in body, body
        assert "per-camera indexes: 1 held" in body and "1 cameras without their own" in body, body
        assert worker.metric('framewatch_frames_fallback_total{reason="missing"}') == 4
        assert worker.metric('framewatch_camera_index_loads_total{result="refused"}') == 1
        assert "per-camera index cam-x version 1 refused" in worker.output()

        h.publish_index(redis_url, prefix, "cam-a", seed=4)  # version 2: followed from its event
        sent = [100]

        def scored_by_v2() -> bool:
            h.produce_frames(kafka_settings, topics.frames, h.frames("cam-a", 1, start=sent[0]))
            sent[0] += 1
            return any(r.index_version == 2 for r in h.scores(kafka_settings, topics.scores) if r.source == "cam-a")

        assert h.wait_until(scored_by_v2, 60, every=2.0), worker.output()[-3000:]
    finally:
        worker.close()
