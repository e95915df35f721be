"""Browser sessions: an unguessable id in a cookie -> who, their CSRF token, a one-shot flash message.

Held in memory (a restart logs everyone out, which is the safe direction), with
an idle expiry and a cap so that logins cannot grow the process without bound.
The CSRF token is per session and travels only in the page's forms: a page on
another origin can make the browser send the cookie, never read the token.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

from review.access import Identity


@dataclass
class Session:
    identity: Identity
    csrf: str
    seen: float
    flash: Optional[tuple[str, bool]] = field(default=None)

    def pop_flash(self) -> tuple[str, bool]:
        flash, self.flash = self.flash or ("", False), None
        return flash


class Sessions:
    def __init__(
        self,
        idle_s: float = 12 * 3600,
        max_sessions: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle_s, self.max_sessions, self.clock = idle_s, max_sessions, clock
        self._by_id: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()

    def create(self, identity: Identity) -> tuple[str, Session]:
        sid = secrets.token_urlsafe(32)
        session = Session(identity, secrets.token_urlsafe(32), self.clock())
        with self._lock:
            self._by_id[sid] = session
            while len(self._by_id) > self.max_sessions:
                self._by_id.popitem(last=False)  # the least recently used
        return sid, session

    def get(self, sid: str) -> Optional[Session]:
        now = self.clock()
        with self._lock:
            session = self._by_id.get(sid)
            if session is None:
                return None
            if now - session.seen > self.idle_s:
                del self._by_id[sid]
                return None
            session.seen = now
            self._by_id.move_to_end(sid)
            return session

    def end(self, sid: str) -> None:
        with self._lock:
            self._by_id.pop(sid, None)
