"""What the review page does, apart from HTTP: render the page, serve a frame's bytes, record an answer.

The caller (review/web.py) has already authenticated the person and checked the
request; ``by`` is the authenticated name, never one the client chose.
"""

from __future__ import annotations

from typing import Any

from review import pages
from review.access import Identity
from review.answers import Answers
from review.feed import RecentAnomalies
from review.frames import FrameFetcher, StoredFrame
from review.marking import Marker
from wire.errors import FramewatchError


class UnknownFrame(FramewatchError):
    """The frame id is not among the recent anomalies the page shows."""


class ReviewApp:
    """The feed, the fetcher (bound to the frames topic), the marker and the answers; one per server."""

    def __init__(
        self, feed: RecentAnomalies, fetcher: FrameFetcher, marker: Marker, answers: Answers
    ) -> None:
        self.feed, self.fetcher, self.marker, self.answers = feed, fetcher, marker, answers

    def render(self, who: Identity, csrf: str, flash: str = "", error: bool = False) -> str:
        by_source = self.feed.by_source()
        names = {r.index_name for recs in by_source.values() for r in recs}
        answers: dict[str, dict[str, Any]] = {}
        for name in sorted(names):
            answers.update(self.answers.all(name))
        return pages.page(by_source, answers, who.name, who.role, csrf, who.may_mark, flash, error)

    def frame(self, frame_id: str) -> StoredFrame:
        """The frame's bytes, from the frames topic only; raises UnknownFrame or FrameUnavailable."""
        record = self.feed.get(frame_id)
        if record is None:
            raise UnknownFrame(f"frame {frame_id!r} is not among the recent anomalies")
        return self.fetcher.fetch(record.frame_topic, record.frame_partition, record.frame_offset)

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
