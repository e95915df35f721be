"""Per-camera indexes (``--route 'PATTERN={source}'``): loaded on a camera's first frame, held under a budget.

Thousands of cameras, each with its own index, in one worker:

- Lazy. Nothing is loaded at start. When a frame is consumed (the loop thread),
  ``want`` queues its camera's index for the loader thread, so the load runs
  while the frame decodes and waits for its batch. The scoring thread then
  waits for it at most ``wait_s`` (``--index-load-wait``, default 2 s) per batch;
  a frame whose index is still loading after that is scored by the fallback
  index (``--index``) and its record says ``index_fallback: "loading"``. A frame
  is never held back for long and never lost.
- Bounded. Loaded indexes are held in an LRU under ``--index-memory``
  (worker/index_cache.py); an evicted one is loaded again on its camera's next frame.
- Absent. A camera without an index of its own (no active version), or whose
  index is refused (another backbone or spec than the worker's, bad data), is
  remembered as such, so its frames go to the fallback without a Redis round trip
  each (``index_fallback``: ``missing`` / ``refused``; ``error`` while Redis fails,
  retried after RETRY_S).
- Followed by events, not polls. The IndexSet watcher's one subscription to the
  events channel hands each activation here (``changed``): a held or absent
  camera is reloaded (the held version serves until the new one is loaded); a
  camera never seen is ignored. So the cost grows with the number of changes,
  not of indexes. Events missed while the watcher was disconnected are caught
  up by ``resync`` after each (re)subscription: one pipelined read of the active
  pointers of the cameras held or absent.
- Metrics carry no index label (worker/metrics.py CameraIndexMetrics); a refused
  index is named in the log once per version and summarised on /readyz.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Optional, Union

import numpy as np
import redis

from index_store.errors import CorruptIndex, SpecMismatch, UnknownIndex
from index_store.knn import KnnIndex, Searcher
from index_store.repository import IndexMeta, IndexRepository
from index_store.spec import EmbedderSpec
from worker.index_cache import LruBudget, held_bytes
from worker.indexes import LoadedIndex
from worker.metrics import CameraIndexMetrics

if TYPE_CHECKING:
    from wire.records import FrameRecord
    from worker.routing import Routing

log = logging.getLogger(__name__)

RETRY_S = 5.0  # a camera whose load failed on a Redis error is tried again after this
MAX_ABSENT = 100_000  # cameras remembered as having no usable index (oldest forgotten: checked again)
SHOWN = 3  # refused indexes named on /readyz


@dataclass(frozen=True)
class Absent:
    """Why a camera's own index is not served: ``missing`` | ``refused`` | ``error``."""

    reason: str
    version: Optional[int] = None
    why: str = ""
    at: float = 0.0


def check_backbone(meta: IndexMeta, worker: Optional[EmbedderSpec]) -> None:
    """:raises SpecMismatch: the index's dimension disagrees with its backbone, or it was built with another
    embedder than the worker's (a frame is embedded once, for every index that scores it)."""
    spec = meta.embedder_spec
    if meta.dim != spec.dim:
        raise SpecMismatch(f"index dimension {meta.dim} != {spec.dim} of its backbone {spec.backbone}")
    if worker is None:
        raise SpecMismatch("the worker has no backbone yet (its fallback index is not loaded)")
    if spec.fingerprint() != worker.fingerprint():
        raise SpecMismatch(f"built with {spec.label()} (dim {meta.dim}); this worker and its fallback index "
                           f"embed with {worker.label()} (dim {worker.dim})")  # fmt: skip


class CameraIndexes:
    """Camera index name -> LoadedIndex, loaded on demand by one loader thread."""

    def __init__(
        self,
        repo_factory: Callable[[], IndexRepository],
        spec: Callable[[], Optional[EmbedderSpec]],
        budget_bytes: int,
        metrics: CameraIndexMetrics,
        searcher_for: Optional[Callable[[KnnIndex], Searcher]] = None,
        wait_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``spec``: the worker's embedder spec (its fallback index's); ``searcher_for`` as IndexSet's."""
        self.repo_factory = repo_factory
        self.spec = spec
        self.searcher_for = searcher_for
        self.wait_s = wait_s
        self.clock = clock
        self.metrics = metrics
        self.cache: LruBudget[str, LoadedIndex] = LruBudget(budget_bytes)
        self._absent: OrderedDict[str, Absent] = OrderedDict()
        self._queue: deque[str] = deque()
        self._pending: set[str] = set()
        self._resync = False
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        metrics.state(lambda: len(self.cache), lambda: self.cache.bytes, budget_bytes, lambda: len(self._absent))

    # -- scoring side ------------------------------------------------------------------
    def want(self, name: str) -> None:
        """Queue ``name`` for loading unless it is held, loading, or known absent (cheap: called per frame)."""
        if name in self.cache:
            return
        with self._cond:
            if name in self._pending:
                return
            absent = self._absent.get(name)
            if absent is not None and (absent.reason != "error" or self.clock() - absent.at < RETRY_S):
                return
            self._enqueue(name)

    def resolve(self, names: Iterable[str]) -> dict[str, Union[LoadedIndex, str]]:
        """Each name -> its LoadedIndex, or why the fallback scores its frames (missing, loading, refused,
        error). Waits at most ``wait_s`` for names not held yet."""
        names = list(dict.fromkeys(names))
        for name in names:
            self.want(name)
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            while any(n in self._pending and n not in self.cache for n in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        out: dict[str, Union[LoadedIndex, str]] = {}
        for name in names:
            held = self.cache.get(name)
            absent = self._absent.get(name)
            out[name] = held if held is not None else (absent.reason if absent is not None else "loading")
        return out

    # -- watcher side -------------------------------------------------------------------
    def changed(self, name: str) -> None:
        """An activation of ``name`` announced on the events channel: reload it if it is held or absent
        (the held version serves until the new one is loaded); a camera never seen is not loaded."""
        with self._cond:
            if (name in self.cache or name in self._absent) and name not in self._pending:
                self._enqueue(name)

    def resync(self) -> None:
        """After the watcher (re)subscribed: check every held or absent camera once (events may be lost)."""
        with self._cond:
            self._resync = True
            self._cond.notify_all()

    # -- health ---------------------------------------------------------------------------
    def summary(self) -> str:
        missing = sum(1 for a in list(self._absent.values()) if a.reason == "missing")
        return (f"per-camera indexes: {len(self.cache)} held ({self.cache.bytes / 2**20:.0f} of "
                f"{self.cache.budget_bytes / 2**20:.0f} MiB, {self.cache.evictions} evicted so far), "
                f"{missing} cameras without their own")  # fmt: skip

    def problems(self) -> list[str]:
        """Refused per-camera indexes (their cameras are scored by the fallback), summarised."""
        refused = [(n, a) for n, a in list(self._absent.items()) if a.reason == "refused"]
        if not refused:
            return []
        shown = "; ".join(f"{n}@{a.version}: {a.why}" for n, a in refused[:SHOWN])
        more = f" and {len(refused) - SHOWN} more" if len(refused) > SHOWN else ""
        return [f"{len(refused)} per-camera indexes refused, their cameras go to the fallback index: {shown}{more}"]

    # -- loader thread ---------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="camera-index-loader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread:
            self._thread.join(timeout=5)

    def _enqueue(self, name: str) -> None:  # holding self._cond
        self._pending.add(name)
        self._queue.append(name)
        self._cond.notify_all()

    def _take(self) -> tuple[list[str], bool]:
        with self._cond:
            while not self._queue and not self._resync and not self._stop.is_set():
                self._cond.wait(1.0)
            names, self._queue = list(self._queue), deque()
            resync, self._resync = self._resync, False
            return names, resync

    def _run(self) -> None:
        repo: Optional[IndexRepository] = None
        while not self._stop.is_set():
            names, resync = self._take()
            try:
                repo = repo or self.repo_factory()
                if resync:
                    names += self._stale(repo)
                for name in list(dict.fromkeys(names)):
                    self.load(repo, name)
                    names.remove(name)
            except Exception as e:  # noqa: BLE001 - the loader must outlive anything Redis holds
                repo = None
                self._failed(names, e)
                if not isinstance(e, (redis.ConnectionError, redis.TimeoutError, OSError)):
                    log.exception("per-camera index loader")
                self._stop.wait(0.5)

    def _failed(self, names: list[str], e: Exception) -> None:
        """Names a Redis error kept from loading: scored by the fallback (``error``) and tried again later."""
        if not names:
            return
        log.warning("per-camera indexes not loaded (%d, e.g. %s): %s: %s; their frames go to the fallback index, "
                    "retrying in %.0fs", len(names), names[0], type(e).__name__, e, RETRY_S)  # fmt: skip
        for name in names:
            self.metrics.loads.labels("error").inc()
            if self.cache.peek(name) is None:
                self._set_absent(name, Absent("error", None, f"{type(e).__name__}: {e}", self.clock()))
            self._done(name)

    def _stale(self, repo: IndexRepository) -> list[str]:
        """Held or absent cameras whose active pointer moved (one pipelined read)."""
        names = self.cache.keys() + list(self._absent)
        stale = []
        for name, version in repo.active_versions(names).items():
            held = self.cache.peek(name)
            absent = self._absent.get(name)
            if held is not None and version is not None and version != held.meta.version:
                stale.append(name)
            elif absent is not None and (version != absent.version or absent.reason == "error"):
                stale.append(name)
        if stale:
            log.info("%d per-camera indexes changed while the watcher was away: reloading", len(stale))
        return stale

    def load(self, repo: IndexRepository, name: str) -> None:
        """Load ``name``'s active version unless held already; note a missing or refused one. Redis errors
        propagate (the caller marks the names it could not load)."""
        t0 = time.monotonic()
        try:
            self._load(repo, name)
        finally:
            self.metrics.load_seconds.observe(time.monotonic() - t0)
            self._done(name)

    def _load(self, repo: IndexRepository, name: str) -> None:
        held = self.cache.peek(name)
        try:
            version = repo.active_version(name)
        except CorruptIndex as e:
            self._refuse(name, None, str(e), held)
            return
        if version is None:
            if held is None:  # a held index whose pointer is gone keeps serving, as IndexSet's do
                self.metrics.loads.labels("missing").inc()
                self._set_absent(name, Absent("missing", None, "", self.clock()))
            return
        absent = self._absent.get(name)
        if (held is not None and held.meta.version == version) or (
            absent is not None and absent.reason == "refused" and absent.version == version
        ):
            return  # versions are immutable: held is current, refused stays refused
        try:
            meta, index = repo.load(name, version)
            repo.load_adapted(meta)  # checked against its sha256; the worker embeds with its own weights
            check_backbone(meta, self.spec())
        except (SpecMismatch, CorruptIndex, UnknownIndex) as e:
            self._refuse(name, version, str(e), held)
            return
        self._hold(name, meta, index, reloaded=held is not None)

    def _hold(self, name: str, meta: IndexMeta, index: KnnIndex, reloaded: bool) -> None:
        positional = hasattr(index, "search_grid")
        searcher = self.searcher_for(index) if self.searcher_for is not None and not positional else None
        if not positional and searcher is None:
            index.search(np.zeros((1, meta.dim), dtype=np.float32))  # faiss builds its copy here, not when scoring
        evicted = self.cache.put(name, LoadedIndex(meta, index, searcher), held_bytes(index))
        with self._cond:
            self._absent.pop(name, None)
        self.metrics.loads.labels("loaded").inc()
        self.metrics.evictions.inc(len(evicted))
        level = logging.INFO if reloaded else logging.DEBUG
        log.log(level, "per-camera index %s version %d loaded (%d vectors)%s", name, meta.version, meta.n_vectors,
                f"; evicted {len(evicted)} least recently used" if evicted else "")  # fmt: skip

    def _refuse(self, name: str, version: Optional[int], why: str, held: Optional[LoadedIndex]) -> None:
        self.metrics.loads.labels("refused").inc()
        now_serving = f"still serving {held.label}" if held is not None else "its frames go to the fallback index"
        log.error("per-camera index %s version %s refused: %s; %s", name, version, why, now_serving)
        if held is None:
            self._set_absent(name, Absent("refused", version, why, self.clock()))

    def _set_absent(self, name: str, absent: Absent) -> None:
        with self._cond:
            self._absent[name] = absent
            self._absent.move_to_end(name)
            while len(self._absent) > MAX_ABSENT:
                self._absent.popitem(last=False)

    def _done(self, name: str) -> None:
        with self._cond:
            self._pending.discard(name)
            self._cond.notify_all()


def prefetcher(routing: "Routing", cameras: Optional[CameraIndexes],
               loaded: Callable[[], Mapping[str, Any]]) -> Callable[["FrameRecord"], None]:  # fmt: skip
    """What admission calls on each frame: its camera's own index starts loading while the frame decodes
    and waits for its batch (a no-op without per-camera routes)."""

    def want(record: "FrameRecord") -> None:
        if cameras is None:
            return
        route = routing.route(record.source)
        if route.per_camera and route.name not in loaded():
            cameras.want(route.name)

    return want
