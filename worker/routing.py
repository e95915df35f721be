"""Per-source routing: which index scores which camera.

Rules are ``PATTERN=INDEX`` (shell-style patterns, first match wins), with a
default index for every source no rule matches.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from wire.errors import FramewatchError


class RouteError(FramewatchError):
    """A --route rule that is not PATTERN=INDEX."""


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
                raise RouteError(f"route {rule!r} is not PATTERN=INDEX (e.g. 'dock-*=dock')")
            parsed.append((pattern.strip(), name.strip()))
        return cls(default, tuple(parsed))

    def index_for(self, source: str) -> str:
        for pattern, name in self.rules:
            if fnmatch.fnmatchcase(source, pattern):
                return name
        return self.default

    def names(self) -> list[str]:
        return sorted({self.default, *(name for _, name in self.rules)})


def check_one_embedder(specs: dict[str, tuple[str, str]]) -> None:
    """Refuse routes whose indexes were built with different embedders (one worker embeds one way).

    ``specs``: index name -> (embedder label, spec fingerprint), for the routed indexes that exist.
    """
    if len({fingerprint for _, fingerprint in specs.values()}) <= 1:
        return
    used = ", ".join(f"{name}: {label}" for name, (label, _) in sorted(specs.items()))
    raise RouteError(
        f"routed indexes use different embedders ({used}); a worker embeds each frame once, with one "
        "backbone: run one worker group per backbone (each with its own --group and --route rules)"
    )
