"""A webhook URL as a secret: where requests go, the basic-auth header from its userinfo, and what may be logged.

Webhook URLs carry credentials in every part: ``user:pass@`` userinfo, a token
in the path (Slack's ``/services/T.../B.../XXXX``), ``?token=`` in the query,
with or without a path. Only ``redacted()`` (scheme, host and port) is ever
logged, and ``scrub()`` cleans any text (a client library's error) of every
secret part before it reaches a log line or a dead letter. Userinfo is sent as
an ``Authorization: Basic`` header, never in the request URL, so such a URL
delivers instead of failing on a "port" that is really a password.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Optional
from urllib.parse import unquote, urlsplit, urlunsplit

from wire.errors import FramewatchError


class BadEndpoint(FramewatchError):
    """A webhook URL that cannot be used (its text is never part of the message)."""


@dataclass(frozen=True)
class Endpoint:
    url: str = field(repr=False)
    request_url: str = field(repr=False)  # the URL without its userinfo
    authorization: Optional[str] = field(default=None, repr=False)  # "Basic ..." from the userinfo
    shown: str = ""  # scheme://host[:port], plus "/***" when the URL has more

    @classmethod
    def parse(cls, url: str) -> "Endpoint":
        """:raises BadEndpoint: not an http(s) URL with a host (the message never repeats the URL)."""
        try:
            parts = urlsplit(url.strip())
            host, port = parts.hostname, parts.port
        except ValueError:
            raise BadEndpoint("a webhook URL is malformed (not shown: it may hold a secret)") from None
        if parts.scheme not in ("http", "https") or not host:
            raise BadEndpoint(
                "a webhook URL must be http:// or https:// with a host (not shown: it may hold a secret)"
            )
        netloc = f"[{host}]" if ":" in host else host
        if port is not None:
            netloc += f":{port}"
        auth = None
        if parts.username is not None or parts.password is not None:
            pair = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
            auth = "Basic " + base64.b64encode(pair.encode()).decode("ascii")
        request_url = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        more = parts.path not in ("", "/") or bool(parts.query) or bool(parts.fragment)
        shown = f"{parts.scheme}://{netloc}" + ("/***" if more else "")
        return cls(url=url, request_url=request_url, authorization=auth, shown=shown)

    def redacted(self) -> str:
        return self.shown

    def scrub(self, text: str) -> str:
        """``text`` with the URL and each secret part of it (raw and percent-decoded) replaced by ``***``."""
        for secret in self._secrets():
            text = text.replace(secret, "***")
        return text

    def _secrets(self) -> list[str]:
        parts = urlsplit(self.url.strip())
        found = [self.url, self.request_url, parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""]
        found += [parts.password or "", parts.username or "", parts.query, parts.fragment]
        if parts.path not in ("", "/"):
            found += [parts.path, parts.path.strip("/")] + [s for s in parts.path.split("/") if len(s) >= 6]
        for pair in parts.query.split("&"):
            found.append(pair.partition("=")[2])
        if self.authorization:
            found.append(self.authorization.split(" ", 1)[1])
        values = {v for s in found if s and len(s) >= 3 for v in (s, unquote(s))}
        return sorted(values, key=len, reverse=True)
