"""The incidents the review page lists: the alerter's events, last one per incident, open first (pure).

``framewatch alert`` publishes every incident event (open, update, close) to the
incidents topic, keyed by source (alerting/incidents.py). The page keeps the
last event of each incident, drops what is neither open nor recently closed,
and decides which score records belong to an incident (its source and index,
captured between its start and its end; an open incident has no end yet).

Anyone who can write the incidents topic can forge an event, as with score
records, so an event is kept only if its fields have the types the page
renders and its peak frame is on the configured frames topic (``refusal``).

``sample`` picks the frames a "normal" absorbs: the peak frame and the rest
spread evenly over the incident, at most ``MAX_SAMPLE``. An incident is many
near-identical frames; teaching all of them would grow the index by k copies of
each for little more than the peak and a few others teach.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from wire.records import ScoreRecord

log = logging.getLogger(__name__)
KINDS = ("intrusion", "scene-change")
STATES = ("open", "update", "close")
MAX_SAMPLE = 8  # frames a "normal" on an incident absorbs at most (the peak and the rest spread over it)
MAX_TEXT = 512


@dataclass(frozen=True)
class ReviewIncident:
    """One incident as its last event describes it; ``peak`` locates its peak frame on the frames topic."""

    id: str
    source: str
    kind: str
    state: str  # open | update | close (update: still open)
    start: float
    end: float
    count: int
    peak_score: float
    threshold: Optional[float]
    index: str
    peak_frame_id: str
    peak_partition: int
    peak_offset: int
    peak_hotspot: Optional[list[int]]
    closed_at: Optional[float]

    @property
    def is_open(self) -> bool:
        return self.state != "close"

    def holds(self, record: ScoreRecord) -> bool:
        """Whether ``record`` is one of this incident's anomalous frames."""
        if record.source != self.source or record.index_name != self.index or record.is_anomaly is not True:
            return False
        return self.start <= record.capture_time and (self.is_open or record.capture_time <= self.end)

    def peak_record(self, frames_topic: str) -> ScoreRecord:
        """A score record for the peak frame, made from the event (no anomaly map: the event carries none)."""
        return ScoreRecord(frame_id=self.peak_frame_id, source=self.source, sequence=0, capture_time=self.start,
                           score_time=self.start, score=self.peak_score, threshold=self.threshold, is_anomaly=True,
                           index_name=self.index, index_version=0, backbone="", latency_s=0.0,
                           frame_topic=frames_topic, frame_partition=self.peak_partition,
                           frame_offset=self.peak_offset, hotspot=self.peak_hotspot)  # fmt: skip


def _text(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= MAX_TEXT


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def refusal(event: Any, frames_topic: str) -> str:
    """Why the page will not list ``event`` ("" when it will)."""
    if not isinstance(event, dict) or event.get("type") != "framewatch.incident":
        return "it is not an incident event"
    if event.get("state") not in STATES or event.get("kind") not in KINDS:
        return f"unknown state or kind ({str(event.get('state'))[:20]!r}, {str(event.get('kind'))[:20]!r})"
    if not all(_text(event.get(k)) for k in ("id", "source", "index")):
        return "its id, source or index is not a short string"
    numbers = [event.get(k) for k in ("start", "end", "peak_score")]
    closed, threshold = event.get("closed_at"), event.get("threshold")
    if not all(_number(v) for v in numbers) or not (threshold is None or _number(threshold)):
        return "its times or scores are not finite numbers"
    if not (closed is None or _number(closed)) or not _whole(event.get("count")):
        return "its close time or frame count is malformed"
    peak = event.get("peak_frame")
    if not isinstance(peak, dict) or not _text(peak.get("frame_id")):
        return "it has no peak frame"
    if peak.get("topic") != frames_topic:
        return (
            f"its peak frame is on {str(peak.get('topic'))[:80]!r}, not on the frames topic {frames_topic!r}"
        )
    if not (_whole(peak.get("partition")) and _whole(peak.get("offset"))):
        return "its peak frame's coordinates are not whole numbers"
    return ""


def parse(event: dict[str, Any]) -> ReviewIncident:
    """The incident of an event that ``refusal`` passed."""
    peak = event["peak_frame"]
    hotspot = peak.get("hotspot")
    ok_hotspot = isinstance(hotspot, list) and len(hotspot) == 4 and all(_whole(v) for v in hotspot)
    return ReviewIncident(id=event["id"], source=event["source"], kind=event["kind"], state=event["state"],
                          start=float(event["start"]), end=float(event["end"]), count=event["count"],
                          peak_score=float(event["peak_score"]), threshold=event.get("threshold"),
                          index=event["index"], peak_frame_id=peak["frame_id"], peak_partition=peak["partition"],
                          peak_offset=peak["offset"], peak_hotspot=hotspot if ok_hotspot else None,
                          closed_at=event.get("closed_at"))  # fmt: skip


class Incidents:
    """The last event of each incident: at most ``max_open`` open ones and the ``max_closed`` latest closed."""

    def __init__(
        self, frames_topic: str = "frames", max_open: int = 200, max_closed: int = 50, max_seen: int = 2000
    ) -> None:
        self.frames_topic, self.max_open, self.max_closed = frames_topic, max_open, max_closed
        self.max_seen = max_seen
        self._open: OrderedDict[str, ReviewIncident] = OrderedDict()
        self._closed: OrderedDict[str, ReviewIncident] = OrderedDict()
        # recent anomalous score records by frame id: a peak's map, whichever of its record and its
        # incident's event the page reads first
        self._seen: OrderedDict[str, ScoreRecord] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, event: Any) -> None:
        why = refusal(event, self.frames_topic)
        if why:
            log.warning("ignoring an incident event: %s", why)
            return
        inc = parse(event)
        with self._lock:
            self._open.pop(inc.id, None)
            self._closed.pop(inc.id, None)
            (self._open if inc.is_open else self._closed)[inc.id] = inc
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)  # the one longest without news
            while len(self._closed) > self.max_closed:
                del self._closed[min(self._closed.values(), key=_closed_time).id]

    def see(self, record: ScoreRecord) -> None:
        """An anomalous score record (on the frames topic) from the score topic, kept a while for its map."""
        with self._lock:
            if record.frame_id not in self._seen:
                self._seen[record.frame_id] = record
                while len(self._seen) > self.max_seen:
                    self._seen.popitem(last=False)

    def listed(self) -> list[ReviewIncident]:
        """Open incidents (latest start first), then the recently closed (latest close first)."""
        with self._lock:
            opened = sorted(self._open.values(), key=lambda i: i.start, reverse=True)
            closed = sorted(self._closed.values(), key=_closed_time, reverse=True)
        return opened + closed

    def get(self, incident_id: str) -> Optional[ReviewIncident]:
        with self._lock:
            return self._open.get(incident_id) or self._closed.get(incident_id)

    def peak(self, inc: ReviewIncident) -> ScoreRecord:
        """The peak frame's score record: the one read from the score topic if seen, else made from the event."""
        with self._lock:
            seen = self._seen.get(inc.peak_frame_id)
        return seen if seen is not None and inc.holds(seen) else inc.peak_record(self.frames_topic)

    def peak_by_frame(self, frame_id: str) -> Optional[ScoreRecord]:
        """The peak record of the listed incident whose peak frame is ``frame_id`` (the page serves it)."""
        for inc in self.listed():
            if inc.peak_frame_id == frame_id:
                return self.peak(inc)
        return None

    def holding(self, record: ScoreRecord) -> Optional[ReviewIncident]:
        """The listed incident ``record`` belongs to, if any."""
        for inc in self.listed():
            if inc.holds(record):
                return inc
        return None


def _closed_time(inc: ReviewIncident) -> float:
    return inc.closed_at if inc.closed_at is not None else inc.end


def sample(records: Sequence[ScoreRecord], peak_id: str, n: int = MAX_SAMPLE) -> list[ScoreRecord]:
    """At most ``n`` of ``records`` (one per frame id): the peak (else the highest score) and the rest spread
    evenly over capture time, first and last included; in capture order."""
    unique: dict[str, ScoreRecord] = {}
    for r in sorted(records, key=lambda r: (r.capture_time, r.frame_id)):
        unique.setdefault(r.frame_id, r)
    ordered = list(unique.values())
    if len(ordered) <= n:
        return ordered
    peak = unique.get(peak_id) or max(ordered, key=lambda r: r.score)
    rest = [r for r in ordered if r.frame_id != peak.frame_id]
    picks = sorted({round(i * (len(rest) - 1) / (n - 2)) for i in range(n - 1)}) if n > 1 else []
    chosen = [peak, *(rest[i] for i in picks)]
    return sorted(chosen, key=lambda r: (r.capture_time, r.frame_id))
