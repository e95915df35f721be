"""Per-source routing: which index scores which camera.

Rules are ``PATTERN=INDEX`` (shell-style patterns, first match wins), with a
default index for every source no rule matches.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass


@dataclass(frozen=True)
class Routing:
    default: str
    rules: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, default: str, rules: list[str] | tuple[str, ...] = ()) -> "Routing":
        parsed = []
        for rule in rules:
            pattern, sep, name = rule.partition("=")
            if not sep or not pattern or not name:
                raise ValueError(f"route {rule!r} is not PATTERN=INDEX")
            parsed.append((pattern.strip(), name.strip()))
        return cls(default, tuple(parsed))

    def index_for(self, source: str) -> str:
        for pattern, name in self.rules:
            if fnmatch.fnmatchcase(source, pattern):
                return name
        return self.default

    def names(self) -> list[str]:
        return sorted({self.default, *(name for _, name in self.rules)})
