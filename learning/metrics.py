"""``framewatch learn``'s Prometheus metrics, on a registry passed in; camera counts are read at scrape time."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from learning.tracker import STATES

OUTCOMES = ("fitted", "failed")


class LearnMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.cameras = Gauge("framewatch_learn_cameras", "Cameras matching --match that this learner tracks, by "
                             "state (learning, fitting, fitted, failed, indexed: had an index already)", ["state"],
                             registry=registry)  # fmt: skip
        self.fits = Counter("framewatch_learn_fits_total", "Fits of a camera's index, by outcome", ["outcome"],
                            registry=registry)  # fmt: skip
        self.fit_seconds = Gauge("framewatch_learn_last_fit_seconds", "Duration of the last fit (read, embed, fit, "
                                 "publish)", registry=registry)  # fmt: skip
        self.frames = Counter("framewatch_learn_frames_total", "Frames consumed from the frames topic",
                              registry=registry)  # fmt: skip
        self.commit_failures = Counter("framewatch_learn_commit_failures_total",
                                       "Commits the group refused (a rebalance)", registry=registry)  # fmt: skip
        self.assigned = Gauge("framewatch_learn_partitions_assigned", "Frames partitions this learner reads",
                              registry=registry)  # fmt: skip
        for outcome in OUTCOMES:
            self.fits.labels(outcome)

    def count_cameras(self, counts: Callable[[], dict[str, int]]) -> None:
        """Each state's gauge reads ``counts()`` when scraped."""
        for state in STATES:
            self.cameras.labels(state).set_function(lambda s=state: counts().get(s, 0))  # type: ignore[misc]
