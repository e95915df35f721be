"""Per-camera alarm rate and drift through a real broker and Redis: GET /metrics and `framewatch status`."""

from __future__ import annotations

import io
import urllib.request

import numpy as np
import pytest
from PIL import Image

from framewatch.cli import main
from index_store.embedder import Embedder
from index_store.fitting import FitConfig, fit
from index_store.repository import IndexMeta, IndexRepository
from tests.conftest import png_bytes
from tests.integration import harness as h

pytestmark = pytest.mark.integration


def flat_png(i: int) -> bytes:
    """A flat-coloured frame: nothing like the noise the index was fitted on (a covered camera)."""
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (40 + i, 30, 20)).save(buf, format="PNG")
    return buf.getvalue()


def fit_and_publish(redis_url: str, prefix: str) -> IndexMeta:
    """An index fitted as `index fit` does: calibrated, with the quantile sketch in its metadata."""
    import redis

    images = [Image.open(io.BytesIO(png_bytes(i))) for i in range(40)]
    emb = Embedder(h.SMALL_SPEC).embed(images)
    index, cal, _ = fit(emb, FitConfig(target_fpr=0.05))
    meta = IndexMeta(name="idx", kind="exact", k=2, dim=index.dim, n_vectors=index.size,
                     spec=h.SMALL_SPEC.to_dict(), threshold=cal.threshold, calibration=cal.to_dict())  # fmt: skip
    return IndexRepository(redis.Redis.from_url(redis_url), prefix).publish(meta, index)


def metrics(running: h.RunningWorker) -> str:
    assert running.worker.health is not None
    with urllib.request.urlopen(f"http://127.0.0.1:{running.worker.health.port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def test_a_worker_reports_each_cameras_alarm_rate_and_drift_on_metrics_and_status(
    kafka_settings, redis_url, unique, capsys, monkeypatch
):
    topics = h.topics_for(unique, kafka_settings)
    prefix = f"t-{unique}"
    fit_and_publish(redis_url, prefix)
    normal = h.frames("cam-yard", 40, start=100)  # the same kind of frames the index was fitted on
    covered = h.frames("cam-gate", 40, image=flat_png)
    h.produce_frames(kafka_settings, topics.frames, h.interleave(normal, covered))
    running = h.start_worker(
        h.worker_config(kafka_settings, redis_url, prefix, topics, unique, worker_id="w-drift")
    )
    try:
        assert h.wait_until(lambda: len(h.scores(kafka_settings, topics.scores)) >= 80, 120)
        records = h.scores(kafka_settings, topics.scores)
        alarm = {
            cam: np.mean([r.is_anomaly for r in records if r.source == cam])
            for cam in ("cam-yard", "cam-gate")
        }
        assert alarm["cam-gate"] == 1.0 and alarm["cam-yard"] < 0.5  # what the records say
        body = metrics(running)
        for cam in ("cam-yard", "cam-gate"):
            assert h.metric_value(body, f'framewatch_source_window_frames{{source="{cam}"}}') == 40
            assert h.metric_value(body, f'framewatch_source_alarm_rate{{source="{cam}"}}') == pytest.approx(
                alarm[cam]
            )
            assert h.metric_value(body, f'framewatch_source_target_fpr{{source="{cam}"}}') == 0.05
        yard = h.metric_value(body, 'framewatch_source_drift{source="cam-yard"}')
        gate = h.metric_value(body, 'framewatch_source_drift{source="cam-gate"}')
        assert gate > 4.0 and gate > yard
        assert h.metric_value(body, "framewatch_drift_sources") == 2

        monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)

        def cameras() -> dict[str, list[str]]:
            main(["status", "--redis", redis_url])
            lines = capsys.readouterr().out.splitlines()
            start = next((i for i, line in enumerate(lines) if line.startswith("CAMERA")), len(lines))
            return {cols[0]: cols for cols in (line.split() for line in lines[start + 1 :]) if cols}

        assert h.wait_until(lambda: set(cameras()) == {"cam-yard", "cam-gate"}, 30)
        rows = cameras()
        assert rows["cam-gate"][:6] == ["cam-gate", "w-drift", "idx@1", "40", "100.00%", "5.00%"]
        assert rows["cam-gate"][6] == "20.0!" and rows["cam-gate"][7].endswith("!")  # past both alerts
        assert rows["cam-yard"][4] == f"{100 * alarm['cam-yard']:.2f}%" and rows["cam-yard"][8] == "sketch"
    finally:
        running.close()
