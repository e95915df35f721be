"""The worker's lifecycle: start -> loop until the stop event -> drain -> close.

Data path per message, in overlapping stages (worker/stages.py):
FrameRecord.decode -> the decode pool (extractor.prepare: JPEG at reduced DCT
scale, preprocessed) -> Batcher -> the embed stage's thread (Scorer: embed +
kNN) -> the outbox (score topic); any failure on the way -> a dead letter
through the same outbox. While the embed stage is full the loop does not poll. The loop never waits for the broker's
acknowledgements: the outbox reports them as they come, the offset tracker
closes those frames, and the loop commits, per partition, the offset below
which every frame's output is acknowledged. So each consumed frame ends as a
score record or a dead letter, at least once.

The parts, each in its own module: ``OffsetTracker`` (what may be committed),
``Outbox`` (delivery and retries), ``Partitions`` (revocations and assignments, acted
on after poll(), outside the client's callbacks; lag), ``Watchdog`` (stalls), ``IndexSet`` (hot swap),
``Scorer`` (the model), ``HealthServer`` (/healthz, /readyz, /metrics; up
before anything else, whatever Kafka and Redis are doing).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Iterator, Optional

import redis
from kafka import TopicPartition
from kafka.errors import KafkaError
from prometheus_client import CollectorRegistry

from index_store import device_knn
from index_store.embedder import Embedder, pick_device
from index_store.openvino_runtime import WORKER_OV_STREAMS
from index_store.repository import IndexRepository
from index_store.spec import EmbedderSpec
from wire.errors import FrameDecodeError, FramewatchError
from wire.records import DeadLetter, FrameRecord
from worker import kafka_io
from worker.batcher import Batcher
from worker.camera_indexes import CameraIndexes
from worker.candidates import Candidates
from worker.config import WorkerConfig
from worker.decode_budget import DecodeBudget
from worker.delivery import Delivery
from worker.drift import DriftConfig, DriftTracker
from worker.extract import Extractor, as_extractor
from worker.health import HealthServer
from worker.heartbeat import Heartbeat
from worker.indexes import IndexSet
from worker.metrics import CameraIndexMetrics, WorkerMetrics, drift_metrics, gpu_metrics
from worker.offsets import OffsetTracker
from worker.outbox import Outbox
from worker.partitions import Partitions
from worker.poison import Unparseable
from worker.read_ahead import ReadAhead
from worker.routing import Routing
from worker.scorer_build import ScorerBuild
from worker.scoring import PendingFrame, Scorer
from worker.stages import DecodePool, EmbedStage, Outcome, StageMetrics, score_batch
from worker.start_position import StartPosition
from worker.status import WorkerStatus
from worker.verdicts import VerdictFlusher, VerdictTally
from worker.watchdog import Stall, Watchdog, WatchdogThread

log = logging.getLogger(__name__)

EmbedderFactory = Callable[[EmbedderSpec], Any]
EXIT_STALLED = 70  # run() returns this when the watchdog gave up
COMMIT_EVERY_S = 1.0
EMBED_QUEUE_BATCHES = 2  # batches waiting for the embed stage before the loop stops polling
BUSY_POLL_S = 0.02  # poll timeout while batches are in the embed stage, so their outcomes go out promptly
# A new consumer connects in the background (kafka-python after bootstrap, librdkafka after its first
# statistics): "connecting" on /readyz this long, then "unreachable" if no broker connection came.
CONNECTING_S = 15.0
HEARTBEAT_EVERY_S = 5.0  # the Redis health key (framewatch status) is written this often, from its own thread


class Worker:
    def __init__(
        self,
        cfg: WorkerConfig,
        registry: Optional[CollectorRegistry] = None,
        embedder_factory: Optional[EmbedderFactory] = None,
        clock: Callable[[], float] = time.monotonic,
        prepare: Callable[[], None] = lambda: None,
        on_give_up: Callable[[Stall], None] = lambda stall: None,
    ) -> None:
        """``prepare`` runs before each connection attempt (the CLI creates the topics there);
        ``on_give_up`` is called, besides stopping the loop, when the watchdog gives up."""
        self.cfg = cfg
        self.worker_id = cfg.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.registry = registry or CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry)
        self.drift = DriftTracker(DriftConfig(window_s=cfg.drift_window_s, labelled=cfg.drift_sources), clock)
        drift_metrics(self.registry, self.drift)
        self.routing = Routing.parse(cfg.index, list(cfg.routes))
        self.clock = clock
        self.prepare, self.on_give_up = prepare, on_give_up
        self.embedder_factory = embedder_factory or (
            lambda spec: Embedder(
                spec, str(self.device), cfg.precision, batch_size=cfg.max_batch, adapted=self.indexes.adapted,
                runtime=cfg.runtime, quantized=self.indexes.quantized, streams=cfg.ov_streams or WORKER_OV_STREAMS,
            )  # fmt: skip
        )
        self.device = pick_device(cfg.device)  # the embedder's; a CUDA worker searches its indexes there too
        gpu_metrics(self.registry, self.device)
        self.cameras = self._camera_indexes() if self.routing.per_camera else None
        self.verdicts = VerdictTally()  # alarm counts per version, for `index status` (worker/verdicts.py)
        self.candidates = Candidates(self.routing.names(), lambda: self.indexes.spec, self.verdicts, self.metrics,
                                     lambda index: device_knn.searcher_for(index, self.device))  # fmt: skip
        self.indexes = IndexSet(
            self._repository, self.routing.names(), self.metrics, cfg.index_poll_s,
            searcher_for=lambda index: device_knn.searcher_for(index, self.device),
            on_event=self.cameras.changed if self.cameras else None,
            on_subscribe=self.cameras.resync if self.cameras else None,
            after_refresh=self.candidates.refresh,
        )  # fmt: skip
        self.verdict_flusher = VerdictFlusher(self.verdicts, self._repository)
        self.batcher: Batcher[PendingFrame] = Batcher(cfg.max_batch, cfg.max_wait_s, clock)
        self.ahead = ReadAhead()
        self.rebalance = kafka_io.Rebalance()
        self.outbox = Outbox(lambda: kafka_io.make_producer(cfg), clock)
        self.tracker = OffsetTracker()
        self.delivery = Delivery(cfg, self.outbox, self.tracker, self.metrics, clock)
        self.watchdog = Watchdog(cfg.stall_timeout_s, clock)
        self.partitions = Partitions(
            self.rebalance, self.batcher, self.ahead, self.tracker, self.watchdog, self.metrics,
            StartPosition(cfg.start_from, cfg.started_at or time.time(), cfg.start_slack_s),
            lambda consumer: kafka_io.Lookup(consumer, cfg), clock,
        )  # fmt: skip
        self.watchdog_thread = WatchdogThread(self.watchdog, cfg.stall_exit_s, self._tripped, self._give_up)
        self.scorer: Optional[Scorer] = None
        self.extractor: Optional[Extractor] = None
        self.stage_metrics = StageMetrics(self.registry)
        self.pool = DecodePool(busy=self.stage_metrics.stage["decode"])
        self.decode_budget = DecodeBudget(cfg.decode_budget_bytes)  # the pool's memory; threads bound its CPU
        self.metrics.decode_budget(self.decode_budget.in_use, self.decode_budget.waiting)
        self.stage: Optional[EmbedStage] = None  # started with the worker
        self.consumer: Any = None
        self.health: Optional[HealthServer] = None
        self.hold: Optional[str] = None  # why consumption is held, while it is
        self.build: ScorerBuild[tuple[Extractor, Scorer]] = ScorerBuild(self._build_scorer, self.watchdog, clock)
        self._connect_at, self._connect_backoff = 0.0, 0.5
        self._connect_error: Optional[str] = None  # the last failed connection attempt, until one succeeds
        self._broker_seen: Any = None  # the consumer once it has been connected (before: "connecting")
        self._connected_at = 0.0  # when the consumer was created
        self._gave_up: Optional[Stall] = None
        self._replaced_times = 0
        self._stop = threading.Event()
        self.metrics.computed(
            ready=lambda: self.status().ready,
            stalled=lambda: self.watchdog_thread.current is not None,
            paused=lambda: self.hold is not None,
            pending=self.outbox.pending,
        )
        self.stage_metrics.depths(**self._depth_readers())

    # -- lifecycle ---------------------------------------------------------------
    def _camera_indexes(self) -> CameraIndexes:
        """Per-camera indexes of template routes, held under cfg.index_memory_bytes (worker/camera_indexes.py)."""
        return CameraIndexes(
            self._repository, lambda: self.indexes.spec, self.cfg.index_memory_bytes,
            CameraIndexMetrics(self.registry), lambda index: device_knn.searcher_for(index, self.device),
            wait_s=self.cfg.index_load_wait_s,
        )  # fmt: skip

    def _repository(self) -> IndexRepository:
        client = redis.Redis.from_url(
            self.cfg.redis.url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=10,
            **({"ssl_ca_certs": self.cfg.redis.ssl_ca_certs} if self.cfg.redis.ssl_ca_certs else {}),
        )  # fmt: skip
        return IndexRepository(client, self.cfg.redis.key_prefix)

    def start(self) -> None:
        """Health first (so probes answer from the first second), then the index watcher and the watchdog."""
        try:
            self.health = HealthServer(
                self.registry, lambda: self._probe(alive=True), lambda: self._probe(alive=False),
                self.cfg.metrics_host, self.cfg.metrics_port,
            ).start()
        except OSError as e:
            raise FramewatchError(
                f"cannot serve metrics on {self.cfg.metrics_host}:{self.cfg.metrics_port}: {e.strerror or e} "
                "(is another worker using that port? pass --metrics-port)"
            ) from e
        host = f"[{self.cfg.metrics_host}]" if ":" in self.cfg.metrics_host else self.cfg.metrics_host
        log.info("worker %s metrics on http://%s:%d/metrics", self.worker_id, host, self.health.port)
        self.indexes.start()
        if self.cameras is not None:
            self.cameras.start()
        self.verdict_flusher.start()
        self.stage = EmbedStage(self._embed_batch, EMBED_QUEUE_BATCHES)
        self.watchdog_thread.start()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()

    def run(self, stop: Optional[threading.Event] = None) -> int:
        """Run until ``stop`` is set; returns the process exit code (0, or EXIT_STALLED)."""
        if stop is not None:
            self._stop = stop
        try:
            self.start()
            while not self._stop.is_set():
                try:
                    self.step()
                except (KafkaError, OSError) as e:  # e.g. the coordinator lost mid-poll: wait, go on
                    self.metrics.reconnects.labels("kafka").inc()
                    log.warning("kafka: %s; retrying in 1s", e)
                    self._stop.wait(1.0)
            if self._gave_up is None:
                self.drain()
            return EXIT_STALLED if self._gave_up is not None else 0
        finally:
            self.close()

    def close(self) -> None:
        """Leave the group and stop; drain() has committed what it could."""
        self.watchdog_thread.stop()
        self.indexes.stop()
        if self.cameras is not None:
            self.cameras.stop()
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False, timeout_ms=5000)
            except Exception as e:  # noqa: BLE001 - a broker gone at shutdown must not change the exit code
                log.warning("closing the kafka consumer: %s", e)
        if self.stage is not None:
            self.stage.stop()
        self.pool.close()
        self.outbox.close()
        self.verdict_flusher.stop()
        if self.health is not None:
            self.health.stop()

    def drain(self) -> None:
        """Score what is buffered, deliver, commit: within the drain limit, whatever the broker does."""
        if self.consumer is None:
            return
        deadline = self.clock() + self.cfg.drain_timeout_s
        assert self.stage is not None
        if len(self.batcher) and self.scorer is not None and self.indexes.ready():
            while len(self.batcher):
                if not self.stage.submit(self.batcher.take(), timeout_s=max(0.01, deadline - self.clock())):
                    break  # not scored: not committed, scored by whoever reads these partitions next
        while self.stage.in_flight() and self.clock() < deadline:
            self.delivery.send_outcomes(self.stage.take(wait_s=0.1))
        self.delivery.send_outcomes(self.stage.take())
        self.delivery.drain(deadline)
        self.delivery.commit(self.consumer)
        left = self.outbox.pending()
        log.info("drained; offsets committed" + (f" ({left} outputs unacknowledged: not committed)" if left else ""))

    # -- the loop -----------------------------------------------------------------
    def step(self) -> None:
        if self.consumer is None:
            if self.indexes.ready():
                self._ensure_scorer()  # the build need not wait for Kafka
            self._connect()
            return
        with self.watchdog.calling("deliver"), self._busy("deliver"):
            self._deliver()
        self._set_hold(self._hold_reason())
        assert self.stage is not None
        if len(self.batcher) >= self.batcher.max_size and self.stage.full():  # backpressure: the partitions wait
            with self._busy("deliver"):
                self.delivery.send_outcomes(self.stage.take(wait_s=BUSY_POLL_S))
            return
        with self.watchdog.calling("poll"), self._busy("consume"):
            records = self._poll()
            if self._broker_seen is not self.consumer and kafka_io.broker_connected(self.consumer):
                self._broker_seen = self.consumer  # from now on, not connected means unreachable
            rewound = self.partitions.apply(self.consumer, held=self.hold is not None)
            if rewound:  # read again from the committed offset
                records = [m for m in records if TopicPartition(m.topic, m.partition) not in rewound]
            if self.hold is not None:  # what was read ahead is read again too, from the first of it
                self.partitions.put_back(self.consumer, records + self.ahead.take_all())
                return
            for msg in records:
                if isinstance(msg, Unparseable):
                    self._unparseable(msg)
                else:
                    self._accept(msg)
        if not self.stage.full() and self.batcher.ready(queued_ahead=self.stage.waiting()):  # else it keeps filling
            self.stage.submit(self.batcher.take())
        with self.watchdog.calling("lag"):
            self.partitions.update_lag(self.consumer)

    def _connect(self) -> None:
        if self.clock() < self._connect_at:
            self._stop.wait(min(0.2, self._connect_at - self.clock()))
            return
        try:
            with self.watchdog.calling("connect"):
                self.prepare()
                self.consumer = kafka_io.make_consumer(self.cfg, self.rebalance)
            self._connected_at = self.clock()
            log.info("connected to kafka %s, group %s", self.cfg.kafka.redacted(), self.cfg.group_id)
            self._connect_backoff, self._connect_error = 0.5, None
        except (FramewatchError, KafkaError, OSError) as e:
            self.metrics.reconnects.labels("kafka").inc()
            self._connect_error = str(e)
            log.warning("kafka %s unreachable (%s); retrying in %.1fs", self.cfg.kafka.redacted(), e,
                        self._connect_backoff)  # fmt: skip
            self._connect_at = self.clock() + self._connect_backoff
            self._connect_backoff = min(self._connect_backoff * 2, 10.0)

    def _poll(self) -> list[Any]:
        """Up to the batch's room in records: those read ahead first; the client is asked only when they
        are fewer, and then gives everything it holds (``worker.read_ahead`` says why)."""
        room = max(1, self.cfg.max_batch - len(self.batcher))
        if len(self.ahead) >= room:
            return self.ahead.take(room)
        if self.stage is not None and self.stage.full():
            wait_s = BUSY_POLL_S  # the batch cannot go before the stage has room: fill it meanwhile, not spinning
        else:
            wait_s = self.batcher.time_left() if len(self.batcher) else 0.5
            if self.stage is not None and self.stage.in_flight():
                wait_s = min(wait_s, BUSY_POLL_S)
                if wait_s <= 0 and self.stage.waiting():  # held behind a waiting batch: fill it, not spinning
                    wait_s = BUSY_POLL_S
        return self.ahead.poll(self.consumer, room, wait_s)  # without waiting when some were read ahead

    def _accept(self, msg: Any) -> None:
        tp = TopicPartition(msg.topic, msg.partition)
        self.metrics.consumed.inc()
        self.tracker.opened(tp, msg.offset)
        self.watchdog.consumed(tp)
        try:
            record = FrameRecord.decode(
                msg.key, msg.value, msg.headers,
                fallback_id=f"{msg.topic}/{msg.partition}/{msg.offset}",
                fallback_time=(msg.timestamp or 0) / 1000.0,
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001 - a poison message must become a dead letter, never a crash loop
            reason, detail = (e.reason, e.message) if isinstance(e, FrameDecodeError) else (
                "undecodable", f"{type(e).__name__}: {e}")  # fmt: skip
            letter = DeadLetter(msg.key, msg.value, list(msg.headers or []), reason, detail,
                                msg.topic, msg.partition, msg.offset)  # fmt: skip
            self.delivery.dead_letter(letter, (tp, msg.offset))
            return
        if record.capture_time_replaced:
            self._capture_time_replaced(record)
        assert self.extractor is not None  # consumption is held until the scorer is built
        if self.cameras is not None:  # its camera's index loads while the frame decodes and waits for its batch
            route = self.routing.route(record.source)
            if route.per_camera and route.name not in self.indexes.snapshot():
                self.cameras.want(route.name)
        prepared = self.pool.submit(self.extractor.prepare, record)
        self.batcher.add(PendingFrame(record, prepared, msg.topic, msg.partition, msg.offset, msg.key,
                                      list(msg.headers or [])))  # fmt: skip

    def _capture_time_replaced(self, record: FrameRecord) -> None:
        """Counted; logged the first time and then every 1000th, so a camera with an unset clock does not flood."""
        self.metrics.capture_time_replaced.inc()
        self._replaced_times += 1
        if self._replaced_times % 1000 == 1:
            log.warning("frame %s from %s: capture time before 2000 or over a day ahead, replaced by the message "
                        "timestamp (%d such frames so far)", record.frame_id, record.source, self._replaced_times)  # fmt: skip

    def _unparseable(self, bad: Unparseable) -> None:
        tp = TopicPartition(bad.topic, bad.partition)
        self.tracker.opened(tp, bad.offset)
        letter = DeadLetter(None, None, [], "unparseable-record", bad.error, bad.topic, bad.partition, bad.offset)
        self.delivery.dead_letter(letter, (tp, bad.offset))

    def _ensure_scorer(self) -> bool:
        """True once the scorer is built (on the builder's thread: worker/scorer_build.py says why)."""
        if self.scorer is not None:
            return True
        spec = self.indexes.spec
        built = self.build.get_or_start(spec) if spec is not None else None
        if built is None:
            return False
        self.extractor, self.scorer = built
        return True

    def _build_scorer(self, spec: EmbedderSpec) -> tuple[Extractor, Scorer]:
        """Runs on the builder's thread."""
        extractor = as_extractor(self.embedder_factory(spec), self.cfg.limits, self.decode_budget)
        return extractor, Scorer(extractor, self.routing, self.worker_id, self.cfg.window, drift=self.drift,
                                  cameras=self.cameras, shadow=self.candidates)  # fmt: skip

    def _embed_batch(self, batch: list[PendingFrame]) -> list[Outcome]:
        """Runs on the embed stage's thread: decodes awaited, embedded, scored against the current indexes."""
        assert self.scorer is not None
        self.metrics.batch_size.observe(len(batch))
        with self.watchdog.calling("score"), self.metrics.stage_seconds.labels("score").time():
            return score_batch(self.scorer, batch, self.indexes.snapshot(), self.stage_metrics.stage["embed"])

    # -- delivery, offsets, rebalance -------------------------------------------------
    def _deliver(self) -> None:
        """Send what the embed stage finished; take in acknowledgements; commit, at most every COMMIT_EVERY_S."""
        if self.stage is not None:
            self.delivery.send_outcomes(self.stage.take())
        self.delivery.collect()
        if self.clock() - self.delivery.last_commit >= COMMIT_EVERY_S:
            self.delivery.commit(self.consumer)

    # -- holding, lag, health ---------------------------------------------------------
    def _hold_reason(self) -> Optional[str]:
        """Why consumption must wait: no index (or embedder) yet, outputs unacknowledged, or too many pending."""
        if not self.indexes.ready() or not self._ensure_scorer():
            missing = [n for n in self.routing.names() if n not in self.indexes.snapshot()]
            if missing:
                return f"waiting for index {', '.join(missing)} to load"
            return self.build.status() or "waiting for the embedder"
        failing = self.outbox.failing()
        if failing:
            return failing
        if self.outbox.pending() >= self.cfg.max_pending_outputs:
            return f"{self.outbox.pending()} outputs await acknowledgement"
        return None

    def _set_hold(self, reason: Optional[str]) -> None:
        assignment = self.consumer.assignment()
        if reason is not None:
            self.watchdog.holding()
            if self.hold is None:
                log.warning("%s: holding consumption", reason)
            self.hold = reason
            if assignment:
                self.consumer.pause(*assignment)
        elif self.hold is not None:
            self.hold = None
            if assignment:
                self.consumer.resume(*assignment)
            log.info("consuming")

    def _heartbeat(self) -> None:
        """Tell `framewatch status` what this worker serves (a Redis key that expires if the worker dies)."""
        repo = self._repository()
        Heartbeat(repo, self.worker_id, ttl_s=3 * HEARTBEAT_EVERY_S).run(
            lambda: self.status().heartbeat(), self._stop, HEARTBEAT_EVERY_S
        )

    def status(self) -> WorkerStatus:
        """A snapshot of what this worker serves: readiness and why, assignment, lag, hold, index versions,
        queue depths (worker/status.py). Safe from any thread."""
        alive, alive_detail = self._alive()
        ready, detail = self._ready()
        consumer = self.consumer
        assignment = tuple(sorted(tp.partition for tp in (consumer.assignment() if consumer else ())))
        return WorkerStatus(
            worker_id=self.worker_id, alive=alive, alive_detail=alive_detail, ready=ready, detail=detail,
            broker=self._broker_state(), group=self.cfg.group_id, topic=self.cfg.topics.frames,
            partitions=assignment, lag=self.partitions.total_lag(), hold=self.hold,
            scorer_ready=self.scorer is not None, kafka_client=type(consumer).__name__ if consumer else "",
            indexes={n: li.meta.version for n, li in self.indexes.snapshot().items()},
            candidates=self.candidates.held(),
            depths={name: int(read()) for name, read in self._depth_readers().items()},
            drift=tuple(d.to_dict() for d in self.drift.snapshot()[: self.cfg.drift_sources]),
        )  # fmt: skip

    def _depth_readers(self) -> dict[str, Callable[[], int]]:
        """Items waiting in each queue between the stages: decode (frames), batch (frames), embed (batches),
        deliver (outputs)."""
        return {
            "decode": self.pool.depth, "batch": lambda: len(self.batcher), "deliver": self.outbox.pending,
            "embed": lambda: self.stage.waiting() if self.stage else 0,
        }  # fmt: skip

    def _probe(self, alive: bool) -> tuple[bool, str]:
        """/healthz (alive) or /readyz, from the status."""
        st = self.status()
        return (st.alive, st.alive_detail) if alive else (st.ready, st.detail)

    @contextlib.contextmanager
    def _busy(self, stage: str) -> Iterator[None]:
        """CPU time of the loop thread in ``stage`` (time blocked in poll or waiting does not count)."""
        t0 = time.thread_time()
        try:
            yield
        finally:
            self.stage_metrics.stage[stage].inc(time.thread_time() - t0)

    def _tripped(self, stall: Stall) -> None:
        self.metrics.watchdog_trips.labels(stall.reason).inc()

    def _give_up(self, stall: Stall) -> None:
        self._gave_up = stall
        self._stop.set()
        self.on_give_up(stall)

    def _alive(self) -> tuple[bool, str]:
        stall = self.watchdog_thread.current
        if stall is not None and stall.reason == "loop-stuck":
            return False, stall.detail
        return True, "loop running"

    def _ready(self) -> tuple[bool, str]:
        broker = self._broker_state()
        stall = self.watchdog_thread.current
        ok = (self.indexes.ready() and broker == "connected" and self.scorer is not None and self.hold is None
              and stall is None)  # fmt: skip
        held = ", ".join(f"{n}@{li.meta.version}" for n, li in self.indexes.snapshot().items()) or "none"
        shadow = ", ".join(f"{n}@{v}" for n, versions in self.candidates.held().items() for v in versions)
        detail = f"indexes: {held}" + (f" (shadow: {shadow})" if shadow else "") + f"; broker: {broker}"
        if self.cameras is not None:
            detail += f"; {self.cameras.summary()}"
        building = self.build.status() if self.scorer is None else None
        cameras = self.cameras.problems() if self.cameras is not None else []
        problems = [stall.detail if stall else None, *self.indexes.problems(), *self.candidates.problems(), *cameras,
                    building, self.hold]  # fmt: skip
        return ok, "; ".join([detail, *dict.fromkeys(p for p in problems if p)])

    def _broker_state(self) -> str:
        """connected | connecting (not connected yet, for at most CONNECTING_S) | unreachable (an attempt
        failed, a connection was lost, or none came in CONNECTING_S)."""
        if self.consumer is None:
            return "unreachable" if self._connect_error else "connecting"
        if kafka_io.broker_connected(self.consumer):
            return "connected"
        new = self._broker_seen is not self.consumer and self.clock() - self._connected_at < CONNECTING_S
        return "connecting" if new else "unreachable"
