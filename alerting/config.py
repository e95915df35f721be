"""The alert consumer's settings, one frozen object passed in (defaults written once, here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from wire.settings import KafkaSettings
from wire.topics import AlertTopics, Topics


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
    """How long a sink keeps trying one alert before it goes to the alert dead-letter topic."""

    retry_for_s: float = 600.0  # from the alert's first attempt; then it is dead-lettered
    first_backoff_s: float = 0.5
    max_backoff_s: float = 30.0
    timeout_s: float = 10.0  # per HTTP request (connect, and each read)
    backlog: int = 10_000  # alerts a sink may hold waiting; more are dead-lettered at once ("backlog-full")

    def __post_init__(self) -> None:
        if self.retry_for_s < 0 or self.first_backoff_s <= 0 or self.timeout_s <= 0 or self.backlog < 1:
            raise ValueError("retry time must be >= 0, backoff and timeout > 0, backlog >= 1")


@dataclass(frozen=True)
class IncidentConfig:
    """Incidents instead of per-frame alerts (README, *Incidents*; how a kind is decided: incidents.py)."""

    close_after_s: float = 60.0  # closed after this long without an anomaly of its source
    update_every_s: float = 30.0  # at most one "update" event per incident per this many seconds
    updates_to_sinks: bool = False  # sinks get open and close only; the incidents topic gets every event
    scene_after_s: float = 30.0  # sustained this long ...
    scene_share: float = 0.8  # ... with at least this share of the source's frames anomalous ...
    scene_coverage: float = 0.5  # ... and the anomaly over at least this share of the map (patch indexes),
    scene_flatness: float = 0.25  # or, without a map, the score a plateau (std/mean below this): a step
    rebuild_window_s: float = 7 * 24 * 3600.0  # incident events read back at start to find open incidents

    def __post_init__(self) -> None:
        if self.close_after_s <= 0 or self.update_every_s < 0 or not 0 < self.scene_share <= 1:
            raise ValueError("close-after must be > 0, update-every >= 0, scene share in (0, 1]")


@dataclass(frozen=True)
class AlertConfig:
    kafka: KafkaSettings
    topics: Topics = field(default_factory=Topics)
    alert_topics: AlertTopics = field(default_factory=AlertTopics)
    group_id: str = "framewatch-alerts"
    # A new group (or a partition without a committed offset) starts at the first score published at or
    # after ``started_at`` (seconds since the epoch; None = when the consumer is built), so an alerter
    # started just before its workers misses nothing and old anomalies are not re-alerted.
    from_beginning: bool = False  # start such partitions at the oldest retained score instead
    started_at: Optional[float] = None
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    retry: RetryConfig = field(default_factory=RetryConfig)
    review_url: str = ""  # link included in each alert, e.g. http://host:8321
    incidents: Optional[IncidentConfig] = None  # None: one alert per frame that passes the noise rules
    drain_timeout_s: float = 10.0  # on stop: time the sinks get to finish what they hold
    session_timeout_ms: int = 10000
    max_poll_interval_ms: int = 300000
