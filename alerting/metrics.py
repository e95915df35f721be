"""The alert consumer's Prometheus metrics, on a registry passed in (labelled counters start at zero)."""

from __future__ import annotations

from typing import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from alerting.dead_letters import REASONS
from alerting.noise import OUTCOMES


class AlertMetrics:
    def __init__(self, registry: CollectorRegistry, sinks: Sequence[str]) -> None:
        self.records = Counter("framewatch_alert_records_total", "Score records read, by what became of them",
                               ["outcome"], registry=registry)  # fmt: skip
        self.delivered = Counter("framewatch_alerts_delivered_total", "Alerts a sink accepted", ["sink"],
                                 registry=registry)  # fmt: skip
        self.dead_lettered = Counter("framewatch_alerts_dead_lettered_total",
                                     "Alerts a sink could not take, sent to the alert dead-letter topic",
                                     ["sink", "reason"], registry=registry)  # fmt: skip
        self.dead_letter_errors = Counter("framewatch_alert_dead_letter_errors_total",
                                          "Failed attempts to publish an alert dead letter (retried)",
                                          registry=registry)  # fmt: skip
        self.retries = Counter("framewatch_alert_retries_total", "Delivery attempts after a failed one", ["sink"],
                               registry=registry)  # fmt: skip
        self.backlog = Gauge("framewatch_alert_backlog", "Alerts a sink holds, not yet delivered or dead-lettered",
                             ["sink"], registry=registry)  # fmt: skip
        self.undecodable = Counter("framewatch_alert_undecodable_total", "Score records that could not be decoded",
                                   registry=registry)  # fmt: skip
        self.unsettled = Gauge("framewatch_alert_unsettled_records",
                               "Score records read whose alerts are not all settled (their offsets wait)",
                               registry=registry)  # fmt: skip
        self.commit_failures = Counter("framewatch_alert_commit_failures_total",
                                       "Commits the group refused (a rebalance); the records are read again",
                                       registry=registry)  # fmt: skip
        self.revoked = Counter("framewatch_alert_partitions_revoked_total", "Partitions taken away by rebalances",
                               registry=registry)  # fmt: skip
        self.assigned = Gauge("framewatch_alert_partitions_assigned", "Score partitions this alerter reads",
                              registry=registry)  # fmt: skip
        self.start_skipped = Counter("framewatch_alert_start_skipped_total",
                                     "Retained scores published before the alerter started, skipped on partitions "
                                     "without a committed offset", registry=registry)  # fmt: skip
        self.incident_events = Counter("framewatch_incident_events_total", "Incident events (open, update, close)",
                                       ["state"], registry=registry)  # fmt: skip
        for state in ("open", "update", "close"):
            self.incident_events.labels(state)
        for outcome in OUTCOMES:
            self.records.labels(outcome)
        for sink in [*sinks, "incidents"]:
            self.delivered.labels(sink)
            self.retries.labels(sink)
            for reason in REASONS:
                self.dead_lettered.labels(sink, reason)
