"""The worker's configuration, built once at start-up and passed in."""

from __future__ import annotations

from dataclasses import dataclass, field

from wire.settings import KafkaSettings, RedisSettings
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
    precision: str = "auto"
    window: int = 0
    limits: DecodeLimits = field(default_factory=DecodeLimits)
    metrics_host: str = "0.0.0.0"
    metrics_port: int = 9108
    drain_timeout_s: float = 30.0
    index_poll_s: float = 5.0
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    max_poll_interval_ms: int = 300000
    max_buffered_frames: int = 256
