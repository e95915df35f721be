"""Deliver an alert to every sink, retrying with exponential backoff; nothing dropped silently.

An alert that still fails after the last attempt is logged at ERROR with its
whole payload and counted in ``framewatch_alerts_failed_total``; the consumer
then moves on, so one dead sink cannot stop the others or the stream.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Sequence

from alerting.config import RetryConfig
from alerting.metrics import AlertMetrics
from alerting.sinks import Alert, DeliveryFailed, Sink

log = logging.getLogger(__name__)


class Interrupted(Exception):
    """Stop was requested while an alert was still being retried: it stays uncommitted and is re-read."""


class Deliverer:
    def __init__(
        self, sinks: Sequence[Sink], cfg: RetryConfig, metrics: AlertMetrics, stop: threading.Event
    ) -> None:
        self.sinks, self.cfg, self.metrics, self.stop = list(sinks), cfg, metrics, stop

    def deliver(self, alert: Alert) -> bool:
        """True when every sink took the alert; raises Interrupted if stopped mid-retry."""
        results = [self._deliver_one(sink, alert) for sink in self.sinks]
        return all(results)

    def _deliver_one(self, sink: Sink, alert: Alert) -> bool:
        backoff = self.cfg.first_backoff_s
        for attempt in range(1, self.cfg.attempts + 1):
            try:
                sink.send(alert)
                self.metrics.delivered.labels(sink.name).inc()
                return True
            except DeliveryFailed as e:
                if self.stop.is_set():
                    raise Interrupted(str(e)) from e
                if attempt == self.cfg.attempts or not e.retryable:
                    self.metrics.failed.labels(sink.name).inc()
                    log.error("alert for frame %s not delivered to %s after %d attempt(s): %s; payload %s",
                              alert.record.frame_id, sink.name, attempt, e, json.dumps(alert.to_dict()))  # fmt: skip
                    return False
                log.warning("alert for frame %s: %s failed (%s), retry %d in %.1fs",
                            alert.record.frame_id, sink.name, e, attempt, backoff)  # fmt: skip
                self.metrics.retries.labels(sink.name).inc()
                self.stop.wait(backoff)
                backoff = min(backoff * 2, self.cfg.max_backoff_s)
        return False
