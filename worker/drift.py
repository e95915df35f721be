"""Per-camera alarm rate and score drift against the index's calibration. Plain values, no services.

A camera whose lights were changed, or whose lens is dirtying, does not send one
anomalous frame: its scores creep upward until it alarms several times as often
as the index promised. Two numbers per source catch that, over the frames of the
last ``window_s`` seconds (at most ``max_frames``):

- alarm rate: the share of frames over the threshold, against the target
  false-alarm rate the index was calibrated for (``calibration.target_fpr``);
- drift: how far the distribution of normalised scores (score / threshold) has
  moved from the calibration scores, in standard errors. For each stored
  calibration quantile (q, p), "a share p of the calibration scores lie at or
  below q", take the share of window frames at or below q; the gap, divided by
  its standard error sqrt(p(1-p)(1/n + 1/m)) (n frames in the window, m
  calibration scores), is a two-sample z; drift is the largest |z| over the
  points (a variance-weighted Kolmogorov-Smirnov statistic). 0-3: noise;
  over 5: the camera no longer looks as it did at calibration. Weighting by
  the standard error makes it as sensitive in the tail (the threshold is the
  1 - target_fpr quantile) as in the middle, so a whole-scene shift shows
  while the alarm rate is still a small multiple of its target; and a small
  calibration set (large m-term) cannot raise it on noise.

The points come from the quantile sketch a fit stores in the index's metadata
(``calibration.score_quantiles``). Indexes fitted before the sketch existed have
only a summary (median, p99) and the threshold itself: drift is then the same
statistic at those few points. With nothing but a threshold it is the binomial
z of the alarm rate against its target. A source's
window restarts when its index version changes (a new threshold means new
normalised scores). Sources unseen for ``window_s`` age out; at most
``max_sources`` are tracked, the least recently seen dropped first.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import numpy as np

DEFAULT_TARGET_FPR = 0.01  # what feedback.py assumes for an index without one
KEEP_FACTOR = 2.0  # a labelled source keeps its label unless another is this much worse
# What deploy/prometheus/rules.yml alerts on (status marks a camera past either with "!").
ALARM_RATIO_ALERT = 3.0  # alarm rate / target
DRIFT_ALERT = 4.0  # standard errors


@dataclass(frozen=True)
class DriftConfig:
    window_s: float = 600.0  # frames older than this leave the window; a source unseen this long ages out
    max_frames: int = 1000  # per source (above 1.7 frames/s the window is shorter than window_s)
    min_frames: int = 30  # drift is reported from this many frames in the window
    max_sources: int = 1000  # tracked at once (memory: at most max_sources x max_frames pairs, ~80 MB)
    labelled: int = 50  # sources with their own metric labels (--drift-sources)

    def __post_init__(self) -> None:
        from wire.errors import FramewatchError

        if (
            self.window_s <= 0
            or min(self.max_frames, self.min_frames, self.max_sources) < 1
            or self.labelled < 0
        ):
            raise FramewatchError(
                "drift: window_s positive, max_frames, min_frames and max_sources at least 1, "
                "labelled 0 or more"
            )


@dataclass(frozen=True)
class Reference:
    """The calibration as (normalised score, share of calibration scores at or below it) points."""

    points: tuple[tuple[float, float], ...]
    target_fpr: float
    n_scores: int  # calibration scores the points come from (0: the target alone, known exactly)
    kind: str  # "sketch" (fit-time quantiles), "summary" (p50/p99/max of older indexes), "threshold" (none)

    @classmethod
    def from_calibration(cls, calibration: Mapping[str, Any], threshold: float) -> "Reference":
        """Build from an IndexMeta's ``calibration`` dict and the threshold the worker scores with."""
        target = _number(calibration.get("target_fpr"))
        target = target if target is not None and 0 < target < 1 else DEFAULT_TARGET_FPR
        cal_threshold = _number(calibration.get("threshold")) or threshold
        points = [(cal_threshold / threshold, 1.0 - target)]
        n_scores = int(_number(calibration.get("n_scores")) or 0)
        sketch = calibration.get("score_quantiles")
        kind = "threshold"
        if n_scores > 0 and isinstance(sketch, Mapping) and _pairs(sketch):
            # Not the extremes (min, max, p99.5, p99.9): too few scores beyond them for a z.
            points += [(q / threshold, p) for p, q in _pairs(sketch) if 0.01 <= p <= 0.99]
            kind = "sketch"
        elif n_scores > 0:
            summary = [(_number(calibration.get(f)), p) for f, p in (("score_p50", 0.5), ("score_p99", 0.99))]
            found = [(q / threshold, p) for q, p in summary if q is not None]
            if found:
                points += found
                kind = "summary"
        return cls(tuple(sorted(points)), target, n_scores if kind != "threshold" else 0, kind)


@dataclass(frozen=True)
class SourceDrift:
    """One source's figures over its window."""

    source: str
    index: str  # "name@version"
    frames: int
    alarm_rate: float
    target_fpr: float
    drift: Optional[
        float
    ]  # largest |z| (standard errors) at the calibration quantiles; None below min_frames
    reference: str  # Reference.kind
    last_seen: float

    @property
    def alarm_ratio(self) -> float:
        """Alarm rate as a multiple of the target (1.0: as calibrated)."""
        return self.alarm_rate / self.target_fpr

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "index": self.index, "frames": self.frames,
            "alarm_rate": round(self.alarm_rate, 5), "target_fpr": self.target_fpr,
            "drift": None if self.drift is None else round(self.drift, 4), "reference": self.reference,
        }  # fmt: skip


class _Window:
    def __init__(self, index: str, reference: Reference, max_frames: int) -> None:
        self.index, self.reference = index, reference
        self.frames: deque[tuple[float, float]] = deque(maxlen=max_frames)


class DriftTracker:
    """Thread-safe: the scoring thread observes, the scrape and heartbeat threads read."""

    def __init__(self, cfg: DriftConfig = DriftConfig(), clock: Callable[[], float] = time.monotonic) -> None:
        self.cfg, self.clock = cfg, clock
        self._sources: OrderedDict[str, _Window] = OrderedDict()  # least recently seen first
        self._labelled: set[str] = set()
        self._lock = threading.Lock()

    def observe(self, source: str, normalized: float, index: str, reference: Reference) -> None:
        """One scored frame: its score / threshold, the index (name@version) and calibration it was scored with."""
        if not math.isfinite(normalized):
            return
        now = self.clock()
        with self._lock:
            window = self._sources.get(source)
            if window is None or window.index != index:
                window = self._sources[source] = _Window(index, reference, self.cfg.max_frames)
                while len(self._sources) > self.cfg.max_sources:
                    self._sources.popitem(last=False)
            self._sources.move_to_end(source)
            window.frames.append((now, normalized))

    def snapshot(self) -> list[SourceDrift]:
        """Every source still in the window, worst first (alarm rate over target, then drift)."""
        now = self.clock()
        with self._lock:
            self._expire(now)
            views = [
                (s, w.index, w.reference, [x for _, x in w.frames], w.frames[-1][0])
                for s, w in self._sources.items()
            ]
        out = [self._figures(*view) for view in views]
        return sorted(out, key=lambda d: (-d.alarm_ratio, -(d.drift or 0.0), d.source))

    def labelled(self) -> tuple[list[SourceDrift], list[SourceDrift]]:
        """(sources given their own labels, all sources): the worst ``cfg.labelled``, sticky.

        A source keeps its label from one call to the next unless another is KEEP_FACTOR times worse,
        so label sets (and the alerts on them) do not flap between equally quiet cameras.
        """
        everything = self.snapshot()
        keep = self._labelled

        def rank(d: SourceDrift) -> tuple[float, bool, float]:
            boost = KEEP_FACTOR if d.source in keep else 1.0
            return (d.alarm_ratio * boost, d.source in keep, (d.drift or 0.0) * boost)

        chosen = sorted(everything, key=rank, reverse=True)[: self.cfg.labelled]
        self._labelled = {d.source for d in chosen}
        return chosen, everything

    def _expire(self, now: float) -> None:
        horizon = now - self.cfg.window_s
        for source in list(self._sources):
            frames = self._sources[source].frames
            while frames and frames[0][0] < horizon:
                frames.popleft()
            if not frames:
                del self._sources[source]

    def _figures(self, source: str, index: str, ref: Reference, xs: list[float], last: float) -> SourceDrift:
        values = np.sort(np.asarray(xs, dtype=np.float64))
        n = len(values)
        alarm = float(np.count_nonzero(values > 1.0)) / n
        drift = None
        if n >= self.cfg.min_frames:
            drift = drift_z(values, ref)
        return SourceDrift(source, index, n, alarm, ref.target_fpr, drift, ref.kind, last)


def drift_z(sorted_values: np.ndarray, ref: Reference) -> float:
    """Largest |z| over the reference points of the share of ``sorted_values`` at or below each."""
    n = len(sorted_values)
    qs = np.array([q for q, _ in ref.points])
    ps = np.array([p for _, p in ref.points])
    shares = np.searchsorted(sorted_values, qs, side="right") / n
    inv_m = 1.0 / ref.n_scores if ref.n_scores else 0.0
    variance = np.maximum(ps * (1.0 - ps), 1.0 / max(n, ref.n_scores or n)) * (1.0 / n + inv_m)
    return float(np.max(np.abs(shares - ps) / np.sqrt(variance)))


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def _pairs(sketch: Mapping[str, Any]) -> list[tuple[float, float]]:
    """(p, score) pairs of a stored sketch {"p": [...], "score": [...]}; [] when malformed."""
    ps, qs = sketch.get("p"), sketch.get("score")
    if not isinstance(ps, list) or not isinstance(qs, list) or len(ps) != len(qs):
        return []
    pairs = [(_number(p), _number(q)) for p, q in zip(ps, qs)]
    if any(p is None or q is None or not 0.0 <= p <= 1.0 for p, q in pairs):
        return []
    return [(float(p), float(q)) for p, q in pairs]  # type: ignore[arg-type]
