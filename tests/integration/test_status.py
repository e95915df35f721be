"""Worker heartbeats in Redis, `framewatch status`, and `index fit` refusing a silent backbone change."""

from __future__ import annotations

import pytest

from framewatch.cli import main
from index_store.keys import Keys
from index_store.repository import IndexRepository
from tests.conftest import png_bytes
from tests.integration import harness as h
from worker.heartbeat import Heartbeat

pytestmark = pytest.mark.integration


def test_status_lists_live_workers_from_their_heartbeats(
    redis_client, redis_url, unique, capsys, monkeypatch
):
    prefix = f"t-{unique}"
    keys = Keys(prefix)
    beat = Heartbeat(IndexRepository(redis_client, prefix), "w-1", ttl_s=30)
    beat.beat({"group": "g-cams", "partitions": [0, 2], "indexes": {"cams": 4}, "lag": 12, "ready": True})
    Heartbeat(IndexRepository(redis_client, prefix), "w-2", ttl_s=30).beat({"group": "g-cams", "partitions": [1], "indexes": {"cams": 3},
                                                         "lag": None, "ready": False, "detail": "index refused"})  # fmt: skip
    assert 0 < redis_client.pttl(keys.health("w-1")) <= 30_000  # it expires when the worker stops beating
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)
    assert main(["status", "--redis", redis_url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:6] == ["WORKER", "GROUP", "PARTITIONS", "INDEXES", "LAG", "READY"]
    assert out[1].split()[:6] == ["w-1", "g-cams", "0,2", "cams@4", "12", "yes"]
    assert out[2].split()[:6] == ["w-2", "g-cams", "1", "cams@3", "-", "no"]
    assert "index refused" in out[2]
    beat.clear()
    assert main(["status", "--redis", redis_url]) == 0
    assert "w-1" not in capsys.readouterr().out


def test_fit_under_an_existing_name_with_another_backbone_is_refused(
    redis_url, unique, capsys, monkeypatch, tmp_path
):
    prefix = f"t-{unique}"
    h.publish_index(redis_url, prefix, "cams")  # resnet18, random weights, 64 px
    for i in range(3):  # enough to calibrate: the refusal must come from the backbone, not the image count
        (tmp_path / f"a{i}.png").write_bytes(png_bytes(i))
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)
    code = main(["index", "fit", str(tmp_path), "--name", "cams", "--backbone", "resnet50", "--weights", "random",
                 "--redis", redis_url])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert "index 'cams' is active at version 1 with resnet18" in err
    assert "keep scoring with version 1" in err and "--new-backbone" in err
    assert len(err.strip().splitlines()) == 1


def test_a_running_worker_reports_itself_to_status_and_leaves_on_stop(
    kafka_settings, redis_url, unique, capsys, monkeypatch
):
    topics = h.topics_for(unique, kafka_settings)
    prefix = f"t-{unique}"
    h.publish_index(redis_url, prefix, "idx")
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique, worker_id="w-live"))
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)

    def row() -> list[str]:
        main(["status", "--redis", redis_url])
        lines = [line.split() for line in capsys.readouterr().out.splitlines()]
        return next((cols for cols in lines if cols and cols[0] == "w-live"), [])

    try:
        assert h.wait_assigned(running)
        assert h.wait_until(lambda: row()[:2] == ["w-live", f"g-{unique}"] and "idx@1" in row(), 20)
        assert h.wait_until(lambda: row()[5:6] == ["yes"], 20)
    finally:
        running.close()
    assert row() == []  # a clean stop removes the key at once
