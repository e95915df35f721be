"""Where alerts go: a generic JSON webhook, a Slack-compatible incoming webhook, stdout.

A sink's ``send`` returns on success and raises ``DeliveryFailed`` otherwise,
saying whether trying again could help (a 400 will not turn into a 200). Error
messages name the endpoint only by ``Endpoint.redacted()`` and are scrubbed of
every secret part of its URL. Redirects are refused: following one would carry
the basic-auth header to wherever the redirect points.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import IO, Any, Optional, Protocol

from alerting.endpoints import Endpoint
from wire.errors import FramewatchError
from wire.records import ScoreRecord

MAX_RESPONSE_BYTES = 64 * 1024  # a webhook's answer is read this far, then dropped


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

    @property
    def key(self) -> str:
        """What an alert is about, for logs and dead letters (the frame id)."""
        return self.record.frame_id

    @property
    def source(self) -> str:
        return self.record.source

    def text(self) -> str:
        r = self.record
        thr = f"{r.threshold:.4g}" if r.threshold is not None else "-"
        more = f" ({self.suppressed} more held back by the cooldown)" if self.suppressed else ""
        link = f" Review: {self.review_url}" if self.review_url else ""
        return (f"Anomaly on {r.source}: frame {r.frame_id} scored {r.score:.4g} (threshold {thr}, "
                f"index {r.index_name} v{r.index_version}){more}.{link}")  # fmt: skip


def slack_escape(text: str) -> str:
    """Slack's message escaping: ``&``, ``<``, ``>`` as entities, so ``<!channel>`` or ``<url|label>`` in a
    source or frame id (data a camera publisher chooses) arrive as literal text, never as a mention or link."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Sink(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:  # noqa: ANN401
        return None  # urllib then raises HTTPError with the 3xx code


_OPENER = urllib.request.build_opener(_NoRedirect)


def post_json(endpoint: Endpoint, body: dict[str, Any], timeout_s: float) -> None:
    """:raises DeliveryFailed: anything but a 2xx answer (retryable unless a 4xx other than 408/429)."""
    headers = {"Content-Type": "application/json", "User-Agent": "framewatch-alert"}
    if endpoint.authorization:
        headers["Authorization"] = endpoint.authorization
    req = urllib.request.Request(endpoint.request_url, data=json.dumps(body).encode(), method="POST",
                                 headers=headers)  # fmt: skip
    try:
        with _OPENER.open(req, timeout=timeout_s) as resp:
            resp.read(MAX_RESPONSE_BYTES)
    except urllib.error.HTTPError as e:
        e.close()
        retryable = e.code >= 500 or e.code in (408, 429)
        raise DeliveryFailed(f"HTTP {e.code} from {endpoint.redacted()}", retryable) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = endpoint.scrub(str(getattr(e, "reason", e)))
        raise DeliveryFailed(f"{endpoint.redacted()} unreachable: {type(e).__name__}: {reason}") from None


class WebhookSink:
    """POSTs ``Alert.to_dict()`` as JSON."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.endpoint, self.timeout_s = Endpoint.parse(url), timeout_s

    def __repr__(self) -> str:
        return f"WebhookSink({self.endpoint.redacted()})"

    def target(self) -> str:
        return self.endpoint.redacted()

    def send(self, alert: Alert) -> None:
        post_json(self.endpoint, alert.to_dict(), self.timeout_s)


class SlackSink:
    """POSTs a Slack incoming-webhook payload ({"text": ...}, escaped); Mattermost and Teams-compatible hooks accept it too."""

    name = "slack"

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.endpoint, self.timeout_s = Endpoint.parse(url), timeout_s

    def __repr__(self) -> str:
        return f"SlackSink({self.endpoint.redacted()})"

    def target(self) -> str:
        return self.endpoint.redacted()

    def send(self, alert: Alert) -> None:
        post_json(self.endpoint, {"text": slack_escape(alert.text())}, self.timeout_s)


class StdoutSink:
    """One JSON line per alert."""

    name = "stdout"

    def __init__(self, out: Optional[IO[str]] = None) -> None:
        self.out = out

    def __repr__(self) -> str:
        return "StdoutSink()"

    def target(self) -> str:
        return "stdout"

    def send(self, alert: Alert) -> None:
        out = self.out or sys.stdout
        try:
            out.write(json.dumps(alert.to_dict()) + "\n")
            out.flush()
        except (OSError, ValueError) as e:
            raise DeliveryFailed(f"stdout: {e}") from None
