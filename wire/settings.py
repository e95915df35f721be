"""Connection settings for Kafka and Redis, passed into constructors.

Secrets (SASL password, Redis password in the URL) never appear in repr or
logs: use ``redacted()`` for anything printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Optional


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


_URL_PASSWORD = re.compile(r"(://[^:/@]*:)([^@]*)(@)")


@dataclass(frozen=True)
class RedisSettings:
    """How to reach Redis: a redis:// or rediss:// URL (password inside it is a secret)."""

    url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    key_prefix: str = "framewatch"
    ssl_ca_certs: Optional[str] = None

    def __repr__(self) -> str:
        return f"RedisSettings(url={self.redacted()!r}, key_prefix={self.key_prefix!r})"

    def redacted(self) -> str:
        return _URL_PASSWORD.sub(r"\1***\3", self.url)
