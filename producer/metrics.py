"""Prometheus metrics of the producer (registry passed in)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.frames_sent = Counter(
            "framewatch_producer_frames_sent", "Frames acknowledged by the broker", ["source"], registry=registry
        )
        self.bytes_sent = Counter(
            "framewatch_producer_bytes_sent", "Image bytes acknowledged by the broker", ["source"], registry=registry
        )
        self.send_errors = Counter(
            "framewatch_producer_send_errors", "Frames the broker did not acknowledge", ["source"], registry=registry
        )
        self.renewals = Counter(
            "framewatch_producer_renewals", "Producers replaced after their frames kept failing", registry=registry
        )
        self.frame_bytes = Histogram(
            "framewatch_producer_frame_bytes",
            "Size of published frames",
            buckets=(1e3, 1e4, 5e4, 1e5, 5e5, 1e6, 5e6, 2e7),
            registry=registry,
        )
