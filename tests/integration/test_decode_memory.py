"""Issue 18, finding 7: a 77 kB frame must not cost the worker a gigabyte.

A real ``framewatch work`` process is fed 16-bit 6300x6300 PNGs (77 kB each,
under --max-pixels; 79 MB decoded, ~1 GB each through the old float64
conversion) and decompression bombs, on a real broker. Every frame ends as a
score or a dead letter, and the worker's resident memory, read from /proc,
stays within its decode budget of where it was before them.
"""

from __future__ import annotations

import threading

import pytest

from tests.frame_corpus import png_16_bit, png_claiming
from tests.integration import harness as h
from wire.records import FrameRecord

pytestmark = [pytest.mark.integration, pytest.mark.slow]
MIB = 1024


def _peak_kib(pid: int) -> int:
    """VmHWM: the most the process has ever held resident (nothing between two samples escapes it)."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _frame(frame_id: str, data: bytes) -> FrameRecord:
    import time

    return FrameRecord(frame_id=frame_id, source="cam16", sequence=0, capture_time=time.time(), image=data,
                       content_type="image/png")  # fmt: skip


def test_16_bit_stream_and_bombs_leave_the_workers_memory_flat(kafka_settings, redis_url, unique):
    topics = h.topics_for(unique, kafka_settings, partitions=1)
    prefix = f"t-{unique}"
    h.publish_index(redis_url, prefix, "idx")
    sixteen = png_16_bit(6300, 6300)
    assert len(sixteen) < 80_000
    bombs = {
        "bomb-16-bit-rgba": png_16_bit(6300, 6300, colour=6),  # 303 MiB to decode: over this worker's 300 MiB
        "bomb-header-30000": png_claiming(30000, 30000),  # refused from the pixel count
    }
    warm = h.frames("warm", 4)
    stream = [_frame(f"deep-{i}", sixteen) for i in range(6)]
    worker = h.worker_process(kafka_settings, redis_url, prefix, topics, f"g-{unique}",
                              extra=("--max-decode-mib", "300", "--decode-budget-mib", "300"))  # fmt: skip
    rss: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set() and worker.alive():
            rss.append(worker.rss_kib())
            stop.wait(0.05)

    try:
        worker.port()
        h.produce_frames(kafka_settings, topics.frames, warm)
        assert h.wait_for_ids(kafka_settings, topics, h.ids(warm), 120), worker.output()
        base_rss, base_peak = worker.rss_kib(), _peak_kib(worker.pid)
        threading.Thread(target=sample, daemon=True).start()
        first, rest = stream[:1], stream[1:]
        h.produce_frames(kafka_settings, topics.frames, first)
        assert h.wait_for_ids(kafka_settings, topics, h.ids(first), 120), worker.output()
        after_first = worker.rss_kib()
        h.produce_frames(kafka_settings, topics.frames, rest + [_frame(k, v) for k, v in bombs.items()])
        produced = h.ids(warm + stream) | set(bombs)
        assert h.wait_for_ids(kafka_settings, topics, produced, 180), worker.output()
        scored, letters = h.assert_nothing_lost(kafka_settings, topics, produced, set(bombs))
        assert all(letters[b][0].reason == "image-too-large" for b in bombs)
        assert "needs 303 MiB to decode, over the limit of 300 MiB per frame" in letters["bomb-16-bit-rgba"][0].detail
        assert all(len(scored[f.frame_id]) == 1 for f in stream)
        peak, end = _peak_kib(worker.pid), worker.rss_kib()
        assert worker.alive() and worker.get("/healthz")[0] == 200
    finally:
        stop.set()
        worker.close()
    # the old conversion held ~1 GB per such frame; with the budget, one 265 MiB decode at a time
    grew = (max(peak, max(rss, default=0)) - base_rss) / MIB
    print(f"RSS before {base_rss / MIB:.0f} MiB (peak {base_peak / MIB:.0f}), after one 16-bit frame "
          f"{after_first / MIB:.0f}, peak {peak / MIB:.0f}, after all {end / MIB:.0f} MiB")  # fmt: skip
    assert grew < 600, f"peak RSS grew {grew:.0f} MiB"
    assert end - after_first < 150 * MIB, f"RSS kept growing: {after_first / MIB:.0f} -> {end / MIB:.0f} MiB"
