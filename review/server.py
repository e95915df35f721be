"""The review page's server: waitress (a maintained, threaded WSGI server) serving review/web.py.

waitress reads each request in full on its event loop before a worker thread
sees it, so a slow client holds a socket, not a thread; it refuses a
Content-Length that is not digits (400) or over ``max_body`` (413) before
reading the body, drops headers whose names hold an underscore (no
``X_Forwarded_Email`` standing in for the proxy's header), and closes a
connection idle for ``idle_timeout_s``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import waitress

from review.app import ReviewApp
from review.web import ReviewWeb, WebConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HttpLimits:
    max_body: int = 64 * 1024  # the largest form is a frame id, a label and a token
    max_header: int = 16 * 1024
    idle_timeout_s: int = 30  # a connection silent this long is closed (checked every sweep_s)
    sweep_s: int = 5
    connections: int = 100
    threads: int = 4  # marking embeds a frame; more threads would only queue on the marking lock


class ReviewServer:
    """Serves ``app`` on host:port (port 0 picks a free one) from a background thread."""

    def __init__(self, app: ReviewApp, config: WebConfig, host: str = "127.0.0.1", port: int = 8321,
                 limits: HttpLimits = HttpLimits()) -> None:  # fmt: skip
        host = "127.0.0.1" if host == "localhost" else host  # one socket (waitress would listen on ::1 too)
        hosts = config.hosts if host in ("0.0.0.0", "::", "") else (*config.hosts, host)
        self.web = ReviewWeb(app, WebConfig(**{**vars(config), "hosts": hosts}))
        self._map: dict[Any, Any] = {}  # waitress's socket map: ours, so close() can empty it
        self.httpd = waitress.create_server(
            self.web, map=self._map, host=host, port=port, threads=limits.threads, ident="framewatch-review",
            max_request_body_size=limits.max_body, max_request_header_size=limits.max_header,
            channel_timeout=limits.idle_timeout_s, cleanup_interval=limits.sweep_s,
            connection_limit=limits.connections, clear_untrusted_proxy_headers=True,
        )  # fmt: skip
        self._thread = threading.Thread(target=self.httpd.run, name="review-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.effective_host, self.httpd.effective_port
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"

    def start(self) -> "ReviewServer":
        self._thread.start()
        return self

    def close(self) -> None:
        """Close every socket from the server's own loop (its loop ends when none is left), then the workers."""

        def close_all() -> None:
            for dispatcher in list(self._map.values()):
                dispatcher.close()

        if self._thread.is_alive():
            self.httpd.trigger.pull_trigger(close_all)
            self._thread.join(5)
        else:
            close_all()
        self.httpd.task_dispatcher.shutdown(timeout=5)
