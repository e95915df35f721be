"""The worker's configuration, built once at start-up and passed in."""

from __future__ import annotations

from dataclasses import dataclass, field

from index_store.openvino_runtime import DEFAULT_RUNTIME, RUNTIMES
from wire.settings import KAFKA_CLIENTS, KafkaSettings, RedisSettings
from wire.topics import Topics
from worker.decode import DecodeLimits


@dataclass(frozen=True)
class WorkerConfig:
    kafka: KafkaSettings
    redis: RedisSettings
    index: str = "default"
    routes: tuple[str, ...] = ()  # "PATTERN=INDEX"
    topics: Topics = field(default_factory=Topics)
    group_id: str = "framewatch-workers"
    worker_id: str = ""
    max_batch: int = 32
    max_wait_s: float = 0.2
    device: str = "auto"
    precision: str = "auto"  # CPU: the index spec's; CUDA: half (index_store/embedder.py)
    runtime: str = DEFAULT_RUNTIME  # auto: OpenVINO on CPU when installed (index_store/openvino_runtime.py)
    # OpenVINO inference streams a batch is split over (openvino_runtime.OpenVinoModel); 0: WORKER_OV_STREAMS
    ov_streams: int = 0
    window: int = 0
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    # Memory all frames being decoded at once may hold (worker/decode_budget.py): two of the largest frames
    # limits.max_decode_bytes allows, or many ordinary ones. Threads bound the decode pool's CPU; this its memory.
    decode_budget_bytes: int = 640 * 1024 * 1024
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9108
    drain_timeout_s: float = 30.0
    index_poll_s: float = 5.0
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    max_poll_interval_ms: int = 300000
    max_pending_outputs: int = 1024  # outputs awaiting acknowledgement before consumption is held
    # Where a consumer group with no committed offsets starts. Live feeds: "latest", so a new group (a
    # renamed group, a second deployment) scores what cameras see now instead of re-scoring days of
    # retained frames first (old anomalies, minutes of latency). Once the group has committed, every
    # restart and rebalance resumes from its commits: nothing is skipped. "earliest" for backfills.
    start_from: str = "latest"
    # With "latest", a partition without a committed offset starts at the first frame published since
    # ``started_at`` (seconds since the epoch; 0: when the Worker is created; `framewatch work` passes the
    # process's start) less ``start_slack_s``, however late the group join comes (worker/start_position.py).
    started_at: float = 0.0
    start_slack_s: float = 5.0
    stall_timeout_s: float = 120.0  # watchdog: no progress (or one call) this long -> not ready
    stall_exit_s: float = 600.0  # watchdog: stalled this long -> the worker gives up (exits non-zero)
    kafka_client: str = "kafka-python"  # the consumer's client: kafka-python, or confluent (optional extra)
    drift_sources: int = 50  # sources with their own alarm-rate/drift metric labels (worker/drift.py)
    drift_window_s: float = 600.0  # the window alarm rate and drift are measured over
    # Per-camera indexes (routes 'PATTERN={source}', worker/camera_indexes.py): the memory they may hold
    # (least recently used evicted), and how long a batch waits for one still loading before its frames
    # are scored by the fallback index (``index``).
    index_memory_bytes: int = 1 << 30
    index_load_wait_s: float = 2.0

    def __post_init__(self) -> None:
        from wire.errors import FramewatchError

        problems = [
            f"{name} must be {rule}"
            for name, ok, rule in (
                ("max_batch", self.max_batch >= 1, "at least 1"),
                ("max_wait_s", self.max_wait_s >= 0, "0 or more"),
                ("window", self.window >= 0, "0 (off) or more"),
                ("drain_timeout_s", self.drain_timeout_s > 0, "positive"),
                (
                    "decode_budget_bytes",
                    self.decode_budget_bytes >= self.limits.max_decode_bytes,
                    f"at least limits.max_decode_bytes ({self.limits.max_decode_bytes})",
                ),
                ("max_pending_outputs", self.max_pending_outputs >= self.max_batch, "at least max_batch"),
                ("start_from", self.start_from in ("earliest", "latest"), "earliest or latest"),
                ("start_slack_s", self.start_slack_s >= 0, "0 or more"),
                ("stall_timeout_s", self.stall_timeout_s > 0, "positive"),
                ("stall_exit_s", self.stall_exit_s >= self.stall_timeout_s, "at least stall_timeout_s"),
                ("metrics_port", 0 <= self.metrics_port < 65536, "a TCP port (0 = any free one)"),
                ("kafka_client", self.kafka_client in KAFKA_CLIENTS, " or ".join(KAFKA_CLIENTS)),
                ("drift_sources", self.drift_sources >= 0, "0 or more"),
                ("drift_window_s", self.drift_window_s > 0, "positive"),
                ("index_memory_bytes", self.index_memory_bytes >= 1, "at least 1"),
                ("index_load_wait_s", self.index_load_wait_s >= 0, "0 or more"),
                ("runtime", self.runtime in RUNTIMES, " or ".join(RUNTIMES)),
            )
            if not ok
        ]
        if problems:
            raise FramewatchError("worker configuration: " + "; ".join(problems))
