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


class Fatal:
    """A producer in kafka-python's fatal state: every send fails (an InitProducerId error after a broker restart)."""

    def __init__(self) -> None:
        self.closed = False
        self.sends = 0

    def send(self, topic, value, key, headers):
        self.sends += 1
        raise RuntimeError("KafkaError: InitProducerId failed: fatal")

    def flush(self, timeout=None):
        pass

    def close(self, timeout=None):
        self.closed = True


def test_a_producer_failing_for_the_renewal_time_is_replaced_and_limit_counts_attempts(tmp_path):
    from producer.publisher import Renewal

    (tmp_path / "only.png").write_bytes(png_bytes(0))
    now = [0.0]
    fatal, fresh = Fatal(), Recorder()
    registry = CollectorRegistry()
    pub = Publisher(fatal, "frames", "cam", ProducerMetrics(registry), limiter=RateLimiter(0),
                    renewal=Renewal(lambda: fresh, renew_after_s=10.0, clock=lambda: now[0]))  # fmt: skip

    def frames():
        for frame in FolderSource(tmp_path, loop=True).frames():
            yield frame
            now[0] += 1.0  # one frame a second

    report = pub.publish(frames(), limit=25)
    assert (report.sent + report.failed, report.failed, report.renewed) == (25, 11, 1)  # 0 s .. 10 s failed
    assert fatal.closed and fatal.sends == 11 and len(fresh.sent) == 14
    assert registry.get_sample_value("framewatch_producer_renewals_total") == 1


def test_renewed_producers_that_keep_failing_give_up_with_one_clear_error(tmp_path):
    import pytest

    from producer.publisher import ProducerFailed, Renewal

    (tmp_path / "only.png").write_bytes(png_bytes(0))
    now = [0.0]
    made: list[Fatal] = []

    def make() -> Fatal:
        made.append(Fatal())
        return made[-1]

    def frames():
        for frame in FolderSource(tmp_path, loop=True).frames():
            yield frame
            now[0] += 1.0

    pub = Publisher(make(), "frames", "cam", ProducerMetrics(CollectorRegistry()), limiter=RateLimiter(0),
                    renewal=Renewal(make, renew_after_s=10.0, give_up_after_s=60.0, clock=lambda: now[0]))  # fmt: skip
    with pytest.raises(ProducerFailed, match=r"no frame acknowledged for 60s.*InitProducerId.*giving up"):
        pub.publish(frames())
    assert len(made) == 6 and all(p.closed for p in made[:-1])  # the first, renewed at 10 .. 50 s; 60 s: stop


def test_origins_with_control_characters_are_escaped_so_the_frame_stays_valid(tmp_path):
    (tmp_path / "a\nb.png").write_bytes(png_bytes(0))
    rec = Recorder()
    Publisher(rec, "frames", "cam", ProducerMetrics(CollectorRegistry())).publish(FolderSource(tmp_path).frames())
    (_, key, value, headers), = rec.sent
    assert FrameRecord.decode(key, value, headers).origin == "a\\x0ab.png"
