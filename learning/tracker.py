"""Which cameras ``framewatch learn`` is learning, and when one has been seen enough to fit: pure logic.

The service feeds every frame it consumes (source, partition, offset, Kafka
timestamp) to ``CameraTracker.observe``. A camera is learned when:

- its source matches one of the ``--match`` patterns (shell-style, as ``--route``);
- the index its name template gives (``{source}`` by default) has no version
  in Redis when the camera is first seen (``has_index``, asked once per camera,
  and again just before fitting);
- it has been seen for ``--frames N`` frames spanning at least ``--min-span``,
  measured on the frames' own Kafka timestamps (not on this process's clock, so
  a camera whose history is retained is learned from that history at once);
- its partition is caught up (the service has read it to its end), so the fit
  sees the camera's recent frames, not only the oldest retained ones.

What is kept per camera is where its frames are (offset and timestamp), never
their bytes: the fit fetches the picked frames back by offset
(``framewatch.stream_frames.sample_located``). The list is thinned (every other
entry dropped, and from then on one new frame in two kept) whenever it reaches
``keep`` entries, so memory is bounded and the entries stay spread evenly over
the period; ``seen`` counts every frame.

Restarts: ``watermark`` is, per partition, the first offset of the cameras
still learning there. The service never commits past it, so a restarted
service reads those cameras' frames again, while a camera that has an index
(fitted by us or anyone) is skipped when first seen. A camera not seen for
``forget_after_s`` (by the injected clock) is forgotten and stops holding the
watermark back. A failed fit starts the camera over on later frames, not
before ``retry_after_s``.
"""

from __future__ import annotations

import fnmatch
import time
from array import array
from dataclasses import dataclass, field
from typing import Callable, Iterable, Optional

LEARNING, FITTING, FITTED, FAILED, INDEXED = "learning", "fitting", "fitted", "failed", "indexed"
STATES = (LEARNING, FITTING, FITTED, FAILED, INDEXED)  # INDEXED: had an index already, left alone
_OPEN = (LEARNING, FITTING, FAILED)  # still to be fitted: these hold the watermark


class PolicyError(ValueError):
    """A learn policy that cannot work (no pattern, a template without ``{source}``...)."""


@dataclass(frozen=True)
class LearnPolicy:
    match: tuple[str, ...]
    name_template: str = "{source}"
    frames: int = 500
    min_span_s: float = 1800.0
    keep: int = 2000  # located frames held per camera at most (thinned beyond)
    retry_after_s: float = 600.0
    forget_after_s: float = 86400.0

    def __post_init__(self) -> None:
        if not self.match or not all(p.strip() for p in self.match):
            raise PolicyError("give at least one --match pattern (e.g. 'cam-*')")
        if "{source}" not in self.name_template:
            raise PolicyError(f"--name {self.name_template!r} must contain {{source}}: one index per camera")
        if self.frames < 2 or self.keep < 2:
            raise PolicyError("--frames must be at least 2")

    def matches(self, source: str) -> bool:
        return any(fnmatch.fnmatchcase(source, p) for p in self.match)

    def index_for(self, source: str) -> str:
        return self.name_template.replace("{source}", source)


@dataclass
class Camera:
    """One camera being learned (or left alone), and where its frames are."""

    source: str
    index: str
    partition: int
    state: str = LEARNING
    seen: int = 0
    first_offset: int = -1
    first_ms: int = 0
    last_ms: int = 0
    last_seen_at: float = 0.0  # by the clock: when a frame of it was last consumed
    offsets: array = field(default_factory=lambda: array("q"))
    times_ms: array = field(default_factory=lambda: array("q"))
    stride: int = 1  # one frame in ``stride`` is kept (doubles at each thinning)
    version: Optional[int] = None
    error: str = ""
    not_before: float = 0.0  # a failed camera is fitted again no earlier than this (clock)

    @property
    def span_s(self) -> float:
        return max(0, self.last_ms - self.first_ms) / 1000

    def located(self) -> list[tuple[int, int]]:
        """(offset, timestamp ms) of the frames kept, oldest first."""
        return list(zip(self.offsets, self.times_ms))

    def restart(self) -> None:
        """Forget the frames seen: learn again from the next one."""
        self.seen, self.first_offset, self.first_ms, self.last_ms, self.stride = 0, -1, 0, 0, 1
        self.offsets, self.times_ms = array("q"), array("q")

    def record(self) -> dict[str, object]:
        """What Redis keeps about it, for ``framewatch status`` (JSON)."""
        return {"index": self.index, "state": self.state, "frames": self.seen, "span_s": round(self.span_s, 1),
                "partition": self.partition, "version": self.version, "error": self.error,
                "first_offset": self.first_offset}  # fmt: skip


class CameraTracker:
    """``has_index(name)`` asks Redis whether an index has any version; ``clock`` is seconds (time.time)."""

    def __init__(
        self,
        policy: LearnPolicy,
        has_index: Callable[[str], bool],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.policy, self.has_index, self.clock = policy, has_index, clock
        self.cameras: dict[str, Camera] = {}
        self.ignored: set[str] = set()  # sources no pattern matches
        self.dirty: set[str] = set()  # cameras whose record changed since ``take_changed``

    def observe(self, source: str, partition: int, offset: int, ts_ms: int) -> None:
        """One consumed frame of ``source``."""
        if source in self.ignored:
            return
        cam = self.cameras.get(source)
        if cam is None:
            if not self.policy.matches(source):
                self.ignored.add(source)
                return
            cam = self._first_sight(source, partition)
        cam.last_seen_at = self.clock()
        if cam.state not in (LEARNING, FAILED):
            return
        if cam.first_offset < 0:
            cam.first_offset, cam.first_ms = offset, ts_ms
        cam.seen += 1
        cam.first_ms, cam.last_ms = min(cam.first_ms, ts_ms), max(cam.last_ms, ts_ms)
        if (cam.seen - 1) % cam.stride == 0:
            cam.offsets.append(offset)
            cam.times_ms.append(ts_ms)
        if len(cam.offsets) >= self.policy.keep:
            cam.offsets, cam.times_ms, cam.stride = cam.offsets[::2], cam.times_ms[::2], cam.stride * 2

    def _first_sight(self, source: str, partition: int) -> Camera:
        name = self.policy.index_for(source)
        cam = Camera(source, name, partition, state=INDEXED if self.has_index(name) else LEARNING)
        self.cameras[source] = cam
        if cam.state == LEARNING:
            self.dirty.add(source)
        return cam

    def enough(self, cam: Camera) -> bool:
        """Seen ``frames`` frames over ``min_span_s``, and (failed before) its retry time has come."""
        return (
            cam.state in (LEARNING, FAILED)
            and cam.seen >= self.policy.frames
            and cam.span_s >= self.policy.min_span_s
            and self.clock() >= cam.not_before
        )

    def due(self, caught_up: Callable[[int], bool] = lambda partition: True) -> list[Camera]:
        """Cameras to fit now, longest-waiting first."""
        ready = [c for c in self.cameras.values() if self.enough(c) and caught_up(c.partition)]
        return sorted(ready, key=lambda c: c.first_ms)

    def start_fit(self, cam: Camera) -> bool:
        """Mark ``cam`` as being fitted; False (and left alone from now on) when its index appeared meanwhile."""
        if self.has_index(cam.index):
            cam.state = INDEXED
        else:
            cam.state = FITTING
        self.dirty.add(cam.source)
        return cam.state == FITTING

    def fitted(self, cam: Camera, version: int) -> None:
        cam.state, cam.version, cam.error = FITTED, version, ""
        cam.offsets, cam.times_ms = array("q"), array("q")
        self.dirty.add(cam.source)

    def failed(self, cam: Camera, error: str) -> None:
        """The fit failed: learn again from later frames, no earlier than ``retry_after_s`` from now."""
        cam.state, cam.error = FAILED, error
        cam.not_before = self.clock() + self.policy.retry_after_s
        cam.restart()
        self.dirty.add(cam.source)

    def forget_idle(self) -> list[str]:
        """Drop cameras still to be fitted that have sent nothing for ``forget_after_s``; their names."""
        cutoff = self.clock() - self.policy.forget_after_s
        gone = [
            s for s, c in self.cameras.items() if c.state in (LEARNING, FAILED) and c.last_seen_at < cutoff
        ]
        for source in gone:
            del self.cameras[source]
        return gone

    def revoke(self, partitions: Iterable[int]) -> None:
        """Partitions taken by another member: their cameras are its to learn now (a fit in flight ends)."""
        lost = set(partitions)
        for source in [s for s, c in self.cameras.items() if c.partition in lost and c.state != FITTING]:
            del self.cameras[source]
        self.ignored.clear()

    def watermark(self) -> dict[int, int]:
        """Per partition, the first offset of a camera still to be fitted there: commit no further."""
        marks: dict[int, int] = {}
        for c in self.cameras.values():
            if c.state in _OPEN and c.first_offset >= 0:
                marks[c.partition] = min(marks.get(c.partition, c.first_offset), c.first_offset)
        return marks

    def counts(self) -> dict[str, int]:
        """Cameras per state (every state, zeros included)."""
        out = dict.fromkeys(STATES, 0)
        for c in list(self.cameras.values()):  # list(): a scrape reads this from another thread
            out[c.state] += 1
        return out

    def take_changed(self, progress: bool = False) -> dict[str, dict[str, object]]:
        """Records of the cameras whose state changed (``progress``: and of every camera still learning)."""
        names = set(self.dirty)
        if progress:
            names |= {s for s, c in self.cameras.items() if c.state in (LEARNING, FAILED)}
        self.dirty.clear()
        return {s: self.cameras[s].record() for s in names if s in self.cameras}
