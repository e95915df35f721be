"""Incidents: a source's anomalous frames grouped into one event people act on (pure: records and a clock in).

An incident opens on the first frame that passes the N-of-M rule (noise.py),
takes every anomalous frame of its source while it lasts, and closes after
``close_after_s`` without one: when a frame of the source arrives captured that
long after the last anomaly (stream time, so a replayed backlog groups as it
happened), or when nothing of the source has been read for that long (wall
time, so a camera that goes silent still closes).

Kinds (decided while the incident is open; the change is an ``update`` sent to
every sink):
- ``intrusion``: the default: something anomalous in part of the scene.
- ``scene-change``: the anomaly lasted ``scene_after_s`` with at least
  ``scene_share`` of the source's frames anomalous, and it covers the frame:
  on patch indexes the mean share of anomaly-map cells at or over the threshold
  is at least ``scene_coverage``; on global indexes (no map) the score is a step,
  a plateau whose spread (std / mean) is under ``scene_flatness``, where
  something passing by gives a bump. The camera was moved, covered, defocused or
  the lights changed: check the camera, or, if the change was intended, refit
  the index on frames captured since the incident's start.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Optional

from alerting.config import IncidentConfig
from alerting.noise import ALERT, COOLDOWN, DUPLICATE
from wire.anomaly_map import decode_map
from wire.errors import ScoreDecodeError
from wire.records import ScoreRecord

OPEN, UPDATE, CLOSE = "open", "update", "close"
INTRUSION, SCENE_CHANGE = "intrusion", "scene-change"
INCIDENT_SCHEMA = 1
ADVICE = {
    INTRUSION: "look at the peak frame",
    SCENE_CHANGE: "check the camera (moved, covered, out of focus, lights); if the change was intended, "
    "refit the index on frames captured since the incident started",
}


@dataclass
class Incident:
    id: str
    source: str
    kind: str
    start: float  # capture time of the opening frame (seconds since the epoch)
    end: float  # capture time of the last anomalous frame
    count: int  # anomalous frames
    frames: int  # all frames of the source read while open
    peak_score: float
    peak_frame: dict[str, Any]  # frame_id, score, topic, partition, offset, hotspot
    threshold: Optional[float]
    index: str
    opened_at: float  # wall time the alerter opened it
    closed_at: Optional[float] = None
    # running sums for the kind, kept in the published state so a restart keeps deciding the same way
    score_sum: float = 0.0
    score_sq: float = 0.0
    coverage_sum: float = 0.0
    coverage_n: int = 0
    seen_until: float = 0.0  # capture time of the last frame counted (frames re-read after a restart are not)
    last_seen: float = field(default=0.0, compare=False)  # wall time a frame of the source was last read
    last_update: float = field(default=0.0, compare=False)  # wall time of the last event
    restored: bool = field(default=False, compare=False)
    bridged: bool = field(default=False, compare=False)

    def public(self) -> dict[str, Any]:
        d = asdict(self)
        for internal in ("last_seen", "last_update", "restored", "bridged"):
            d.pop(internal)
        return d


@dataclass(frozen=True)
class IncidentEvent:
    """One message about an incident: to the sinks (as an alert) and to the incidents topic."""

    state: str  # open | update | close
    incident: dict[str, Any]
    notify: bool = True  # False: the incidents topic only (a routine update)
    review_url: str = ""

    @property
    def key(self) -> str:
        return str(self.incident["id"])

    @property
    def source(self) -> str:
        return str(self.incident["source"])

    def to_dict(self) -> dict[str, Any]:
        return {"type": "framewatch.incident", "schema": INCIDENT_SCHEMA, "state": self.state, **self.incident,
                "advice": ADVICE.get(self.incident["kind"], ""), "review_url": self.review_url or None}  # fmt: skip

    def text(self) -> str:
        i = self.incident
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(i["start"]))
        verb = {OPEN: "opened", UPDATE: "now", CLOSE: "closed"}[self.state]
        span = f", {i['end'] - i['start']:.0f}s" if self.state == CLOSE else ""
        link = f" Review: {self.review_url}" if self.review_url else ""
        return (f"Incident {i['id']} on {i['source']} {verb} ({i['kind']}, since {when} UTC{span}): "
                f"{i['count']} anomalous frame(s), peak {i['peak_score']:.4g} on frame {i['peak_frame']['frame_id']}. "
                f"Next: {ADVICE.get(i['kind'], '')}.{link}")  # fmt: skip


class IncidentTracker:
    def __init__(self, cfg: IncidentConfig, wall: Callable[[], float] = time.time) -> None:
        self.cfg, self.wall = cfg, wall
        self.open: dict[str, Incident] = {}

    def restore(self, events: Iterable[dict[str, Any]]) -> int:
        """Reopen (as they were) the incidents whose last event is not a close; returns how many."""
        last: dict[str, dict[str, Any]] = {}
        for e in events:
            last[str(e.get("source"))] = e
        now = self.wall()
        for source, e in last.items():
            if e.get("state") in (OPEN, UPDATE):
                fields = {k: e[k] for k in Incident.__dataclass_fields__ if k in e}
                self.open[source] = Incident(**fields, last_seen=now, last_update=now, restored=True)
        return len(self.open)

    def observe(self, record: ScoreRecord, outcome: str) -> list[IncidentEvent]:
        """The events one score record causes (``outcome``: what noise.py decided for it)."""
        if outcome == DUPLICATE:
            return []
        now, events = self.wall(), []
        inc = self.open.get(record.source)
        if inc is not None and inc.restored and not inc.bridged:
            # The first frame after a restart: frames read between the last published event and the last
            # commit left no trace, so the incident is taken to have lasted until now (never reopened as new).
            inc.bridged, inc.end = True, max(inc.end, record.capture_time)
        if inc is not None and record.capture_time - inc.end >= self.cfg.close_after_s:
            events.append(self._close(inc, now))
            inc = None
        if inc is not None:
            inc.last_seen = now
            if inc.restored and record.capture_time <= inc.seen_until:
                return events
            inc.frames += 1
            inc.seen_until = max(inc.seen_until, record.capture_time)
            if record.is_anomaly:
                events += self._grow(inc, record, now)
        elif record.is_anomaly and outcome in (ALERT, COOLDOWN):
            events.append(self._open(record, now))
        return events

    def checkpoint(self) -> list[IncidentEvent]:
        """An update of every open incident for the incidents topic only (on stop: what a restart rebuilds)."""
        return [IncidentEvent(UPDATE, inc.public(), notify=False) for inc in self.open.values()]

    def touch(self) -> None:
        """Restart every open incident's idle time (the consumer was not reading: a join, a rebalance)."""
        now = self.wall()
        for inc in self.open.values():
            inc.last_seen = now

    def tick(self) -> list[IncidentEvent]:
        """Close the incidents of sources that have sent nothing for ``close_after_s`` (wall time)."""
        now = self.wall()
        idle = [i for i in self.open.values() if now - i.last_seen >= self.cfg.close_after_s]
        return [self._close(i, now) for i in idle]

    def _open(self, r: ScoreRecord, now: float) -> IncidentEvent:
        inc = Incident(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"framewatch:{r.source}:{r.frame_id}")),
                       source=r.source, kind=INTRUSION, start=r.capture_time, end=r.capture_time, count=0, frames=1,
                       peak_score=r.score, peak_frame=_frame(r), threshold=r.threshold, index=r.index_name,
                       opened_at=now, seen_until=r.capture_time, last_seen=now, last_update=now)  # fmt: skip
        self._add(inc, r)
        self.open[r.source] = inc
        return IncidentEvent(OPEN, inc.public())

    def _grow(self, inc: Incident, r: ScoreRecord, now: float) -> list[IncidentEvent]:
        self._add(inc, r)
        if inc.kind == INTRUSION and self._scene_change(inc):
            inc.kind, inc.last_update = SCENE_CHANGE, now
            return [IncidentEvent(UPDATE, inc.public())]
        if self.cfg.update_every_s and now - inc.last_update >= self.cfg.update_every_s:
            inc.last_update = now
            return [IncidentEvent(UPDATE, inc.public(), notify=self.cfg.updates_to_sinks)]
        return []

    def _add(self, inc: Incident, r: ScoreRecord) -> None:
        inc.count += 1
        inc.end = max(inc.end, r.capture_time)
        inc.score_sum += r.score
        inc.score_sq += r.score * r.score
        if r.score > inc.peak_score:
            inc.peak_score, inc.peak_frame = r.score, _frame(r)
        cover = _coverage(r)
        if cover is not None:
            inc.coverage_sum += cover
            inc.coverage_n += 1

    def _scene_change(self, inc: Incident) -> bool:
        cfg = self.cfg
        if inc.end - inc.start < cfg.scene_after_s or inc.count < cfg.scene_share * inc.frames:
            return False
        if inc.coverage_n:
            return inc.coverage_sum / inc.coverage_n >= cfg.scene_coverage
        mean = inc.score_sum / inc.count
        spread = math.sqrt(max(0.0, inc.score_sq / inc.count - mean * mean))
        return mean > 0 and spread / mean < cfg.scene_flatness

    def _close(self, inc: Incident, now: float) -> IncidentEvent:
        del self.open[inc.source]
        inc.closed_at = now
        return IncidentEvent(CLOSE, inc.public())


def _frame(r: ScoreRecord) -> dict[str, Any]:
    return {"frame_id": r.frame_id, "score": r.score, "topic": r.frame_topic, "partition": r.frame_partition,
            "offset": r.frame_offset, "hotspot": r.hotspot}  # fmt: skip


def _coverage(r: ScoreRecord) -> Optional[float]:
    """Share of the anomaly map at or over the threshold (half the map's maximum without one); None: no map."""
    if not r.anomaly_map:
        return None
    try:
        cells = [v for row in decode_map(r.anomaly_map) for v in row]
    except ScoreDecodeError:
        return None
    if not cells:
        return None
    cut = r.threshold if r.threshold is not None else 0.5 * max(cells)
    return sum(v >= cut for v in cells) / len(cells)
