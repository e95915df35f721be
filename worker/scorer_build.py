"""The scorer (backbone, extractor, kNN scoring) is built on a thread of its own, beside the loop.

Building takes seconds to tens of seconds (weights read, model moved to the
device). Built on the loop thread, it kept the loop out of ``poll()`` that
long: the consumer did not join its group until the model was ready (frames
published meanwhile were behind a new group's start), librdkafka's statistics
(the confluent client's only view of the broker) stopped, so /readyz said
"broker: unreachable" with the broker up, and /readyz gave no reason at all.
Built here, the loop joins, keeps its partitions paused and polling, and
/readyz says "building embedder ...".
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Generic, Optional, TypeVar

from index_store.spec import EmbedderSpec
from worker.watchdog import Watchdog

log = logging.getLogger(__name__)

T = TypeVar("T")
RETRY_S = 30.0  # after a failed build (e.g. the index's weights are not on this machine)


class ScorerBuild(Generic[T]):
    """``get_or_start(spec)`` starts the build on first call and returns what ``build(spec)`` made once it is done.

    ``build`` runs on the builder thread; whatever it raises becomes ``error`` (shown on /readyz) and is
    tried again after ``RETRY_S``.
    """

    def __init__(self, build: Callable[[EmbedderSpec], T], watchdog: Watchdog,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.build, self.watchdog, self.clock = build, watchdog, clock
        self.error: Optional[str] = None
        self._built: Optional[T] = None
        self._building: Optional[tuple[str, float]] = None  # (spec label, since)
        self._retry_at = 0.0
        self._lock = threading.Lock()

    def get_or_start(self, spec: EmbedderSpec) -> Optional[T]:
        """What was built, or None while it is building (or waiting to retry); starts the build if needed."""
        with self._lock:
            if self._built is not None or self._building is not None or self.clock() < self._retry_at:
                return self._built
            self._building = (spec.label(), self.clock())
        log.info("building embedder %s", spec.label())
        threading.Thread(target=self._run, args=(spec,), name="build-embedder", daemon=True).start()
        return None

    def status(self) -> Optional[str]:
        """Why there is no scorer yet: the build in progress, or the last error; None once built."""
        with self._lock:
            building = self._building
        if building is not None:
            return f"building embedder {building[0]}"
        return self.error

    def _run(self, spec: EmbedderSpec) -> None:
        built: Any = None
        error: Optional[str] = None
        try:
            with self.watchdog.calling("build-embedder"):
                built = self.build(spec)
        except Exception as e:  # noqa: BLE001 - a failed build is reported and retried, never a dead thread
            error = f"cannot build embedder {spec.label()}: {e}"
            log.error("%s; retrying in %.0fs", error, RETRY_S)
        with self._lock:
            self._building = None
            if error is None:
                self._built, self.error = built, None
                log.info("embedder %s built", spec.label())
            else:
                self.error, self._retry_at = error, self.clock() + RETRY_S
