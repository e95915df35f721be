"""Folder source and publisher, without a broker (a recording stand-in for the Kafka producer)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from producer.metrics import ProducerMetrics
from producer.publisher import Publisher, RateLimiter
from producer.sources import FolderSource
from tests.conftest import jpeg_bytes, png_bytes
from wire.records import FrameRecord


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes, list]] = []

    def send(self, topic, value, key, headers):
        self.sent.append((topic, key, value, headers))

        class Done:
            def get(self, timeout=None):
                return None

        return Done()

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        pass


def test_folder_source_is_recursive_sorted_and_keeps_relative_origins(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.png").write_bytes(png_bytes(1))
    (tmp_path / "b" / "c.JPG").write_bytes(jpeg_bytes(2))
    (tmp_path / "notes.txt").write_text("skip me")
    frames = list(FolderSource(tmp_path).frames())
    assert [(f.origin, f.content_type) for f in frames] == [("a.png", "image/png"), ("b/c.JPG", "image/jpeg")]


def test_publisher_sends_keyed_frames_with_sequence_and_origin(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(i))
    rec = Recorder()
    registry = CollectorRegistry()
    pub = Publisher(rec, "frames", "cam9", ProducerMetrics(registry), clock=lambda: 50.0)
    report = pub.publish(FolderSource(tmp_path).frames())
    assert report.sent == 3 and report.failed == 0
    decoded = [FrameRecord.decode(k, v, h) for _, k, v, h in rec.sent]
    assert [d.sequence for d in decoded] == [0, 1, 2]
    assert {d.source for d in decoded} == {"cam9"} and all(k == b"cam9" for _, k, _, _ in rec.sent)
    assert [d.origin for d in decoded] == ["0.png", "1.png", "2.png"]
    assert len({d.frame_id for d in decoded}) == 3
    assert registry.get_sample_value("framewatch_producer_frames_sent_total", {"source": "cam9"}) == 3


def test_loop_with_limit_stops_after_n_frames(tmp_path):
    (tmp_path / "only.png").write_bytes(png_bytes(0))
    rec = Recorder()
    pub = Publisher(rec, "frames", "cam", ProducerMetrics(CollectorRegistry()))
    assert pub.publish(FolderSource(tmp_path, loop=True).frames(), limit=5).sent == 5


def test_rate_limiter_spaces_frames_by_the_interval():
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    limiter = RateLimiter(4.0, clock=lambda: now[0], sleep=sleep)
    for _ in range(5):
        limiter.wait()
    assert now[0] == 1.0 and slept == [0.25] * 4
