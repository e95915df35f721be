"""The indexes a worker serves, kept current from Redis.

A background thread listens on the Redis events channel (and checks the
active pointers every ``poll_s`` as a fallback); a new version is loaded off
the scoring thread and swapped in between batches, with its searcher (on a
CUDA worker with room, its vectors copied to the device: index_store/device_knn.py;
else faiss on the CPU). A version whose embedder
spec or dimension differs from the worker's is refused (once: versions are
immutable, so it is not reloaded until the pointer moves) and the old one stays.
So is a version whose data is malformed (see index_store/validation.py), or whose
adapted (fine-tuned) weights fail their sha256, and an
active pointer that cannot be read. With Redis down the worker keeps the indexes
it holds and retries with backoff. The watcher thread survives every exception:
each one is logged, counted (``framewatch_index_reloads_total{result="error"}``)
and shown on /readyz until the next refresh succeeds.

Redis can also lose what it held (a restart without persistence, FLUSHALL,
eviction): the worker goes on scoring with the copy it holds, and says that
the version it serves is gone from Redis (log, /readyz,
``framewatch_index_missing{index}``), until a version is published again. Each
(re)connection reads Redis's ``maxmemory-policy``; one that may evict index keys
(index_store/redis_policy.py) is logged and shown on /readyz
(``framewatch_redis_eviction_unsafe``).

The indexes named here are those the worker needs to start (the default and
fixed routes). Per-camera indexes (``--route 'PATTERN={source}'``) live in
worker/camera_indexes.py; this watcher's one subscription hands them the
activations of other names (``on_event``) and says when it (re)subscribed.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Optional

import redis

from index_store.errors import CorruptIndex, SpecMismatch, UnknownIndex
from index_store.knn import KnnIndex, Searcher
from index_store.repository import IndexMeta, IndexRepository, parse_event
from index_store.spec import EmbedderSpec
from worker.metrics import WorkerMetrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedIndex:
    meta: IndexMeta
    index: KnnIndex
    searcher: Optional[Searcher] = None  # searches ``index`` elsewhere (e.g. a DeviceKnn); None: faiss

    @cached_property
    def spec(self) -> EmbedderSpec:
        """The version's embedder spec, parsed once (scoring asks per frame)."""
        return self.meta.embedder_spec

    @property
    def knn(self) -> Searcher:
        """What scoring searches: the searcher built with this version, else the index itself (faiss)."""
        return self.searcher if self.searcher is not None else self.index

    @property
    def label(self) -> str:
        return f"{self.meta.name}@{self.meta.version}"


class IndexSet:
    """name -> LoadedIndex, read by the scoring loop, replaced whole by the watcher."""

    def __init__(
        self,
        repo_factory: Callable[[], IndexRepository],
        names: list[str],
        metrics: WorkerMetrics,
        poll_s: float = 5.0,
        searcher_for: Optional[Callable[[KnnIndex], Searcher]] = None,
        on_event: Optional[Callable[[str], None]] = None,
        on_subscribe: Optional[Callable[[], None]] = None,
        after_refresh: Optional[Callable[[IndexRepository], None]] = None,
    ) -> None:
        """``searcher_for`` builds each loaded version's searcher, on the watcher thread (None: faiss).
        ``on_event`` gets the name of each activation of an index not in ``names``, and ``on_subscribe`` is
        called after each (re)subscription: so per-camera indexes (worker/camera_indexes.py) follow the same
        one subscription. ``after_refresh`` runs at the end of each refresh, on the watcher thread (candidates:
        worker/candidates.py)."""
        self.on_event, self.on_subscribe = on_event, on_subscribe
        self.after_refresh = after_refresh
        self.repo_factory = repo_factory
        self.searcher_for = searcher_for
        self.names = names
        self.metrics = metrics
        self.poll_s = poll_s
        self.spec: Optional[EmbedderSpec] = None  # fixed by the first index loaded
        self.adapted: Optional[bytes] = None  # that index's adapted weights (safetensors), if fine-tuned
        self.quantized: Optional[bytes] = None  # that index's int8 model (index_store/openvino_runtime.py), if int8
        self._current: dict[str, LoadedIndex] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._wake = threading.Event()
        self._refused: dict[str, tuple[Optional[int], str]] = {}  # name -> (version, why): not loaded again
        self.redis_error: Optional[str] = None  # set while Redis is unreachable
        self.watch_error: Optional[str] = None  # set while the watcher fails for another reason
        self.eviction_risk: Optional[str] = None  # Redis's maxmemory-policy could evict index keys
        self._vanished: dict[str, str] = {}  # name -> what is gone from Redis of the version served
        metrics.known_indexes(names)
        metrics.index_state(names, missing=lambda name: name in self._vanished,
                            eviction_unsafe=lambda: self.eviction_risk is not None)  # fmt: skip

    # -- read side (scoring loop) ---------------------------------------------------
    def snapshot(self) -> dict[str, LoadedIndex]:
        return self._current

    def ready(self) -> bool:
        return all(name in self._current for name in self.names)

    def problems(self) -> list[str]:
        """What an operator should know: refused versions still active in Redis, served versions gone from
        Redis, Redis unreachable, an eviction policy that could remove index keys."""
        found = [why for _, why in self._refused.values()] + list(self._vanished.values())
        return found + [e for e in (self.redis_error, self.watch_error, self.eviction_risk) if e]

    # -- loading -----------------------------------------------------------------
    def refresh(self, repo: IndexRepository) -> None:
        """Load every name whose active version differs from the one held; note a held one gone from Redis,
        and an eviction policy that could make it so."""
        self._check_policy(repo)
        for name in self.names:
            self._refresh_one(repo, name)
            held = self._current.get(name)
            if held is not None:
                self._check_present(repo, held)
        if self.after_refresh is not None:
            self.after_refresh(repo)

    def _refresh_one(self, repo: IndexRepository, name: str) -> None:
        try:
            active = repo.active_version(name)
        except (CorruptIndex, SpecMismatch) as e:
            self._refuse(name, None, str(e))
            return
        held = self._current.get(name)
        if active is None or (held is not None and held.meta.version == active and self._same(repo, held)):
            return
        if name in self._refused and self._refused[name][0] == active:
            return  # versions are immutable: refused once, refused for good
        self._load(repo, name, active)

    def _check_present(self, repo: IndexRepository, held: LoadedIndex) -> None:
        """Say so (once) when the version served has lost keys in Redis; and when it is whole again."""
        name = held.meta.name
        missing = repo.missing_keys(held.meta)
        if not missing:
            if self._vanished.pop(name, None) is not None:
                log.info("index %s is whole in Redis again", held.label)
            return
        why = (f"index {held.label} is gone from Redis ({len(missing)} of its keys missing, e.g. {missing[0]}: "
               f"flushed, evicted or deleted); still scoring with the copy held")  # fmt: skip
        if name not in self._vanished:
            log.error("%s; publish it again (framewatch index fit) to keep it", why)
        self._vanished[name] = why

    @staticmethod
    def _same(repo: IndexRepository, held: LoadedIndex) -> bool:
        """False when Redis lost its data and a new index was published under the held version number."""
        try:
            return repo.meta(held.meta.name, held.meta.version) == held.meta
        except (UnknownIndex, CorruptIndex):
            return True  # nothing better to load: keep serving what is held

    def _load(self, repo: IndexRepository, name: str, version: int) -> None:
        try:
            meta, index = repo.load(name, version)
            self._check(meta, repo.load_adapted(meta), repo.load_quantized(meta))
        except (SpecMismatch, CorruptIndex, UnknownIndex) as e:
            self._refuse(name, version, f"index {name} version {version} refused: {e}")
            return
        positional = hasattr(index, "search_grid")  # index_store/positional.py: searched on the CPU
        searcher = self.searcher_for(index) if self.searcher_for is not None and not positional else None
        with self._lock:
            current = dict(self._current)
            current[name] = LoadedIndex(meta, index, searcher)
            self._current = current
        self._refused.pop(name, None)
        self.metrics.index_reloads.labels(name, "loaded").inc()
        self.metrics.index_version.labels(name).set(version)
        log.info("serving index %s version %d (%s, %d vectors)", name, version, meta.kind, meta.n_vectors)

    def _refuse(self, name: str, version: Optional[int], why: str) -> None:
        if self._refused.get(name) == (version, why):
            return  # already reported
        self.metrics.index_reloads.labels(name, "refused").inc()
        self._refused[name] = (version, why)
        log.error("%s; still serving %s", why, self._held_label(name))

    def _held_label(self, name: str) -> str:
        held = self._current.get(name)
        return held.label if held else "nothing"

    def _check(self, meta: IndexMeta, adapted: Optional[bytes] = None, quantized: Optional[bytes] = None) -> None:
        spec = meta.embedder_spec
        if meta.dim != spec.dim:
            raise SpecMismatch(f"index dimension {meta.dim} != {spec.dim} of its backbone {spec.backbone}")
        if self.spec is None:
            self.spec, self.adapted, self.quantized = spec, adapted, quantized
            return
        if spec.fingerprint() != self.spec.fingerprint():
            raise SpecMismatch(
                f"index was built with {spec.label()} (dim {meta.dim}); this worker embeds with "
                f"{self.spec.label()} (dim {self.spec.dim})"
            )

    def _check_policy(self, repo: IndexRepository) -> None:
        """Warn when Redis may evict index keys (the worker keeps serving), and when it no longer may."""
        try:
            risk = repo.eviction_risk()
        except redis.ResponseError:
            risk = None
        if risk is not None and risk != self.eviction_risk:
            log.warning("%s: a publish or any write that reaches maxmemory can remove the index this worker "
                        "serves; set maxmemory-policy noeviction (docs/security.md, Redis)", risk)  # fmt: skip
        elif risk is None and self.eviction_risk is not None:
            log.info("Redis maxmemory-policy no longer evicts index keys")
        self.eviction_risk = risk

    # -- background watcher ---------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="index-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        backoff = 0.5
        while not self._stop.is_set():
            repo: Optional[IndexRepository] = None
            pubsub = None
            try:
                repo = self.repo_factory()
                pubsub = repo.subscribe_events()
                self.refresh(repo)
                if self.on_subscribe is not None:
                    self.on_subscribe()
                if self.redis_error:
                    log.info("redis reachable again")
                self.redis_error = self.watch_error = None
                backoff = 0.5
                while not self._stop.is_set():
                    msg = pubsub.get_message(timeout=self.poll_s)
                    event = parse_event(msg["data"]) if msg else None
                    if event is None or event[0] in self.names:
                        self.refresh(repo)  # on our event, or as the periodic check
                        self.watch_error = None
                    elif self.on_event is not None:
                        self.on_event(event[0])  # another index's activation: per-camera ones follow it
            except redis.AuthenticationError as e:  # a ConnectionError subclass: first
                self.redis_error = f"redis refused the credentials: {e}"
                log.error("%s; serving held indexes, retrying in %.1fs", self.redis_error, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except (redis.ConnectionError, redis.TimeoutError, OSError) as e:
                self.metrics.reconnects.labels("redis").inc()
                self.redis_error = f"redis unreachable: {e}"
                log.warning("%s; serving held indexes, retrying in %.1fs", self.redis_error, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            except Exception as e:  # noqa: BLE001 - the watcher must outlive anything Redis holds
                for name in self.names:
                    self.metrics.index_reloads.labels(name, "error").inc()
                self.watch_error = f"index watcher error: {type(e).__name__}: {e}"
                log.exception("%s; serving held indexes, retrying in %.1fs", self.watch_error, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            finally:
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except Exception:  # noqa: BLE001 - closing a broken connection
                        pass
