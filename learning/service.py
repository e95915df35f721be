"""The ``framewatch learn`` loop: consume the frames topic in its own group, note where each new camera's
frames are, fit a camera once it has been seen enough, publish, commit.

One fit runs at a time, on a thread of its own, so polling (and the group's
heartbeat) go on while a camera's frames are embedded; cameras that become due
meanwhile wait their turn, oldest first. Commits never pass ``watermark`` (the
first offset of any camera still to be fitted on that partition), so a learner
that is killed, restarted or rebalanced reads those cameras' frames again and
fits them; a camera whose index exists by then is left alone. Each camera's
progress goes to Redis (``IndexRepository.save_learning``) for
``framewatch status``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from learning import kafka_io
from learning.metrics import LearnMetrics
from learning.tracker import Camera, CameraTracker, LearnPolicy
from wire.settings import KafkaSettings

log = logging.getLogger(__name__)

COMMIT_EVERY_S = 1.0
SAVE_EVERY_S = 5.0
STALL_S = 120.0  # /healthz fails when the loop has not come round for this long


@dataclass(frozen=True)
class LearnConfig:
    kafka: KafkaSettings
    topic: str
    group: str
    policy: LearnPolicy
    session_timeout_ms: int = 10000


@dataclass
class _Fit:
    cam: Camera
    started: float
    thread: threading.Thread = field(init=False)
    version: Optional[int] = None
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


class LearnService:
    """``repo``: an ``IndexRepository``; ``fit(camera) -> version`` fits and publishes one camera."""

    def __init__(self, cfg: LearnConfig, repo: Any, fit: Callable[[Camera], int], metrics: LearnMetrics,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.cfg, self.repo, self.fit, self.metrics, self.clock = cfg, repo, fit, metrics, clock
        self.tracker = CameraTracker(cfg.policy, repo.has_index, clock)
        self.listener = kafka_io.Rebalance()
        self._positions: dict[int, int] = {}  # partition -> offset after the last frame counted
        self._committed: dict[int, int] = {}
        self._fit: Optional[_Fit] = None
        self._beat = time.monotonic()
        self._polled = False
        self._last_commit = self._last_save = 0.0
        metrics.count_cameras(self.tracker.counts)
        metrics.assigned.set_function(lambda: len(self.listener.current))

    # -- health ------------------------------------------------------------------------
    def alive(self) -> tuple[bool, str]:
        idle = time.monotonic() - self._beat
        return idle < STALL_S, f"loop ran {idle:.1f}s ago"

    def ready(self) -> tuple[bool, str]:
        if not self._polled:
            return False, "joining the group"
        counts = self.tracker.counts()
        return True, "partitions " + (",".join(map(str, sorted(self.listener.current))) or "none") + "; " + \
            ", ".join(f"{n} {state}" for state, n in counts.items() if n)  # fmt: skip

    # -- the loop ------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> int:
        """Learn until ``stop`` is set; a fit in flight is abandoned (its camera is fitted after a restart)."""
        consumer = kafka_io.make_consumer(self.cfg.kafka, self.cfg.topic, self.cfg.group, self.listener,
                                          self.cfg.session_timeout_ms)  # fmt: skip
        log.info("learning cameras %s on %s as group %s: %d frames over %.0fs, index %r", list(self.cfg.policy.match),
                 self.cfg.topic, self.cfg.group, self.cfg.policy.frames, self.cfg.policy.min_span_s,
                 self.cfg.policy.name_template)  # fmt: skip
        try:
            while not stop.is_set():
                self.step(consumer)
        finally:
            self._save(force=True)
            self._commit(consumer, force=True)
            consumer.close(autocommit=False)
        return 0

    def step(self, consumer: KafkaConsumer) -> None:
        self._beat = time.monotonic()
        batch = self._poll(consumer)
        revoked = self.listener.take_revoked()
        if revoked:
            self.tracker.revoke(revoked)
            for p in revoked:
                self._positions.pop(p, None)
                self._committed.pop(p, None)
        for tp, messages in batch.items():
            self._count(consumer, tp, messages)
        self._finish_fit()
        self._start_fit(consumer)
        self._save()
        self._commit(consumer)

    def _poll(self, consumer: KafkaConsumer) -> dict[TopicPartition, list[Any]]:
        try:
            batch = consumer.poll(timeout_ms=500)
            self._polled = True
            return batch
        except KafkaError as e:
            log.warning("poll failed: %s: %s; trying again", type(e).__name__, e)
            time.sleep(0.5)
            return {}

    def _count(self, consumer: KafkaConsumer, tp: TopicPartition, messages: list[Any]) -> None:
        for m in messages:
            if m.key:
                try:
                    self.tracker.observe(
                        m.key.decode("utf-8", "replace"), tp.partition, m.offset, int(m.timestamp)
                    )
                except Exception as e:  # noqa: BLE001 - Redis (has_index) unreachable: read this frame again
                    log.warning("cannot check the index of camera %r (%s: %s); reading again from offset %d",
                                m.key, type(e).__name__, e, m.offset)  # fmt: skip
                    consumer.seek(tp, m.offset)
                    time.sleep(1.0)
                    return
            self.metrics.frames.inc()
            self._positions[tp.partition] = m.offset + 1

    # -- fitting, one camera at a time ---------------------------------------------------
    def _start_fit(self, consumer: KafkaConsumer) -> None:
        if self._fit is not None:
            return
        for cam in self.tracker.due(lambda p: kafka_io.caught_up(consumer, self.cfg.topic, p)):
            try:
                if not self.tracker.start_fit(cam):
                    log.info("camera %r has an index %r now: left alone", cam.source, cam.index)
                    continue
            except Exception as e:  # noqa: BLE001 - Redis unreachable: try again on a later step
                log.warning("cannot check the index of camera %r (%s: %s)", cam.source, type(e).__name__, e)
                return
            job = _Fit(cam, time.monotonic())
            job.thread = threading.Thread(
                target=self._run_fit, args=(job,), name=f"learn-{cam.source}", daemon=True
            )
            log.info("fitting camera %r: %d frames seen over %.0fs -> index %r", cam.source, cam.seen, cam.span_s,
                     cam.index)  # fmt: skip
            self._fit = job
            job.thread.start()
            return

    def _run_fit(self, job: _Fit) -> None:
        try:
            job.version = self.fit(job.cam)
        except Exception as e:  # noqa: BLE001 - any failure is the camera's, reported and retried later
            log.debug("fit of %r failed", job.cam.source, exc_info=True)
            job.error = f"{type(e).__name__}: {e}"
        finally:
            job.done.set()

    def _finish_fit(self) -> None:
        job = self._fit
        if job is None or not job.done.is_set():
            return
        self._fit = None
        self.metrics.fit_seconds.set(time.monotonic() - job.started)
        if job.version is not None:
            self.tracker.fitted(job.cam, job.version)
            self.metrics.fits.labels("fitted").inc()
        else:
            self.tracker.failed(job.cam, job.error)
            self.metrics.fits.labels("failed").inc()
            log.warning("could not learn camera %r: %s (trying again on later frames in %.0fs)", job.cam.source,
                        job.error, self.cfg.policy.retry_after_s)  # fmt: skip

    def wait_fit(self, timeout: float) -> bool:
        """Wait for the fit in flight (tests, and a drain that wants it)."""
        job = self._fit
        return job is None or job.done.wait(timeout)

    # -- state: Redis records and commits ------------------------------------------------
    def _save(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_save < SAVE_EVERY_S:
            return
        self._last_save = now
        for source in self.tracker.forget_idle():
            log.info("camera %r sent nothing for %.0fs: forgotten", source, self.cfg.policy.forget_after_s)
        records = self.tracker.take_changed(progress=True)
        try:
            self.repo.save_learning(records)
        except Exception as e:  # noqa: BLE001 - Redis unreachable: status is stale until the next save
            log.warning("cannot save learning progress (%s: %s)", type(e).__name__, e)
            self.tracker.dirty |= set(records)

    def _commit(self, consumer: KafkaConsumer, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_commit < COMMIT_EVERY_S:
            return
        self._last_commit = now
        marks = self.tracker.watermark()
        offsets = {
            p: min(pos, marks.get(p, pos)) for p, pos in self._positions.items() if p in self.listener.current
        }
        offsets = {p: o for p, o in offsets.items() if self._committed.get(p) != o}
        try:
            kafka_io.commit(consumer, self.cfg.topic, offsets)
            self._committed.update(offsets)
        except KafkaError as e:
            self.metrics.commit_failures.inc()
            log.info("commit refused (%s: %s); the frames are read again", type(e).__name__, e)
