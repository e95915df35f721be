"""The worker: wires the parts of the data path and runs the lifecycle (start -> loop -> drain -> close).

The data path, one part per module, each entered once (README, "Architecture"):

    kafka adapter -> intake -> admission -> embed stage -> scoring -> delivery -> outbox -> kafka adapter

- the Kafka client behind ``worker.kafka_port`` (``worker.kafka_clients.client_for``);
- ``Intake`` (worker/intake.py): records polled and read ahead, rebalances, holds, lag; it opens each
  message's offset in the ledger (worker/offsets.py);
- ``Admission`` (worker/admission.py): the message parsed as a frame, its image decoding in the pool,
  the frame waiting in the batcher;
- ``EmbedStage`` (worker/stages.py), its own thread, runs ``BatchScorer`` (worker/scoring.py): decodes
  awaited, embedded once per batch, scored against the indexes served now;
- ``Delivery`` (worker/delivery.py): every output (score record or dead letter) through the ``Outbox``
  (worker/outbox.py) until acknowledged; acknowledged outputs close their offsets, and the ledger says
  what may be committed.

So each consumed message ends as a score record or a dead letter, at least once. While the embed stage
is full the loop does not poll; it never waits for acknowledgements. Beside the path: ``IndexSet`` (hot
swap), ``Watchdog`` (stalls), ``HealthServer`` (/healthz, /readyz, /metrics; up before anything else),
``Worker.status()`` (what all of them report).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
import time
from typing import Any, Callable, Iterator, Optional

import redis
from prometheus_client import CollectorRegistry

from index_store import device_knn
from index_store.embedder import Embedder, pick_device
from index_store.openvino_runtime import WORKER_OV_STREAMS
from index_store.repository import IndexRepository
from index_store.spec import EmbedderSpec
from wire.errors import FramewatchError
from worker.admission import Admission, DecodePool, Refused
from worker.batcher import Batcher
from worker.camera_indexes import CameraIndexes, prefetcher
from worker.candidates import Candidates
from worker.config import WorkerConfig
from worker.connection import Connection
from worker.decode_budget import DecodeBudget
from worker.delivery import Delivery, output_limit
from worker.drift import DriftConfig, DriftTracker
from worker.extract import Extractor, as_extractor
from worker.health import HealthServer
from worker.heartbeat import Heartbeat
from worker.indexes import IndexSet
from worker.inflight import InFlight
from worker.intake import Intake
from worker.kafka_port import BrokerError, KafkaClient, Polled, Rebalances, Unparseable
from worker.metrics import CameraIndexMetrics, WorkerMetrics, drift_metrics, gpu_metrics
from worker.offsets import OffsetTracker
from worker.outbox import Outbox
from worker.routing import Routing
from worker.scorer_build import ScorerBuild
from worker.scoring import BatchScorer, Scorer
from worker.stages import EmbedStage, StageMetrics
from worker.start_position import StartPosition
from worker.status import WorkerStatus
from worker.verdicts import VerdictFlusher, VerdictTally
from worker.watchdog import Stall, Watchdog, WatchdogThread

log = logging.getLogger(__name__)

EmbedderFactory = Callable[[EmbedderSpec], Any]
EXIT_STALLED = 70  # run() returns this when the watchdog gave up
EMBED_QUEUE_BATCHES = 2  # batches waiting for the embed stage before the loop stops polling
BUSY_POLL_S = 0.02  # poll timeout while batches are in the embed stage, so their outcomes go out promptly
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
        kafka: Optional[KafkaClient] = None,
    ) -> None:
        """``prepare`` runs before each connection attempt (the CLI creates the topics there);
        ``on_give_up`` is called, besides stopping the loop, when the watchdog gives up; ``kafka`` is the
        client (default: the one ``cfg.kafka_client`` names; tests pass ``worker.memory_broker``'s)."""
        self.cfg = cfg
        self.worker_id = cfg.worker_id or f"{socket.gethostname()}-{os.getpid()}"
        self.registry = registry or CollectorRegistry()
        self.metrics = WorkerMetrics(self.registry)
        self.drift = DriftTracker(DriftConfig(window_s=cfg.drift_window_s, labelled=cfg.drift_sources), clock)
        drift_metrics(self.registry, self.drift)
        self.routing = Routing.parse(cfg.index, list(cfg.routes))
        self.clock = clock
        self.on_give_up = on_give_up
        if kafka is None:
            from worker.kafka_clients import client_for

            kafka = client_for(cfg)
        self.kafka = kafka
        self.embedder_factory = embedder_factory or (
            lambda spec: Embedder(
                spec,
                str(self.device),
                cfg.precision,
                batch_size=cfg.max_batch,
                adapted=self.indexes.adapted,
                runtime=cfg.runtime,
                quantized=self.indexes.quantized,
                streams=cfg.ov_streams or WORKER_OV_STREAMS,
            )  # fmt: skip
        )
        self.device = pick_device(cfg.device)  # the embedder's; a CUDA worker searches its indexes there too
        gpu_metrics(self.registry, self.device)
        # indexes
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
        # the data path
        self.watchdog = Watchdog(cfg.stall_timeout_s, clock)
        rebalances = Rebalances()
        self.connection = Connection(self.kafka, cfg.group_id, cfg.topics.frames, rebalances, cfg.kafka.redacted(),
                                     prepare, clock, self.metrics.reconnects.labels("kafka").inc)  # fmt: skip
        self.offsets = OffsetTracker()
        self.batcher: Batcher[InFlight] = Batcher(cfg.max_batch, cfg.max_wait_s, clock)
        self.intake = Intake(rebalances, self.batcher, self.offsets, self.watchdog, self.metrics,
                             StartPosition(cfg.start_from, cfg.started_at or time.time(), cfg.start_slack_s), clock)  # fmt: skip
        self.stage_metrics = StageMetrics(self.registry)
        self.pool = DecodePool(busy=self.stage_metrics.stage["decode"])
        self.admission = Admission(self.batcher, self.pool, self.metrics.capture_time_replaced,
                                   prefetcher(self.routing, self.cameras, self.indexes.snapshot))  # fmt: skip
        self.stage = EmbedStage(EMBED_QUEUE_BATCHES)
        self.outbox = Outbox(lambda: self.kafka.producer(output_limit(cfg) + 64 * 1024), clock)
        self.delivery = Delivery(cfg, self.outbox, self.offsets, self.metrics, clock)
        # the embedder, built on its own thread once the index says which
        self.decode_budget = DecodeBudget(cfg.decode_budget_bytes)  # the pool's memory; threads bound its CPU
        self.metrics.decode_budget(self.decode_budget.in_use, self.decode_budget.waiting)
        self.build: ScorerBuild[tuple[Extractor, Scorer]] = ScorerBuild(
            self._build_scorer, self.watchdog, clock
        )
        self.scorer: Optional[Scorer] = None
        # lifecycle
        self.watchdog_thread = WatchdogThread(self.watchdog, cfg.stall_exit_s, self._tripped, self._give_up)
        self.health: Optional[HealthServer] = None
        self._gave_up: Optional[Stall] = None
        self._stop = threading.Event()
        self.metrics.computed(
            ready=lambda: self.status().ready,
            stalled=lambda: self.watchdog_thread.current is not None,
            paused=lambda: self.intake.hold is not None,
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
                self.registry,
                lambda: self._probe(alive=True),
                lambda: self._probe(alive=False),
                self.cfg.metrics_host,
                self.cfg.metrics_port,
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
                except (BrokerError, OSError) as e:  # e.g. the coordinator lost mid-poll: wait, go on
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
        self._stop.set()  # the heartbeat thread too
        self.watchdog_thread.stop()
        self.indexes.stop()
        if self.cameras is not None:
            self.cameras.stop()
        self.connection.close()
        self.stage.stop()
        self.pool.close()
        self.outbox.close()
        self.verdict_flusher.stop()
        if self.health is not None:
            self.health.stop()

    def drain(self) -> None:
        """Score what is buffered, deliver, commit: within the drain limit, whatever the broker does."""
        if self.connection.consumer is None:
            return
        deadline = self.clock() + self.cfg.drain_timeout_s
        if len(self.batcher) and self.scorer is not None and self.indexes.ready():
            while len(self.batcher):
                if not self.stage.submit(self.batcher.take(), timeout_s=max(0.01, deadline - self.clock())):
                    break  # not scored: not committed, scored by whoever reads these partitions next
        while self.stage.in_flight() and self.clock() < deadline:
            self.delivery.send(self.stage.take(wait_s=0.1))
        self.delivery.send(self.stage.take())
        self.delivery.drain(deadline)
        self.delivery.commit(self.connection.consumer)
        left = self.outbox.pending()
        log.info(
            "drained; offsets committed"
            + (f" ({left} outputs unacknowledged: not committed)" if left else "")
        )

    # -- the loop -----------------------------------------------------------------
    def step(self) -> None:
        """One turn: deliver what is scored, hold or take records in, hand a ready batch to the embed stage."""
        consumer = self.connection.consumer
        if consumer is None:
            if self.indexes.ready():
                self._ensure_scorer()  # the build need not wait for Kafka
            wait = self.connection.attempt()
            if wait:
                self._stop.wait(min(0.2, wait))
            return
        with self.watchdog.calling("deliver"), self._busy("deliver"):
            self.delivery.pump(consumer, self.stage.take())
        self.intake.set_hold(consumer, self._hold_reason())
        if (
            len(self.batcher) >= self.batcher.max_size and self.stage.full()
        ):  # backpressure: the partitions wait
            with self._busy("deliver"):
                self.delivery.send(self.stage.take(wait_s=BUSY_POLL_S))
            return
        with self.watchdog.calling("poll"), self._busy("consume"):
            for message in self.intake.poll(
                consumer, max(1, self.cfg.max_batch - len(self.batcher)), self._wait_s()
            ):
                self._admit(message)
            self.connection.seen()
        if not self.stage.full() and self.batcher.ready(
            queued_ahead=self.stage.waiting()
        ):  # else it keeps filling
            self.stage.submit(self.batcher.take())
        with self.watchdog.calling("lag"):
            self.intake.update_lag(consumer)

    def _wait_s(self) -> float:
        """How long a poll may wait: until the batch's deadline; briefly while batches are in the embed stage
        (their outcomes go out promptly), and never zero while a full stage holds the batch back (no spin)."""
        if self.stage.full():
            return BUSY_POLL_S
        wait_s = self.batcher.time_left() if len(self.batcher) else 0.5
        if self.stage.in_flight():
            wait_s = min(wait_s, BUSY_POLL_S)
            if wait_s <= 0 and self.stage.waiting():
                wait_s = BUSY_POLL_S
        return wait_s

    def _admit(self, message: Polled) -> None:
        if isinstance(message, Unparseable):
            self.delivery.unparseable(message)
            return
        try:
            self.admission.admit(message)
        except Refused as e:
            self.delivery.reject(message, e.reason, e.detail)

    def _ensure_scorer(self) -> bool:
        """True once the scorer is built (on the builder's thread: worker/scorer_build.py says why)."""
        if self.scorer is not None:
            return True
        spec = self.indexes.spec
        built = self.build.get_or_start(spec) if spec is not None else None
        if built is None:
            return False
        extractor, self.scorer = built
        self.admission.serve(extractor.prepare)
        self.stage.serve(BatchScorer(
            self.scorer, self.indexes.snapshot, self.stage_metrics.stage["embed"], self.metrics.batch_size.observe,
            (functools.partial(self.watchdog.calling, "score"), self.metrics.stage_seconds.labels("score").time),
        ))  # fmt: skip
        return True

    def _build_scorer(self, spec: EmbedderSpec) -> tuple[Extractor, Scorer]:
        """Runs on the builder's thread."""
        extractor = as_extractor(self.embedder_factory(spec), self.cfg.limits, self.decode_budget)
        return extractor, Scorer(extractor, self.routing, self.worker_id, self.cfg.window, drift=self.drift,
                                  cameras=self.cameras, shadow=self.candidates)  # fmt: skip

    # -- holding, health ---------------------------------------------------------------
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
        consumer = self.connection.consumer
        assignment = tuple(sorted(p.partition for p in (consumer.assignment() if consumer else ())))
        return WorkerStatus(
            worker_id=self.worker_id, alive=alive, alive_detail=alive_detail, ready=ready, detail=detail,
            broker=self.connection.state(), group=self.cfg.group_id, topic=self.cfg.topics.frames,
            partitions=assignment, lag=self.intake.total_lag(), hold=self.intake.hold,
            scorer_ready=self.scorer is not None, kafka_client=self.kafka.name if consumer else "",
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
            "embed": self.stage.waiting,
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
        broker = self.connection.state()
        stall = self.watchdog_thread.current
        ok = (self.indexes.ready() and broker == "connected" and self.scorer is not None and self.intake.hold is None
              and stall is None)  # fmt: skip
        held = ", ".join(f"{n}@{li.meta.version}" for n, li in self.indexes.snapshot().items()) or "none"
        shadow = ", ".join(f"{n}@{v}" for n, versions in self.candidates.held().items() for v in versions)
        detail = f"indexes: {held}" + (f" (shadow: {shadow})" if shadow else "") + f"; broker: {broker}"
        if self.cameras is not None:
            detail += f"; {self.cameras.summary()}"
        building = self.build.status() if self.scorer is None else None
        cameras = self.cameras.problems() if self.cameras is not None else []
        problems = [stall.detail if stall else None, *self.indexes.problems(), *self.candidates.problems(), *cameras,
                    building, self.intake.hold]  # fmt: skip
        return ok, "; ".join([detail, *dict.fromkeys(p for p in problems if p)])
