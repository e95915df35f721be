"""A camera's sampled frames from the frames topic, decoded and embedded: what ``index fit --from-topic``,
``index recalibrate`` and ``framewatch learn`` start from.

Frames are decoded as the worker decodes them (``wire.records.FrameRecord`` and
``worker.decode.decode_image`` at the spec's resize), so a frame the worker
would dead-letter is skipped here and counted by reason, never fitted.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from framewatch.topic_frames import CameraPartition, Located, Period, RawFrame, TopicReadError, stream_origin
from index_store import stream_defaults, stream_sample
from wire.errors import WireError
from wire.records import FrameRecord
from wire.settings import KafkaSettings

log = logging.getLogger(__name__)


@dataclass
class CameraSample:
    """Embeddings of the camera's usable sampled frames, in time order, and where they came from."""

    topic: str
    source: str
    partition: int
    period: Period
    feats: np.ndarray
    origins: list[str] = field(default_factory=list)  # kafka://TOPIC/PARTITION/OFFSET per row
    frame_ids: list[str] = field(default_factory=list)
    timestamps_ms: list[int] = field(default_factory=list)
    located: int = 0  # the camera's frames in the period
    bad: Counter[str] = field(default_factory=Counter)  # skipped frames by dead-letter reason

    def coordinates(self) -> dict[str, Any]:
        """What index metadata records: where the frames came from."""
        offsets = [int(o.rsplit("/", 1)[1]) for o in self.origins]
        return {
            "topic": self.topic,
            "partition": self.partition,
            "source": self.source,
            "period": self.period.describe(),
            "offsets": [min(offsets), max(offsets)] if offsets else [],
            "times": [min(self.timestamps_ms) / 1000, max(self.timestamps_ms) / 1000]
            if self.timestamps_ms
            else [],
            "frames_in_period": self.located,
            "frames_used": len(self.origins),
            "frames_bad": dict(self.bad),
        }


def read_sample(
    settings: KafkaSettings,
    topic: str,
    source: str,
    period: Period,
    embedder: Any,
    every: Optional[int] = None,
    max_frames: Optional[int] = stream_defaults.MAX_FRAMES,
    progress: bool = True,
) -> CameraSample:
    """Locate the camera's frames in ``period``, pick a sample spread over it, fetch, decode and embed it.

    :raises TopicReadError: the topic is missing, or holds no usable frame of ``source`` in the period.
    """
    with CameraPartition(settings, topic, source) as part:
        located = part.locate(period)
        return _sample(part, located, period, embedder, every, max_frames, progress)


def sample_located(
    settings: KafkaSettings,
    topic: str,
    source: str,
    partition: int,
    located: Sequence[Located],
    period: Period,
    embedder: Any,
    max_frames: Optional[int] = stream_defaults.MAX_FRAMES,
) -> CameraSample:
    """As ``read_sample``, for frames whose offsets are known already (``framewatch learn`` noted them as it
    consumed them): no scan to locate them, only the picked frames' range of ``partition`` is read.

    :raises TopicReadError: none of the picked frames could be read or decoded.
    """
    with CameraPartition(settings, topic, source, partition=partition) as part:
        retained = [f for f in located if f.offset >= part.begin]  # retention may have passed the oldest
        return _sample(part, retained, period, embedder, None, max_frames, progress=False)


def _sample(
    part: CameraPartition, located: list[Located], period: Period, embedder: Any, every: Optional[int],
    max_frames: Optional[int], progress: bool,
) -> CameraSample:  # fmt: skip
    topic, source = part.topic, part.source
    picked = [located[i].offset for i in stream_sample.pick(len(located), every, max_frames)]
    log.info("%s/%d: %d frames of %r in the period (%s), %d picked", topic, part.partition, len(located),
             source, period.describe(), len(picked))  # fmt: skip
    sample = CameraSample(topic, source, part.partition, period, np.zeros(0), located=len(located))
    if not picked:
        raise TopicReadError(f"no frames of source {source!r} on {topic}/{part.partition} "
                             f"({period.describe()}; offsets {part.begin}..{part.end})")  # fmt: skip
    bar = _bar(len(picked), f"frames of {source}", progress)
    chunks: list[np.ndarray] = []
    batch: list[tuple[RawFrame, FrameRecord, Any]] = []
    for raw in part.fetch(picked, on_each=lambda: bar.update(1)):
        decoded = _decode(raw, embedder.spec.draft_side, topic, part.partition, sample.bad)
        if decoded is not None:
            batch.append((raw, *decoded))
        if len(batch) >= embedder.batch_size:
            chunks.append(_embed(embedder, batch, sample, topic, part.partition))
    if batch:
        chunks.append(_embed(embedder, batch, sample, topic, part.partition))
    bar.close()
    if not chunks:
        raise TopicReadError(
            f"none of the {len(picked)} picked frames of {source!r} could be decoded: {dict(sample.bad)}"
        )
    if sample.bad:
        log.warning(
            "skipped %d undecodable frames of %r: %s", sum(sample.bad.values()), source, dict(sample.bad)
        )
    sample.feats = np.concatenate(chunks)
    return sample


def _decode(
    raw: RawFrame, resize: int, topic: str, partition: int, bad: Counter[str]
) -> Optional[tuple[FrameRecord, Any]]:
    from worker.decode import decode_image

    try:
        record = FrameRecord.decode(raw.key, raw.value, raw.headers, fallback_id=f"{topic}/{partition}/{raw.offset}",
                                    fallback_time=raw.timestamp_ms / 1000)  # fmt: skip
        return record, decode_image(record.image, record.content_type, resize=resize)
    except WireError as e:  # FrameDecodeError carries the dead-letter reason
        bad[getattr(e, "reason", "undecodable")] += 1
        return None


def _embed(embedder: Any, batch: list[tuple[RawFrame, FrameRecord, Any]], sample: CameraSample, topic: str,
           partition: int) -> np.ndarray:  # fmt: skip
    feats = embedder.embed([image for _, _, image in batch])
    for raw, record, _ in batch:
        sample.origins.append(stream_origin(topic, partition, raw.offset))
        sample.frame_ids.append(record.frame_id)
        sample.timestamps_ms.append(raw.timestamp_ms)
    batch.clear()
    return np.asarray(feats)


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def _bar(total: int, desc: str, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="frame", leave=False)
