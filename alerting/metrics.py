"""The alert consumer's Prometheus metrics, on a registry passed in (labelled counters start at zero)."""

from __future__ import annotations

from typing import Sequence

from prometheus_client import CollectorRegistry, Counter

from alerting.noise import OUTCOMES


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry, sinks: Sequence[str]) -> None:
        self.records = Counter("framewatch_alert_records_total", "Score records read, by what became of them",
                               ["outcome"], registry=registry)  # fmt: skip
        self.delivered = Counter("framewatch_alerts_delivered_total", "Alerts a sink accepted", ["sink"],
                                 registry=registry)  # fmt: skip
        self.failed = Counter("framewatch_alerts_failed_total",
                              "Alerts given up on after every retry (logged with their payload)", ["sink"],
                              registry=registry)  # fmt: skip
        self.retries = Counter("framewatch_alert_retries_total", "Delivery attempts after a failed one", ["sink"],
                               registry=registry)  # fmt: skip
        self.undecodable = Counter("framewatch_alert_undecodable_total", "Score records that could not be decoded",
                                   registry=registry)  # fmt: skip
        for outcome in OUTCOMES:
            self.records.labels(outcome)
        for sink in sinks:
            self.delivered.labels(sink)
            self.failed.labels(sink)
            self.retries.labels(sink)
