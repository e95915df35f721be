"""Who may use the review page, and for what: authentication (a token, or a trusted proxy's user header) and roles.

Marking a frame "normal" changes what every camera considers normal, so the
page never takes a reviewer's name from the client: the identity is what
authenticated the request. Two ways, one per deployment:

- ``token``: each person holds a secret token (a tokens file: ``NAME ROLE TOKEN``
  per line); opening ``/login?token=...`` starts a session. Without a file,
  ``framewatch review`` makes one marker token for whoever started it and prints
  the login URL, as Jupyter does.
- ``proxy``: an authenticating reverse proxy (oauth2-proxy) sets a user header
  (``X-Forwarded-Email`` by default); the header is believed only on connections
  from the proxy's addresses, and only for names on the allow-lists.

Pure: plain values in, an ``Identity`` (or None) out; nothing here reads the environment.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

from wire.errors import FramewatchError

VIEW, MARK = "view", "mark"
ROLES = (VIEW, MARK)
LOOPBACK = ("127.0.0.1/32", "::1/128")


class AccessConfigError(FramewatchError):
    """The review page's access settings cannot work (an unreadable tokens file, an unknown role...)."""


@dataclass(frozen=True)
class Identity:
    """An authenticated person: a name from their credential, and what they may do."""

    name: str
    role: str

    @property
    def may_mark(self) -> bool:
        return self.role == MARK


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Credential:
    """One token holder; only the token's sha256 is kept."""

    name: str
    role: str
    digest: bytes = field(repr=False)

    @classmethod
    def of(cls, name: str, role: str, token: str) -> "Credential":
        if role not in ROLES:
            raise AccessConfigError(f"role must be one of {ROLES}, not {role!r}")
        if len(token) < 16:
            raise AccessConfigError(f"the token for {name!r} is shorter than 16 characters")
        return cls(name, role, _digest(token))


@dataclass(frozen=True)
class AccessConfig:
    """How requests are authenticated. ``mode`` is "token" or "proxy"."""

    mode: str = "token"
    credentials: tuple[Credential, ...] = ()
    user_header: str = "X-Forwarded-Email"
    markers: frozenset[str] = frozenset()
    viewers: frozenset[str] = frozenset()
    trusted_proxies: tuple[str, ...] = LOOPBACK

    def __post_init__(self) -> None:
        if self.mode not in ("token", "proxy"):
            raise AccessConfigError(f"--auth must be token or proxy, not {self.mode!r}")
        if self.mode == "proxy" and not (self.markers or self.viewers):
            raise AccessConfigError("--auth proxy needs an allow-list: --markers and/or --viewers")
        try:
            [ipaddress.ip_network(n, strict=False) for n in self.trusted_proxies]
        except ValueError as e:
            raise AccessConfigError(f"--trusted-proxy: {e}") from e

    def describe(self) -> str:
        """One line for the start-up log (no secrets)."""
        if self.mode == "proxy":
            return (f"users from the {self.user_header} header set by a proxy at {', '.join(self.trusted_proxies)}; "
                    f"{len(self.markers)} may mark, {len(self.viewers)} may view")  # fmt: skip
        return f"{len(self.credentials)} token(s): " + ", ".join(
            f"{c.name} ({c.role})" for c in self.credentials
        )


def generated(name: str) -> tuple[AccessConfig, str]:
    """A config with one fresh marker token for ``name``, and the token (to print once)."""
    token = secrets.token_urlsafe(24)
    return AccessConfig(credentials=(Credential.of(name, MARK, token),)), token


def read_tokens(path: str) -> tuple[Credential, ...]:
    """A tokens file: ``NAME ROLE TOKEN`` per line (role: view or mark); blank lines and ``#`` comments skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise AccessConfigError(f"cannot read the tokens file {path}: {e.strerror}") from e
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 3:
            raise AccessConfigError(f"{path}:{n}: expected NAME ROLE TOKEN")
        out.append(Credential.of(*parts))
    if not out:
        raise AccessConfigError(f"the tokens file {path} holds no tokens")
    return tuple(out)


def by_token(config: AccessConfig, token: str) -> Optional[Identity]:
    """The holder of ``token``, compared in constant time against every credential."""
    digest, found = _digest(token), None
    for c in config.credentials:
        if hmac.compare_digest(digest, c.digest):
            found = Identity(c.name, c.role)
    return found


def by_proxy(config: AccessConfig, headers: Mapping[str, str], peer: str) -> Optional[Identity]:
    """The user a trusted proxy vouches for; None if the peer is not the proxy, the header is absent,
    or the user is on no allow-list (markers take precedence)."""
    if config.mode != "proxy" or not trusted_peer(config, peer):
        return None
    user = (headers.get(config.user_header) or "").strip()
    if not user or len(user) > 256 or not user.isprintable():
        return None
    if user in config.markers:
        return Identity(user, MARK)
    if user in config.viewers:
        return Identity(user, VIEW)
    return None


def trusted_peer(config: AccessConfig, peer: str) -> bool:
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in config.trusted_proxies)
