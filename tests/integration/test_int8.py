"""An int8 index travels with its quantized model through Redis; workers embed with exactly that model.

The int8 model is made at fit time by NNCF, calibrated on the fit frames (index_store/openvino_runtime.py);
a worker has no fit frames, so it cannot remake it: it loads the model the index version holds.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from framewatch.cli import main
from index_store import fitting, openvino_runtime
from index_store.embedder import Embedder
from index_store.keys import Keys
from index_store.repository import IndexRepository
from tests.conftest import png_bytes
from tests.integration import harness as h

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not openvino_runtime.installed(), reason="openvino is not installed"),
]


def _fit_int8(tmp_path, redis_url: str, prefix: str, monkeypatch) -> list[str]:  # type: ignore[no-untyped-def]
    folder = tmp_path / "normal"
    folder.mkdir()
    for i in range(10):
        (folder / f"{i:02d}.png").write_bytes(png_bytes(i))
    monkeypatch.setenv("FRAMEWATCH_REDIS_PREFIX", prefix)
    monkeypatch.setenv("FRAMEWATCH_CACHE", str(tmp_path / "cache"))
    argv = ["index", "fit", str(folder), "--name", "idx", "--backbone", "resnet18", "--weights", "random:0",
            "--crop", "64", "--precision", "int8", "--runtime", "openvino", "--redis", redis_url]  # fmt: skip
    assert main(argv) == 0
    return argv


def test_index_fit_int8_publishes_the_quantized_model_with_the_version(redis_url, redis_client, unique, capsys,
                                                                        monkeypatch, tmp_path):  # fmt: skip
    prefix = f"t-{unique}"
    argv = _fit_int8(tmp_path, redis_url, prefix, monkeypatch)
    out = capsys.readouterr().out
    assert "published index 'idx' version 1 (active)" in out and "/int8:" in out
    repo = IndexRepository(redis_client, prefix)
    meta = repo.meta("idx")
    blob = repo.load_quantized(meta)
    assert blob is not None and meta.quantized_bytes == len(blob) and meta.embedder_spec.precision == "int8"
    header_len = int.from_bytes(blob[:8], "little")  # safetensors: a JSON header, then raw bytes; never a pickle
    assert blob[8:9] == b"{" and b'"format":"openvino-ir"' in blob[8 : 8 + header_len]
    # a refit calibrates a new model, which running workers hold the old one of: refused without --new-backbone
    assert main(argv) == 2
    assert "--new-backbone" in capsys.readouterr().err


def test_worker_scores_an_int8_index_exactly_as_the_fit_model_does(kafka_settings, redis_url, redis_client,
                                                                   unique, monkeypatch, tmp_path):  # fmt: skip
    prefix = f"t-{unique}"
    _fit_int8(tmp_path, redis_url, prefix, monkeypatch)
    repo = IndexRepository(redis_client, prefix)
    meta, index = repo.load("idx")
    fit_model = Embedder(meta.embedder_spec, "cpu", quantized=repo.load_quantized(meta), cache_dir=tmp_path / "c2")
    stream = h.frames("cam1", 6, start=40)
    images = [Image.open(io.BytesIO(f.image)).convert("RGB") for f in stream]
    at_fit = fitting.score(index, fit_model.embed(images), meta.embedder_spec)  # whole-frame regions
    expected = dict(zip([f.frame_id for f in stream], at_fit))

    topics = h.topics_for(unique, kafka_settings)
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique, device="cpu"))
    try:
        h.produce_frames(kafka_settings, topics.frames, stream)
        assert h.wait_until(lambda: len(h.scores(kafka_settings, topics.scores)) >= len(stream), timeout=120)
        records = h.scores(kafka_settings, topics.scores)
    finally:
        running.close()
    got = {r.frame_id: r.score for r in records}
    assert sorted(got) == sorted(expected)
    for frame_id, score in expected.items():
        assert got[frame_id] == pytest.approx(float(score), rel=1e-5, abs=1e-6)


def test_worker_refuses_a_tampered_int8_model_and_says_why(kafka_settings, redis_url, redis_client, unique,
                                                           monkeypatch, tmp_path):  # fmt: skip
    prefix = f"t-{unique}"
    _fit_int8(tmp_path, redis_url, prefix, monkeypatch)
    key = Keys(prefix).quantized_chunk("idx", 1, 0)
    blob = bytearray(redis_client.get(key))
    blob[-1] ^= 0xFF
    redis_client.set(key, bytes(blob))
    topics = h.topics_for(unique, kafka_settings)
    running = h.start_worker(h.worker_config(kafka_settings, redis_url, prefix, topics, unique, device="cpu"))
    try:
        assert h.wait_until(lambda: "int8 model fails its sha256" in h.readyz(running)[1], timeout=60), (
            h.readyz(running)
        )
        assert h.readyz(running)[0] == 503
    finally:
        running.close()
