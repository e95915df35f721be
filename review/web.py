"""The review page's HTTP layer (a WSGI app on werkzeug): who is asking, may they, and is it really them.

GET  /               incidents (open first), then recent anomalies in no incident  (view)
GET  /frame/ID       the frame's bytes, typed by their magic number                 (view)
POST /mark           frame_id, label=normal|confirmed, csrf ("normal" publishes)   (mark)
POST /mark-incident  incident_id, label, csrf ("normal": a sample, one version)    (mark)
GET  /login?token=T  starts a session (token mode); POST /login with token= too
POST /logout         csrf; ends the session
GET  /healthz        ok (no login)

Every state-changing request must carry the session cookie (HttpOnly, SameSite=Strict),
the session's CSRF token, and an Origin (or, lacking one, a Referer) equal to the
page's own origin; the Host must be one the page is served as (DNS rebinding). A
request that fails is refused before anything runs: 401 without a session, 403
otherwise. Every response carries a CSP without scripts, nosniff and no framing.
"""

from __future__ import annotations

import hmac
import logging
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional

from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.wrappers import Request, Response

from review import pages
from review.access import AccessConfig, Identity, by_proxy, by_token, trusted_peer
from review.app import ReviewApp, UnknownFrame
from review.sessions import Session, Sessions
from wire.errors import FramewatchError

log = logging.getLogger(__name__)
LOOPBACK_NAMES = ("localhost", "127.0.0.1")
HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",  # not no-referrer: that makes a browser send "Origin: null" on our own POSTs
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class WebConfig:
    """``public_url``: the address people open (behind a proxy: the proxy's); its origin is the only one
    allowed to post, its host is accepted, and https makes the cookie Secure. ``hosts``: more accepted Host names."""

    access: AccessConfig
    public_url: str = ""
    hosts: tuple[str, ...] = ()
    max_form_bytes: int = 16 * 1024
    session_idle_s: float = 12 * 3600

    @property
    def origin(self) -> str:
        url = urllib.parse.urlsplit(self.public_url)
        return f"{url.scheme}://{url.netloc}" if url.scheme and url.netloc else ""

    @property
    def secure(self) -> bool:
        return self.public_url.startswith("https://")

    def trusted_hosts(self) -> list[str]:
        public = urllib.parse.urlsplit(self.public_url).hostname
        return sorted({*LOOPBACK_NAMES, *self.hosts, *([public] if public else [])})


@dataclass
class _Call:
    """One request as the handlers see it: the session (if any) and a cookie to set."""

    request: Request
    sid: str = ""
    session: Optional[Session] = None
    set_sid: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def _text(status: int, message: str) -> Response:
    return Response(message.rstrip("\n") + "\n", status=status, mimetype="text/plain")


class ReviewWeb:
    """The WSGI application: ``ReviewWeb(app, config)`` is what a server calls."""

    def __init__(self, app: ReviewApp, config: WebConfig, sessions: Optional[Sessions] = None) -> None:
        self.app, self.config = app, config
        self.sessions = sessions or Sessions(idle_s=config.session_idle_s)
        self.cookie = "__Host-fw_session" if config.secure else "fw_session"
        self._hosts = config.trusted_hosts()
        self._routes: dict[str, Callable[[_Call], Response]] = {
            "index": self._index, "frame": self._frame, "mark": self._mark, "mark-incident": self._mark_incident,
            "login": self._login, "logout": self._logout, "healthz": lambda call: _text(200, "ok"),
        }  # fmt: skip
        self.url_map = Map([
            Rule("/", endpoint="index", methods=["GET"]),
            Rule("/frame/<path:frame_id>", endpoint="frame", methods=["GET"]),
            Rule("/mark", endpoint="mark", methods=["POST"]),
            Rule("/mark-incident", endpoint="mark-incident", methods=["POST"]),
            Rule("/login", endpoint="login", methods=["GET", "POST"]),
            Rule("/logout", endpoint="logout", methods=["POST"]),
            Rule("/healthz", endpoint="healthz", methods=["GET"]),
        ])  # fmt: skip

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        request.trusted_hosts = self._hosts
        request.max_content_length = request.max_form_memory_size = self.config.max_form_bytes
        call = _Call(request)
        try:
            request.host  # noqa: B018 - raises SecurityError (400) for a Host the page is not served as
            endpoint, args = self.url_map.bind_to_environ(environ).match()
            response = self._routes[endpoint](call, **args)
        except HTTPException as e:
            response = _text(e.code or 500, f"{e.code} {e.name}")
        self._finish(call, response)
        return response(environ, start_response)

    def _finish(self, call: _Call, response: Response) -> None:
        for name, value in {**HEADERS, **call.extra}.items():
            response.headers.setdefault(name, value)
        response.headers.setdefault("Content-Security-Policy", pages.CSP)
        if call.set_sid:
            response.set_cookie(self.cookie, call.set_sid, httponly=True, samesite="Strict", secure=self.config.secure,
                                path="/")  # fmt: skip

    # -- who is asking ------------------------------------------------------------------------
    def _identify(self, call: _Call) -> Optional[Identity]:
        """The session's identity; behind a proxy, the proxy's user (a session is made or renewed to match)."""
        request = call.request
        call.sid = request.cookies.get(self.cookie, "")
        call.session = self.sessions.get(call.sid) if call.sid else None
        if self.config.access.mode != "proxy":
            return call.session.identity if call.session else None
        who = by_proxy(self.config.access, request.headers, request.remote_addr or "")
        if who is None:
            return None
        if call.session is None or call.session.identity != who:
            call.sid, call.session = self.sessions.create(who)
            call.set_sid = call.sid
        return who

    def _refusal(self, call: _Call) -> Response:
        if self.config.access.mode == "proxy":
            trusted = trusted_peer(self.config.access, call.request.remote_addr or "")
            user = call.request.headers.get(self.config.access.user_header) if trusted else None
            message = (f"{user} is not on this page's allow-list" if user else
                       "not signed in: open this page through the sign-in proxy")  # fmt: skip
            return _text(403 if user else 401, message)
        return _text(401, "not signed in: open the login URL `framewatch review` printed, or /login")

    def _same_origin(self, request: Request) -> bool:
        expected = self.config.origin or f"{request.scheme}://{request.host}"
        origin = request.headers.get("Origin")
        if origin is None:
            referer = urllib.parse.urlsplit(request.headers.get("Referer", ""))
            origin = f"{referer.scheme}://{referer.netloc}" if referer.netloc else ""
        return origin == expected

    def _form(self, request: Request) -> dict[str, str]:
        if request.mimetype != "application/x-www-form-urlencoded":
            return {}
        return {k: v for k, v in request.form.items()}

    def _guard_post(self, call: _Call) -> tuple[Optional[Identity], dict[str, str], Optional[Response]]:
        """Session, origin and CSRF token of a state-changing request; the response that refuses it, if any."""
        who = self._identify(call)
        if who is None or call.session is None:
            return None, {}, self._refusal(call)
        if not self._same_origin(call.request):
            log.warning("refused a %s from origin %r for %s", call.request.path,
                        call.request.headers.get("Origin"), who.name)  # fmt: skip
            return None, {}, _text(403, "refused: the request did not come from this page")
        form = self._form(call.request)
        if not hmac.compare_digest(form.get("csrf", "").encode(), call.session.csrf.encode()):
            log.warning("refused a %s without this session's CSRF token (%s)", call.request.path, who.name)
            return None, {}, _text(403, "refused: the form's CSRF token is missing or stale; reload the page")
        return who, form, None

    # -- the routes ---------------------------------------------------------------------------
    def _index(self, call: _Call) -> Response:
        who = self._identify(call)
        if who is None or call.session is None:
            if self.config.access.mode == "proxy":
                return self._refusal(call)
            return Response(
                pages.login_page("Log in with your access token.", True), 401, mimetype="text/html"
            )
        flash, error = call.session.pop_flash()
        body = self.app.render(who, call.session.csrf, flash, error)
        return Response(body, mimetype="text/html")

    def _frame(self, call: _Call, frame_id: str) -> Response:
        if self._identify(call) is None:
            return self._refusal(call)
        try:
            frame = self.app.frame(frame_id)
        except UnknownFrame as e:
            return _text(404, str(e))
        except FramewatchError as e:
            return _text(410, str(e))
        call.extra["Content-Security-Policy"] = "default-src 'none'; sandbox"
        return Response(frame.image, mimetype=frame.content_type)

    def _mark(self, call: _Call) -> Response:
        return self._answer(call, "frame_id", self.app.mark, "")

    def _mark_incident(self, call: _Call) -> Response:
        return self._answer(call, "incident_id", self.app.mark_incident, "incident-")

    def _answer(
        self, call: _Call, field: str, answer: Callable[[str, str, Identity], str], anchor: str
    ) -> Response:
        """A marker's answer for the item named by form ``field``, after every check; back to the page."""
        who, form, refused = self._guard_post(call)
        if refused is not None or who is None or call.session is None:
            return refused or _text(403, "refused")
        if not who.may_mark:
            return _text(403, f"{who.name} may view this page, not mark frames")
        item = form.get(field, "")
        try:
            msg, error = answer(item, form.get("label", ""), who), False
            log.info("%s", msg)
        except FramewatchError as e:
            log.warning("answer for %r by %s failed: %s", item[:80], who.name, e)
            msg, error = str(e), True
        call.session.flash = (msg, error)
        return self._see("/", anchor + item)

    def _login(self, call: _Call) -> Response:
        if self.config.access.mode == "proxy":
            return self._see("/")
        request = call.request
        if request.method == "POST" and not self._same_origin(request):
            return _text(403, "refused: the request did not come from this page")
        token = (self._form(request) if request.method == "POST" else request.args).get("token", "")
        who = by_token(self.config.access, token) if token else None
        if who is None:
            message = "That token is not valid." if token else "Log in with your access token."
            return Response(pages.login_page(message, True), 401, mimetype="text/html")
        if call.sid:
            self.sessions.end(call.sid)
        call.sid, call.session = self.sessions.create(who)
        call.set_sid = call.sid
        log.info("%s logged in (%s)", who.name, who.role)
        return self._see("/")

    def _logout(self, call: _Call) -> Response:
        _, _, refused = self._guard_post(call)
        if refused is not None:
            return refused
        self.sessions.end(call.sid)
        response = self._see("/login" if self.config.access.mode == "token" else "/")
        response.delete_cookie(self.cookie, path="/", secure=self.config.secure, samesite="Strict")
        return response

    def _see(self, path: str, anchor: str = "") -> Response:
        location = path + (f"#{urllib.parse.quote(anchor, safe='')}" if anchor else "")
        return Response("", status=303, headers={"Location": location}, mimetype="text/plain")
