"""Connection settings for Kafka and Redis, passed into constructors.

Secrets (SASL password, Redis password in the URL) never appear in repr or
logs: use ``redacted()`` for anything printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional

KAFKA_CLIENTS = ("kafka-python", "confluent")  # the worker's consumer client; the first is the default


@dataclass(frozen=True)
class KafkaSettings:
    """How to reach the Kafka cluster (kafka-python keyword names)."""

    bootstrap: str = "127.0.0.1:9092"
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: Optional[str] = None  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: Optional[str] = None
    sasl_password: Optional[str] = field(default=None, repr=False)
    ssl_cafile: Optional[str] = None
    ssl_certfile: Optional[str] = None
    ssl_keyfile: Optional[str] = None
    client_id: str = "framewatch"
    max_message_bytes: int = 20 * 1024 * 1024

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments common to kafka-python's producer, consumer and admin."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap.split(","),
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        if self.sasl_mechanism:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            if getattr(self, name):
                kw[name] = getattr(self, name)
        return kw

    def redacted(self) -> str:
        auth = f" sasl={self.sasl_mechanism} user={self.sasl_username}" if self.sasl_mechanism else ""
        return f"{self.bootstrap} ({self.security_protocol}{auth})"


_SECRET_QUERY = re.compile(r"([?&][^=&#]*(?:password|passwd|pwd|secret|token)[^=&#]*=)[^&#]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, wherever it is.

    Handles ``scheme://user:pass@host``, a password holding raw ``@`` or ``:``
    (everything up to the *last* ``@`` before the query is credentials), and
    ``?password=`` (or ``token``, ``secret``...) query parameters.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    query_at = rest.find("?")
    authority_end = len(rest) if query_at < 0 else query_at
    at = rest.rfind("@", 0, authority_end)
    if at >= 0:
        user, colon, _password = rest[:at].partition(":")
        rest = (f"{user}:***" if colon else "***") + rest[at:]
    return (scheme + sep if sep else "") + _SECRET_QUERY.sub(r"\1***", rest)


@dataclass(frozen=True)
class RedisSettings:
    """How to reach Redis: a redis:// or rediss:// URL (password inside it is a secret)."""

    url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    key_prefix: str = "framewatch"
    ssl_ca_certs: Optional[str] = None

    def __repr__(self) -> str:
        return f"RedisSettings(url={self.redacted()!r}, key_prefix={self.key_prefix!r})"

    def redacted(self) -> str:
        return redact_url(self.url)

    def scrub(self, text: str) -> str:
        """``text`` (e.g. a client library's error message) with the URL and its secrets redacted."""
        text = text.replace(self.url, self.redacted())
        for secret in _url_secrets(self.url):
            text = text.replace(secret, "***")
        return text


def _url_secrets(url: str) -> list[str]:
    """The password and secret query values in ``url``, raw and percent-decoded (longest first)."""
    from urllib.parse import unquote

    scheme, _, rest = url.partition("://")
    query_at = rest.find("?")
    authority_end = len(rest) if query_at < 0 else query_at
    found = []
    at = rest.rfind("@", 0, authority_end)
    if at >= 0 and ":" in rest[:at]:
        found.append(rest[:at].partition(":")[2])
    found += [m.group(0).split("=", 1)[1] for m in _SECRET_QUERY.finditer(rest)]
    secrets = {v for s in found if s for v in (s, unquote(s)) if len(v) >= 3}
    return sorted(secrets, key=len, reverse=True)
