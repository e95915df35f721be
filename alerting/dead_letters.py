"""An alert no sink could take, as a record of the alert dead-letter topic (default ``alerts.dlq``).

Key = the source, value = JSON: the alert as the sink would have had it, which
sink (and its redacted target), why it was given up on, how often it was tried
and the last error. Headers repeat the reason and the sink, so a consumer can
route without parsing. An operator replays them from there (README, *Alerts*).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from wire.errors import WireError
from wire.topics import H_ERROR_REASON

ALERT_DEAD_LETTER_SCHEMA = 1
H_SINK = "fw-sink"

# Why an alert was dead-lettered (the reason header; a metric label).
RETRY_TIME_EXCEEDED = "retry-time-exceeded"  # the sink kept failing for the whole --retry-for
REFUSED = "refused"  # the sink answered with an error that retrying cannot fix (a 4xx)
BACKLOG_FULL = "backlog-full"  # the sink already held --backlog alerts
REASONS = (RETRY_TIME_EXCEEDED, REFUSED, BACKLOG_FULL)


@dataclass(frozen=True)
class AlertDeadLetter:
    sink: str
    target: str  # redacted: scheme://host[:port]/***
    reason: str
    detail: str  # the last error, scrubbed of the URL's secrets
    attempts: int
    first_attempt_at: float  # seconds since the epoch (0 when never tried)
    dead_lettered_at: float
    source: str
    alert: dict[str, Any]

    def encode(self) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        body = {"schema": ALERT_DEAD_LETTER_SCHEMA, "type": "framewatch.alert-dead-letter", **asdict(self)}
        headers = [(H_ERROR_REASON, self.reason.encode()), (H_SINK, self.sink.encode())]
        return self.source.encode(), json.dumps(body).encode(), headers

    @classmethod
    def decode(cls, value: bytes) -> "AlertDeadLetter":
        """:raises WireError: not an alert dead letter this version can read."""
        try:
            body = json.loads(value)
            if not isinstance(body, dict) or int(body.get("schema", 0)) > ALERT_DEAD_LETTER_SCHEMA:
                raise ValueError("unsupported schema")
            return cls(**{k: body[k] for k in cls.__dataclass_fields__})
        except (ValueError, KeyError, TypeError) as e:
            raise WireError(f"not an alert dead letter: {e}") from e
