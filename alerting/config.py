"""The alert consumer's settings, one frozen object passed in (defaults written once, here)."""

from __future__ import annotations

from dataclasses import dataclass, field

from wire.settings import KafkaSettings
from wire.topics import Topics


@dataclass(frozen=True)
class NoiseConfig:
    cooldown_s: float = 300.0  # per source: at most one alert per this many seconds
    need: int = 1  # N: alert when at least N ...
    window: int = 1  # ... of the last M frames of a source are anomalous
    dedup_size: int = 100_000  # frame ids remembered for de-duplication

    def __post_init__(self) -> None:
        if not 1 <= self.need <= self.window:
            raise ValueError(f"need 1 <= N <= M, got N={self.need}, M={self.window}")
        if self.cooldown_s < 0:
            raise ValueError("cooldown must not be negative")


@dataclass(frozen=True)
class RetryConfig:
    attempts: int = 5  # tries per alert and sink, the first included
    first_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 10.0  # per HTTP request


@dataclass(frozen=True)
class AlertConfig:
    kafka: KafkaSettings
    topics: Topics = field(default_factory=Topics)
    group_id: str = "framewatch-alerts"
    from_beginning: bool = False  # a new group starts at the end: old anomalies are not re-alerted
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    review_url: str = ""  # link included in each alert, e.g. http://host:8321
