"""The review page's HTTP edge (stdlib http.server; loopback by default).

GET  /               recent anomalies per source, with the answers so far
GET  /frame/ID       the frame's image bytes, fetched from the frames topic by its coordinates
POST /mark           frame_id, label=normal|confirmed ("normal" publishes a new index version)
POST /reviewer       name: remembered in a cookie; answers are signed with it (else the client address)
GET  /healthz        ok
"""

from __future__ import annotations

import http.cookies
import logging
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

from review import pages
from review.answers import Answers
from review.feed import RecentAnomalies
from review.frames import FrameFetcher
from review.marking import Marker
from wire.errors import FramewatchError

log = logging.getLogger(__name__)
COOKIE = "fw_reviewer"


class ReviewApp:
    """What the handler needs; one per server."""

    def __init__(
        self, feed: RecentAnomalies, fetcher: FrameFetcher, marker: Marker, answers: Answers
    ) -> None:
        self.feed, self.fetcher, self.marker, self.answers = feed, fetcher, marker, answers

    def render(self, reviewer: str, flash: str, error: bool) -> str:
        by_source = self.feed.by_source()
        names = {r.index_name for recs in by_source.values() for r in recs}
        answers: dict[str, dict[str, Any]] = {}
        for name in sorted(names):
            answers.update(self.answers.all(name))
        return pages.page(by_source, answers, reviewer, flash, error)

    def mark(self, frame_id: str, label: str, by: str) -> str:
        """Record the answer; returns the message shown on the page. Raises FramewatchError."""
        record = self.feed.get(frame_id)
        if record is None:
            raise FramewatchError(f"frame {frame_id} is not among the recent anomalies")
        if label == "confirmed":
            self.marker.confirm(record, by)
            return f"frame {frame_id} confirmed as an anomaly by {by}"
        if label != "normal":
            raise FramewatchError(f"unknown answer {label!r}")
        meta = self.marker.mark_normal([record], by)
        thr = f"{meta.threshold:.4g}" if meta.threshold is not None else "-"
        return (f"frame {frame_id} marked normal by {by}: index {meta.name} version {meta.version} is active "
                f"({meta.n_vectors} vectors, threshold {thr})")  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    app: ReviewApp  # set on the subclass made per server
    server_version = "framewatch-review"

    def log_message(self, fmt: str, *args: Any) -> None:
        log.debug("%s " + fmt, self.address_string(), *args)

    def _reviewer(self) -> str:
        jar = http.cookies.SimpleCookie(self.headers.get("Cookie", ""))
        name = urllib.parse.unquote(jar[COOKIE].value) if COOKIE in jar else ""
        return name or self.client_address[0]

    def _send(self, status: int, body: bytes, ctype: str, headers: Optional[dict[str, str]] = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(
        self, msg: str = "", error: bool = False, anchor: str = "", headers: Optional[dict[str, str]] = None
    ) -> None:
        query = urllib.parse.urlencode({"err" if error else "msg": msg}) if msg else ""
        location = "/" + (f"?{query}" if query else "") + (f"#{urllib.parse.quote(anchor)}" if anchor else "")
        self._send(HTTPStatus.SEE_OTHER, b"", "text/plain", {"Location": location, **(headers or {})})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain")
        elif url.path == "/":
            q = urllib.parse.parse_qs(url.query)
            flash, error = (q["err"][0], True) if "err" in q else (q.get("msg", [""])[0], False)
            body = self.app.render(self._reviewer(), flash, error).encode()
            self._send(HTTPStatus.OK, body, "text/html; charset=utf-8")
        elif url.path.startswith("/frame/"):
            self._frame(urllib.parse.unquote(url.path[len("/frame/") :]))
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

    def _frame(self, frame_id: str) -> None:
        record = self.app.feed.get(frame_id)
        if record is None:
            self._send(HTTPStatus.NOT_FOUND, b"unknown frame\n", "text/plain")
            return
        try:
            frame = self.app.fetcher.fetch(record.frame_topic, record.frame_partition, record.frame_offset)
        except FramewatchError as e:
            self._send(HTTPStatus.GONE, f"{e}\n".encode(), "text/plain")
            return
        self._send(HTTPStatus.OK, frame.image, frame.content_type or "image/jpeg")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        form = {
            k: v[0] for k, v in urllib.parse.parse_qs(self.rfile.read(min(length, 65536)).decode()).items()
        }
        path = urllib.parse.urlsplit(self.path).path
        if path == "/reviewer":
            name = form.get("name", "").strip()[:64]
            cookie = f"{COOKIE}={urllib.parse.quote(name)}; Path=/; SameSite=Strict"
            self._redirect(
                f"answers are now signed {name or 'with your address'}", headers={"Set-Cookie": cookie}
            )
        elif path == "/mark":
            frame_id = form.get("frame_id", "")
            try:
                msg = self.app.mark(frame_id, form.get("label", ""), self._reviewer())
            except FramewatchError as e:
                log.warning("answer for %s failed: %s", frame_id, e)
                self._redirect(str(e), error=True, anchor=frame_id)
                return
            log.info("%s", msg)
            self._redirect(msg, anchor=frame_id)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")


class ReviewServer:
    """Serves ``app`` on host:port (port 0 picks a free one) from a background thread."""

    def __init__(self, app: ReviewApp, host: str = "127.0.0.1", port: int = 8321) -> None:
        handler = type("Handler", (_Handler,), {"app": app})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="review-http", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "ReviewServer":
        self._thread.start()
        return self

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(5)
