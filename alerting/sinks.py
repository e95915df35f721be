"""Where alerts go: a generic JSON webhook, a Slack-compatible incoming webhook, stdout.

A sink's ``send`` returns on success and raises ``DeliveryFailed`` otherwise,
saying whether trying again could help (a 400 will not turn into a 200).
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import IO, Any, Optional, Protocol

from wire.errors import FramewatchError
from wire.records import ScoreRecord


class DeliveryFailed(FramewatchError):
    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


@dataclass(frozen=True)
class Alert:
    """What a person is told: one anomalous frame, plus how many the cooldown held back before it."""

    record: ScoreRecord
    suppressed: int = 0
    review_url: str = ""

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "type": "framewatch.anomaly",
            "frame_id": r.frame_id,
            "source": r.source,
            "sequence": r.sequence,
            "capture_time": r.capture_time,
            "score": r.score,
            "threshold": r.threshold,
            "index": r.index_name,
            "index_version": r.index_version,
            "origin": r.origin,
            "frame": {"topic": r.frame_topic, "partition": r.frame_partition, "offset": r.frame_offset},
            "hotspot": r.hotspot,
            "suppressed_since_last_alert": self.suppressed,
            "review_url": self.review_url or None,
        }

    def text(self) -> str:
        r = self.record
        thr = f"{r.threshold:.4g}" if r.threshold is not None else "-"
        more = f" ({self.suppressed} more held back by the cooldown)" if self.suppressed else ""
        link = f" Review: {self.review_url}" if self.review_url else ""
        return (f"Anomaly on {r.source}: frame {r.frame_id} scored {r.score:.4g} (threshold {thr}, "
                f"index {r.index_name} v{r.index_version}){more}.{link}")  # fmt: skip


class Sink(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...


def _post_json(url: str, body: dict[str, Any], timeout_s: float) -> None:
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()
    except urllib.error.HTTPError as e:
        retryable = e.code >= 500 or e.code in (408, 429)
        raise DeliveryFailed(f"HTTP {e.code} from {_host(url)}", retryable) from e
    except (urllib.error.URLError, OSError) as e:
        raise DeliveryFailed(f"{_host(url)} unreachable: {getattr(e, 'reason', e)}") from e


def _host(url: str) -> str:
    """The URL without its path (webhook paths often hold a secret token)."""
    parts = url.split("/")
    return "/".join(parts[:3]) if len(parts) > 2 else url


class WebhookSink:
    """POSTs ``Alert.to_dict()`` as JSON."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url, self.timeout_s = url, timeout_s

    def __repr__(self) -> str:
        return f"WebhookSink({_host(self.url)})"

    def send(self, alert: Alert) -> None:
        _post_json(self.url, alert.to_dict(), self.timeout_s)


class SlackSink:
    """POSTs a Slack incoming-webhook payload ({"text": ...}); Mattermost and Teams-compatible hooks accept it too."""

    name = "slack"

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url, self.timeout_s = url, timeout_s

    def __repr__(self) -> str:
        return f"SlackSink({_host(self.url)})"

    def send(self, alert: Alert) -> None:
        _post_json(self.url, {"text": alert.text()}, self.timeout_s)


class StdoutSink:
    """One JSON line per alert."""

    name = "stdout"

    def __init__(self, out: Optional[IO[str]] = None) -> None:
        self.out = out

    def send(self, alert: Alert) -> None:
        out = self.out or sys.stdout
        out.write(json.dumps(alert.to_dict()) + "\n")
        out.flush()
