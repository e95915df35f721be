"""A fine-tuned (MSC) index travels with its adapted weights through Redis; workers embed with exactly them."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from framewatch.cli import main
from index_store.build import fit_from_images
from index_store.embedder import Embedder
from index_store.finetune import FinetuneConfig, finetune
from index_store.fitting import FitConfig
from index_store.keys import Keys
from index_store.repository import IndexRepository
from tests.conftest import png_bytes
from tests.integration import harness as h

pytestmark = pytest.mark.integration

TINY = FinetuneConfig(epochs=1, lr=1e-3, batch=4, device="cpu")


def _train_folder(tmp_path, n: int = 8):  # type: ignore[no-untyped-def]
    folder = tmp_path / "normal"
    folder.mkdir()
    for i in range(n):
        (folder / f"{i:02d}.png").write_bytes(png_bytes(i))
    return folder, sorted(folder.glob("*.png"))


def _publish_finetuned(redis_url: str, prefix: str, paths) -> tuple[Embedder, object]:  # type: ignore[no-untyped-def]
    """What `index fit --finetune msc` does, keeping the fit-time embedder and index for comparison."""
    import redis

    images = [Image.open(p).convert("RGB") for p in paths]
    tuned = finetune(h.SMALL_SPEC, lambda i: images[i], len(images), TINY, progress=False)
    embedder = tuned.embedder("cpu")
    meta, index = fit_from_images("idx", paths, embedder, FitConfig(), progress=False)
    repo = IndexRepository(redis.Redis.from_url(redis_url), prefix)
    repo.publish(meta, index, adapted=tuned.weights)
    return embedder, index


def test_index_fit_finetune_publishes_weights_with_the_version(redis_url, redis_client, unique, capsys,
                                                               monkeypatch, tmp_path):  # fmt: skip
    prefix = f"t-{unique}"
    folder, _ = _train_folder(tmp_path)
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)
    argv = ["index", "fit", str(folder), "--name", "cams", "--backbone", "resnet18", "--weights", "random:0",
            "--crop", "64", "--finetune", "msc", "--epochs", "1", "--batch", "4", "--redis", redis_url]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "published index 'cams' version 1 (active)" in out and "/msc:" in out and "fine-tune" in out
    repo = IndexRepository(redis_client, prefix)
    meta = repo.meta("cams")
    weights = repo.load_adapted(meta)
    assert (
        weights is not None and meta.embedder_spec.is_adapted and meta.calibration["finetune"]["epochs"] == 1
    )
    assert meta.adapted_bytes == len(weights)
    # safetensors only: an 8-byte header length, then a JSON header; never a pickle or a torch zip
    header_len = int.from_bytes(weights[:8], "little")
    assert weights[8:9] == b"{" and b'"format":"pt"' in weights[8 : 8 + header_len]
    assert not weights.startswith((b"\x80", b"PK"))
    # a refit under the same name changes the weights running workers hold: refused without --new-backbone
    assert main(argv) == 2
    assert "--new-backbone" in capsys.readouterr().err


def test_worker_scores_with_the_adapted_weights_exactly_as_at_fit_time(kafka_settings, redis_url, unique,
                                                                       tmp_path):  # fmt: skip
    prefix = f"t-{unique}"
    _, paths = _train_folder(tmp_path)
    fit_embedder, fit_index = _publish_finetuned(redis_url, prefix, paths)
    stream = h.frames("cam1", 6, start=40)
    images = [Image.open(io.BytesIO(f.image)).convert("RGB") for f in stream]
    expected = dict(zip([f.frame_id for f in stream], fit_index.score(fit_embedder.embed(images))))
    base_scores = fit_index.score(Embedder(h.SMALL_SPEC, "cpu").embed(images))

    topics = h.topics_for(unique, kafka_settings)
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique, device="cpu"))
    try:
        h.produce_frames(kafka_settings, topics.frames, stream)
        assert h.wait_until(lambda: len(h.scores(kafka_settings, topics.scores)) >= len(stream), timeout=90)
        records = h.scores(kafka_settings, topics.scores)
    finally:
        running.close()
    got = {r.frame_id: r.score for r in records}
    assert sorted(got) == sorted(expected)
    for frame_id, score in expected.items():
        assert got[frame_id] == pytest.approx(float(score), rel=1e-5, abs=1e-6)
    # and they are not what the backbone without its adapted weights would give
    assert not np.allclose(sorted(got.values()), sorted(base_scores), rtol=1e-3)


def test_worker_refuses_a_tampered_weights_chunk_and_says_why(kafka_settings, redis_url, redis_client, unique,
                                                              tmp_path):  # fmt: skip
    prefix = f"t-{unique}"
    _, paths = _train_folder(tmp_path)
    _publish_finetuned(redis_url, prefix, paths)
    key = Keys(prefix).adapted_chunk("idx", 1, 0)
    blob = bytearray(redis_client.get(key))
    blob[-1] ^= 0xFF  # one flipped byte in a tensor: still valid safetensors, other weights
    redis_client.set(key, bytes(blob))

    topics = h.topics_for(unique, kafka_settings)
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique, device="cpu"))
    try:
        assert h.wait_until(lambda: "adapted weights fail their sha256" in h.readyz(running)[1], timeout=60), (
            h.readyz(running)
        )
        status, body = h.readyz(running)
        assert status == 503 and "index idx version 1 refused" in body
    finally:
        running.close()
