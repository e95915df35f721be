"""What the review page does, apart from HTTP: render the page, serve a frame's bytes, record an answer.

With incidents (review/incidents.py, fed from the alerter's topic) the page lists
them, open first, and answers them as a whole; frames in no listed incident keep
their own cards. An incident's frames are its anomalous score records on the
score topic (``find``), sampled (at most ``MAX_SAMPLE``) for a "normal".

The caller (review/web.py) has already authenticated the person and checked the
request; ``by`` is the authenticated name, never one the client chose.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from review import pages
from review.access import Identity
from review.answers import Answers
from review.feed import RecentAnomalies, refusal
from review.frames import FrameFetcher, StoredFrame
from review.incidents import MAX_SAMPLE, Incidents, ReviewIncident, sample
from review.marking import Marker
from wire.errors import FramewatchError
from wire.records import ScoreRecord

# (source, start, end or None while open) -> the anomalous score records of that source captured then
FindScores = Callable[[str, float, Optional[float]], list[ScoreRecord]]
MAX_CONFIRMED = 1000  # frames of one incident a "confirmed" is recorded for


class UnknownFrame(FramewatchError):
    """The frame id is not among the recent anomalies the page shows."""


class UnknownIncident(FramewatchError):
    """The incident id is not among the incidents the page lists."""


class ReviewApp:
    """The feed, the fetcher (bound to the frames topic), the marker and the answers; one per server."""

    def __init__(
        self, feed: RecentAnomalies, fetcher: FrameFetcher, marker: Marker, answers: Answers,
        incidents: Optional[Incidents] = None, find: Optional[FindScores] = None,
    ) -> None:  # fmt: skip
        self.feed, self.fetcher, self.marker, self.answers = feed, fetcher, marker, answers
        self.incidents = incidents or Incidents(feed.frames_topic)
        self.find = find

    def render(self, who: Identity, csrf: str, flash: str = "", error: bool = False) -> str:
        listed = self.incidents.listed()
        by_source = {
            source: kept
            for source, recs in self.feed.by_source().items()
            if (kept := [r for r in recs if not any(i.holds(r) for i in listed)])
        }
        names = {r.index_name for recs in by_source.values() for r in recs}
        answers: dict[str, dict[str, Any]] = {}
        for name in sorted(names):
            answers.update(self.answers.all(name))
        incident_answers: dict[str, dict[str, Any]] = {}
        for name in sorted({i.index for i in listed}):
            incident_answers.update(self.answers.incidents(name))
        shown = [(i, self.incidents.peak(i), incident_answers.get(i.id)) for i in listed]
        return pages.page(by_source, answers, who.name, who.role, csrf, who.may_mark, flash, error, shown)

    def frame(self, frame_id: str) -> StoredFrame:
        """The frame's bytes, from the frames topic only; raises UnknownFrame or FrameUnavailable."""
        record = self.feed.get(frame_id) or self.incidents.peak_by_frame(frame_id)
        if record is None:
            raise UnknownFrame(f"frame {frame_id!r} is not among the recent anomalies")
        return self.fetcher.fetch(record.frame_topic, record.frame_partition, record.frame_offset)

    def incident_frames(self, inc: ReviewIncident) -> list[ScoreRecord]:
        """The incident's anomalous frames on the frames topic (its peak always among them), oldest first."""
        found = self.find(inc.source, inc.start, None if inc.is_open else inc.end) if self.find else []
        topic = self.feed.frames_topic
        records = {r.frame_id: r for r in found if inc.holds(r) and not refusal(r, topic)}
        peak = self.incidents.peak(inc)
        records.setdefault(peak.frame_id, peak)
        return sorted(records.values(), key=lambda r: (r.capture_time, r.frame_id))

    def mark_incident(self, incident_id: str, label: str, who: Identity) -> str:
        """Answer a whole incident; returns the message shown on the page. Raises FramewatchError."""
        if not who.may_mark:
            raise PermissionError(f"{who.name} may view, not mark")
        inc = self.incidents.get(incident_id)
        if inc is None:
            raise UnknownIncident(f"incident {incident_id} is not among the incidents listed")
        if label not in ("normal", "confirmed"):
            raise FramewatchError(f"unknown answer {label!r}")
        frames = self.incident_frames(inc)
        if label == "confirmed":
            self.marker.confirm_incident(inc.id, inc.index, frames[:MAX_CONFIRMED], who.name)
            return f"incident {inc.id} ({len(frames)} frame(s)) confirmed as an anomaly by {who.name}"
        chosen = sample(frames, inc.peak_frame_id, MAX_SAMPLE)
        done = self.marker.mark_incident(inc.id, chosen, who.name)
        meta = done.meta
        if inc.id in done.already:
            before = done.already[inc.id]
            return (f"incident {inc.id} was already marked normal by {before.get('by', '?')} (absorbed in version "
                    f"{before.get('absorbed_in')}); index {meta.name} is unchanged")  # fmt: skip
        if not done.absorbed:
            return (f"incident {inc.id} marked normal by {who.name}: its {len(chosen)} sampled frame(s) were "
                    f"already absorbed; index {meta.name} is unchanged")  # fmt: skip
        thr = f"{meta.threshold:.4g}" if meta.threshold is not None else "-"
        return (f"incident {inc.id} marked normal by {who.name}: {len(done.absorbed)} of its {len(frames)} frame(s) "
                f"absorbed; index {meta.name} version {meta.version} is active ({meta.n_vectors} vectors, "
                f"threshold {thr})")  # fmt: skip

    def mark(self, frame_id: str, label: str, who: Identity) -> str:
        """Record the answer; returns the message shown on the page. Raises FramewatchError."""
        if not who.may_mark:
            raise PermissionError(f"{who.name} may view, not mark")
        record = self.feed.get(frame_id)
        if record is None:
            raise UnknownFrame(f"frame {frame_id} is not among the recent anomalies")
        if label == "confirmed":
            self.marker.confirm(record, who.name)
            return f"frame {frame_id} confirmed as an anomaly by {who.name}"
        if label != "normal":
            raise FramewatchError(f"unknown answer {label!r}")
        done = self.marker.mark([record], who.name)
        if not done.absorbed:
            before = done.already[frame_id]
            return (f"frame {frame_id} was already marked normal by {before.get('by', '?')} (absorbed in "
                    f"version {before.get('absorbed_in')}); index {done.meta.name} is unchanged")  # fmt: skip
        meta = done.meta
        thr = f"{meta.threshold:.4g}" if meta.threshold is not None else "-"
        return (f"frame {frame_id} marked normal by {who.name}: index {meta.name} version {meta.version} is active "
                f"({meta.n_vectors} vectors, threshold {thr})")  # fmt: skip
