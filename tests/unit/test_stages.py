"""The worker's stages without Kafka: the embed stage returns every frame's outcome, and a frame
that cannot be decoded, or scored, becomes a dead-letter outcome without taking its batch down."""

from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image

from index_store.knn import build_exact
from index_store.repository import IndexMeta
from index_store.spec import EmbedderSpec
from wire.records import FrameRecord
from worker.admission import DecodePool
from worker.extract import NullExtractor
from worker.indexes import LoadedIndex
from worker.inflight import InFlight
from worker.kafka_port import Record
from worker.routing import Routing
from worker.scoring import BatchScorer, Scorer
from worker.stages import EmbedStage

DIM = 4


def loaded_index() -> LoadedIndex:
    index = build_exact(np.random.default_rng(0).normal(size=(10, DIM)).astype(np.float32))
    meta = IndexMeta(
        name="idx", kind="exact", k=2, dim=DIM, n_vectors=10, spec=EmbedderSpec().to_dict(), threshold=50.0
    )
    return LoadedIndex(meta, index)


class CheckedExtractor(NullExtractor):
    """Decodes for real (bad bytes raise as in the worker) and refuses to embed a frame from camera 'nan'."""

    def prepare(self, record: FrameRecord) -> object:
        from worker.decode import decode_image

        decode_image(record.image, record.content_type)
        return record.source

    def embed(self, prepared):  # type: ignore[no-untyped-def]
        if "nan" in prepared:
            raise ValueError("cannot embed")
        return super().embed(prepared)


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 40), (10, 20, 30)).save(buf, "PNG")
    return buf.getvalue()


def frames(
    pool: DecodePool, extractor: CheckedExtractor, specs: list[tuple[str, bytes]]
) -> list[InFlight]:
    out = []
    for i, (source, data) in enumerate(specs):
        record = FrameRecord(f"f{i}", source, i, time.time(), data, "image/png")
        message = Record("frames", 0, i, source.encode(), data)
        out.append(InFlight(message, record, pool.submit(extractor.prepare, record)))
    return out


def test_every_frame_gets_one_outcome_and_bad_ones_become_dead_letters_with_their_reason():
    pool, extractor = DecodePool(threads=2), CheckedExtractor(DIM)
    scorer = Scorer(extractor, Routing.parse("idx"))
    batch = frames(
        pool, extractor, [("cam", png()), ("cam", b"not an image"), ("nan", png()), ("cam", png())]
    )
    index = {"idx": loaded_index()}
    outcomes = BatchScorer(scorer, lambda: index)(batch)
    by_offset = {o.frame.offset: o for o in outcomes}
    assert sorted(by_offset) == [0, 1, 2, 3]
    assert by_offset[1].reason == "undecodable" and by_offset[1].record is None
    assert by_offset[2].reason == "scoring-error" and "cannot embed" in by_offset[2].detail
    assert by_offset[0].record is not None and by_offset[3].record is not None
    assert by_offset[0].record.frame_offset == 0
    pool.close()


def test_the_embed_stage_takes_batches_as_room_frees_and_returns_every_outcome():
    pool, extractor = DecodePool(threads=1), CheckedExtractor(DIM)
    scorer = Scorer(extractor, Routing.parse("idx"))
    index = {"idx": loaded_index()}
    stage = EmbedStage(depth=1, work=BatchScorer(scorer, lambda: index))
    submitted = 0
    for _ in range(5):
        if stage.submit(frames(pool, extractor, [("cam", png())] * 2), timeout_s=10):
            submitted += 1
    assert submitted == 5  # each waits for room: at most one batch queued at a time
    got = []
    deadline = time.monotonic() + 30
    while (stage.in_flight() or len(got) < 10) and time.monotonic() < deadline:
        got += stage.take(wait_s=0.1)
    assert len(got) == 10 and all(o.record is not None for o in got)
    assert stage.in_flight() == 0
    stage.stop()
    pool.close()
