"""Per-source routing: which index scores which camera.

Rules are ``PATTERN=INDEX`` (shell-style patterns, first match wins), with a
default index for every source no rule matches. INDEX may be a template that
names the index after the camera: ``cam-*={source}`` scores camera ``cam-7``
with the index ``cam-7`` (``cam-*=site1-{source}``: ``site1-cam-7``). Such
per-camera indexes are loaded on a camera's first frame and held under a
memory budget (worker/camera_indexes.py); a camera whose own index does not
exist is scored by the default index, and its score record says so.
"""

from __future__ import annotations

import fnmatch
import string
from dataclasses import dataclass

from wire.errors import FramewatchError

PLACEHOLDER = "{source}"


class RouteError(FramewatchError):
    """A --route rule that is not PATTERN=INDEX."""


@dataclass(frozen=True)
class Route:
    """Where one source's frames go: ``name`` is the index; ``per_camera`` when a template named it after the
    source (then it may not exist, and the default index scores the frame instead)."""

    name: str
    per_camera: bool = False


def check_template(index: str) -> None:
    """Refuse an INDEX with placeholders other than ``{source}`` or stray braces.

    :raises RouteError: e.g. ``{camera}`` or ``cam-{``."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(index) if f is not None]
    except ValueError as e:
        raise RouteError(f"route index {index!r}: {e} (the one placeholder is {PLACEHOLDER})") from e
    unknown = [f for f in fields if f != "source"]
    if unknown:
        raise RouteError(f"route index {index!r}: unknown placeholder {{{unknown[0]}}}; the one placeholder is "
                         f"{PLACEHOLDER} (the camera's name: 'cam-*={{source}}')")  # fmt: skip


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
                raise RouteError(f"route {rule!r} is not PATTERN=INDEX (e.g. 'dock-*=dock' or 'cam-*={{source}}')")
            check_template(name.strip())
            parsed.append((pattern.strip(), name.strip()))
        return cls(default, tuple(parsed))

    def route(self, source: str) -> Route:
        for pattern, name in self.rules:
            if fnmatch.fnmatchcase(source, pattern):
                if PLACEHOLDER in name:
                    return Route(name.replace(PLACEHOLDER, source), per_camera=True)
                return Route(name)
        return Route(self.default)

    def index_for(self, source: str) -> str:
        return self.route(source).name

    def names(self) -> list[str]:
        """The indexes named outright (the default and fixed routes): loaded at start, needed to be ready.
        Per-camera (template) routes are not among them."""
        return sorted({self.default, *(name for _, name in self.rules if PLACEHOLDER not in name)})

    @property
    def per_camera(self) -> bool:
        """True when some rule names indexes after cameras."""
        return any(PLACEHOLDER in name for _, name in self.rules)


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
