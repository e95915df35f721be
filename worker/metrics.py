"""Prometheus metrics of the worker, all on the registry passed in."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120)
STAGE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.consumed = Counter("framewatch_frames_consumed", "Frame messages consumed", registry=r)
        self.scored = Counter("framewatch_frames_scored", "Frames scored and published", ["index"], registry=r)
        self.dead_letters = Counter(
            "framewatch_dead_letters", "Frames sent to the dead-letter topic", ["reason"], registry=r
        )
        self.anomalies = Counter("framewatch_anomalies", "Frames over their index threshold", ["source"], registry=r)
        self.batch_size = Histogram(
            "framewatch_batch_size", "Frames per scoring batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=r
        )
        self.stage_seconds = Histogram(
            "framewatch_stage_seconds",
            "Time per pipeline stage per batch",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=r,
        )
        self.latency = Histogram(
            "framewatch_end_to_end_latency_seconds",
            "Capture time to score publication",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.score = Histogram(
            "framewatch_normalized_score",
            "Score / threshold of scored frames",
            buckets=(0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.5, 2, 5),
            registry=r,
        )
        self.index_version = Gauge(
            "framewatch_index_version", "Version of each index the worker serves", ["index"], registry=r
        )
        self.index_reloads = Counter(
            "framewatch_index_reloads", "Index versions loaded or refused", ["index", "result"], registry=r
        )
        self.reconnects = Counter(
            "framewatch_reconnects", "Reconnections to a dependency", ["dependency"], registry=r
        )
        self.lag = Gauge("framewatch_consumer_lag", "Messages behind the log end", ["partition"], registry=r)
        self.ready = Gauge("framewatch_ready", "1 when an index is loaded and the broker reachable", registry=r)
        self.paused = Gauge("framewatch_consumption_paused", "1 while consumption is paused (no index yet, or outputs unacknowledged)", registry=r)
