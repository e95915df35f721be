"""The Redis repository of index versions.

An index is a name with numbered, immutable versions and one "active"
pointer. Vectors are raw little-endian float32 bytes (chunked below Redis's
512 MB value limit) with a JSON metadata record; nothing is pickled.
Publishing a version and switching the pointer happen in one MULTI/EXEC, and
every activation is announced on the events channel. A fine-tuned version also
holds its adapted weights (a safetensors blob, chunked the same way, written in
the same MULTI/EXEC); the spec's ``adapted_sha256`` pins them. An int8 version
holds its quantized model likewise, pinned by the spec's ``quantized_sha256``.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Mapping, Optional

import numpy as np
import redis

from index_store.errors import CorruptIndex, IndexStoreError, PublishFailed, UnknownIndex
from index_store.keys import Keys
from index_store.knn import KnnIndex
from index_store.meta import META_SCHEMA, IndexMeta  # noqa: F401 - IndexMeta is imported from here too
from index_store.redis_policy import eviction_risk, maxmemory_policy, require_safe_policy
from index_store.validation import check_index


class NotACandidate(IndexStoreError):
    """``promote`` names a version that was not published as a candidate (or was promoted already)."""


CHUNK_BYTES = 64 * 1024 * 1024
@dataclass(frozen=True)
class VerdictCount:
    """Frames a version scored, how many it called anomalous, and how many of the same frames the active
    version called anomalous (for the active version itself: its own alarms)."""

    scored: int = 0
    alarms: int = 0
    active_alarms: int = 0

    @property
    def rate(self) -> Optional[float]:
        return self.alarms / self.scored if self.scored else None

    @property
    def active_rate(self) -> Optional[float]:
        return self.active_alarms / self.scored if self.scored else None


VERDICT_TTL_S = 2 * 86_400  # per-hour verdict counters expire this long after their last write


@dataclass(frozen=True)
class IndexSummary:
    name: str
    versions: list[int]
    active: Optional[int]
    meta: Optional[IndexMeta]  # of the active version (or the newest)


def vectors_to_bytes(vectors: np.ndarray) -> bytes:
    return np.ascontiguousarray(vectors, dtype="<f4").tobytes()


class IndexRepository:
    """Index versions in Redis. Takes a connected ``redis.Redis`` (bytes responses)."""

    def __init__(self, client: redis.Redis, prefix: str = "framewatch") -> None:
        self.r = client
        self.keys = Keys(prefix)

    def eviction_risk(self) -> Optional[str]:
        """Why Redis's maxmemory-policy could evict index keys, or None when it cannot (or will not say).

        :raises redis.ResponseError: CONFIG GET is refused and the policy cannot be read otherwise."""
        return eviction_risk(maxmemory_policy(self.r))

    def require_safe_policy(self) -> None:
        """:raises EvictionUnsafe: Redis could evict index keys (index_store/redis_policy.py)."""
        require_safe_policy(self.r)

    # -- writing -----------------------------------------------------------------
    def publish(
        self,
        meta: IndexMeta,
        index: KnnIndex,
        activate: bool = True,
        adapted: Optional[bytes] = None,
        candidate: bool = False,
        quantized: Optional[bytes] = None,
    ) -> IndexMeta:
        """Store a new immutable version of ``meta.name``; optionally make it active, atomically.
        ``candidate``: publish it inactive and list it among the name's candidates (``promote`` activates it).
        ``adapted``, ``quantized``: the fine-tuned weights and the int8 model the spec names (by sha256).

        :raises CorruptIndex: before anything is written, for data no worker could serve (no vectors,
            non-finite values, a shape that disagrees with the metadata, an unknown kind).
        :raises EvictionUnsafe: before anything is written, when Redis could evict index keys.
        :raises PublishFailed: Redis refused the write (out of memory) or went away; the MULTI/EXEC
            wrote all or nothing, so the active version is unchanged (a version number may be used up).
        """
        vectors, layout = index.to_arrays() if hasattr(index, "to_arrays") else (index.vectors, {})
        check_index(replace(meta, n_vectors=len(vectors)), index.memory, vectors)
        weights = _blob_chunks(meta, adapted, ADAPTED)
        int8 = _blob_chunks(meta, quantized, QUANTIZED)
        try:
            require_safe_policy(self.r)
            return self._publish(meta, vectors, layout, activate and not candidate, weights, candidate, int8)
        except redis.RedisError as e:
            raise PublishFailed(f"index {meta.name!r} not published, the active version is unchanged: "
                                f"Redis: {type(e).__name__}: {e}") from e

    def _publish(
        self, meta: IndexMeta, vectors: np.ndarray, layout: dict[str, Any], activate: bool, weights: list[bytes],
        candidate: bool = False, int8: Optional[list[bytes]] = None,
    ) -> IndexMeta:
        adapted_bytes = sum(len(w) for w in weights)
        int8 = int8 or []
        blob = vectors_to_bytes(vectors)
        chunks = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
        version = int(self.r.incr(self.keys.counter(meta.name)))
        meta = IndexMeta(
            **{
                **asdict(meta),
                "version": version,
                "n_vectors": len(vectors),
                "layout": layout,
                "created_at": meta.created_at or time.time(),
                "sha256": hashlib.sha256(blob).hexdigest(),
                "n_chunks": len(chunks),
                "adapted_chunks": len(weights),
                "adapted_bytes": adapted_bytes,
                "quantized_chunks": len(int8),
                "quantized_bytes": sum(len(c) for c in int8),
            }
        )
        pipe = self.r.pipeline(transaction=True)
        for i, chunk in enumerate(chunks):
            pipe.set(self.keys.chunk(meta.name, version, i), chunk)
        for i, chunk in enumerate(weights):
            pipe.set(self.keys.adapted_chunk(meta.name, version, i), chunk)
        for i, chunk in enumerate(int8):
            pipe.set(self.keys.quantized_chunk(meta.name, version, i), chunk)
        pipe.set(self.keys.meta(meta.name, version), meta.to_json())
        pipe.zadd(self.keys.versions(meta.name), {str(version): meta.created_at})
        pipe.sadd(self.keys.names, meta.name)
        if candidate:
            pipe.sadd(self.keys.candidates(meta.name), version)
            pipe.publish(self.keys.events, _event(meta.name, version, candidate=True))  # workers shadow it
        elif activate:
            pipe.set(self.keys.active(meta.name), version)
            pipe.publish(self.keys.events, _event(meta.name, version))
        pipe.execute()
        return meta

    def activate(self, name: str, version: int) -> None:
        """Point ``name`` at an existing ``version`` (WATCH/MULTI so a concurrent delete can't interleave)."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.watch(self.keys.meta(name, version))
            if not pipe.exists(self.keys.meta(name, version)):
                pipe.reset()
                raise UnknownIndex(name, version)
            pipe.multi()
            pipe.set(self.keys.active(name), version)
            pipe.srem(self.keys.candidates(name), version)  # an activated candidate is a candidate no more
            pipe.publish(self.keys.events, _event(name, version))
            pipe.execute()

    def promote(self, name: str, version: int) -> None:
        """Make candidate ``version`` active and no longer a candidate, in one MULTI/EXEC.

        :raises UnknownIndex: no such version. :raises NotACandidate: it was not published as a candidate.
        """
        with self.r.pipeline(transaction=True) as pipe:
            pipe.watch(self.keys.meta(name, version), self.keys.candidates(name))
            if not pipe.exists(self.keys.meta(name, version)):
                pipe.reset()
                raise UnknownIndex(name, version)
            if not pipe.sismember(self.keys.candidates(name), str(version)):
                pipe.reset()
                raise NotACandidate(f"index {name!r} version {version} is not a candidate "
                                    f"(candidates: {self.candidates(name) or 'none'}); `index activate` switches to any version")  # fmt: skip
            pipe.multi()
            pipe.set(self.keys.active(name), version)
            pipe.srem(self.keys.candidates(name), version)
            pipe.publish(self.keys.events, _event(name, version))
            pipe.execute()

    # -- reading -----------------------------------------------------------------
    def candidates(self, name: str) -> list[int]:
        """Versions published with ``candidate=True`` and not promoted yet, ascending. Publishing one announces
        it on the events channel, and workers score it in the shadow (worker/candidates.py) until promoted;
        ``count_verdicts`` below holds what each version called anomalous (``framewatch index status``)."""
        return sorted(int(v) for v in self.r.smembers(self.keys.candidates(name)))

    def active_version(self, name: str) -> Optional[int]:
        raw = self._get(self.keys.active(name))
        if raw is None:
            return None
        try:
            version = int(raw)
        except ValueError:
            version = 0
        if version < 1:
            raise CorruptIndex(f"the active pointer of index {name!r} holds {raw[:40]!r}, not a version number")
        return version

    def active_versions(self, names: list[str]) -> dict[str, Optional[int]]:
        """The active version of each name (None: none, or a pointer that is not a version), in one round
        trip: a worker checking its thousands of per-camera indexes after a reconnect."""
        pipe = self.r.pipeline(transaction=False)
        for name in names:
            pipe.get(self.keys.active(name))
        raw = pipe.execute() if names else []
        return {n: int(v) if isinstance(v, bytes) and v.isdigit() else None for n, v in zip(names, raw)}

    def meta(self, name: str, version: Optional[int] = None) -> IndexMeta:
        version = self._resolve(name, version)
        raw = self._get(self.keys.meta(name, version))
        if raw is None:
            raise UnknownIndex(name, version)
        return IndexMeta.from_json(raw)

    def _get(self, key: str) -> Optional[bytes]:
        """GET that reports a key of the wrong type (someone wrote over ours) as a corrupt index."""
        try:
            return self.r.get(key)  # type: ignore[return-value]
        except redis.ResponseError as e:
            raise CorruptIndex(f"Redis key {key} is not what framewatch wrote there: {e}") from e

    def load(self, name: str, version: Optional[int] = None) -> tuple[IndexMeta, KnnIndex]:
        """The metadata and index of ``version`` (default: the active one), integrity-checked."""
        meta = self.meta(name, version)
        if meta.n_chunks < 1:
            raise CorruptIndex(f"index {name!r} version {meta.version} has no vector chunks")
        try:
            parts = self.r.mget([self.keys.chunk(name, meta.version, i) for i in range(meta.n_chunks)])
        except redis.ResponseError as e:
            raise CorruptIndex(f"index {name!r} version {meta.version}: vector chunks unreadable: {e}") from e
        if any(p is None or not isinstance(p, bytes) for p in parts):
            raise CorruptIndex(f"index {name!r} version {meta.version} is missing vector chunks")
        blob = b"".join(parts)  # type: ignore[arg-type]
        if hashlib.sha256(blob).hexdigest() != meta.sha256:
            raise CorruptIndex(f"index {name!r} version {meta.version}: vectors fail their checksum")
        expected = meta.n_vectors * meta.dim * 4
        if len(blob) != expected:
            raise CorruptIndex(f"index {name!r} version {meta.version}: {len(blob)} bytes, expected {expected}")
        vectors = np.frombuffer(blob, dtype="<f4").reshape(meta.n_vectors, meta.dim).astype(np.float32)
        check_index(meta, meta.kind, vectors)
        if meta.layout:
            from index_store.positional import PositionalError, PositionalMemory

            try:
                return meta, PositionalMemory.from_arrays(vectors, meta.layout)  # type: ignore[return-value]
            except PositionalError as e:
                raise CorruptIndex(f"index {name!r} version {meta.version}: {e}") from e
        return meta, KnnIndex(meta.kind, meta.k, vectors)

    def load_adapted(self, meta: IndexMeta) -> Optional[bytes]:
        """The adapted weights of a fine-tuned version (None if it is not one), checked against their sha256."""
        return self._load_blob(meta, ADAPTED)

    def load_quantized(self, meta: IndexMeta) -> Optional[bytes]:
        """The int8 model of an int8 version (None if it is not one), checked against its sha256."""
        return self._load_blob(meta, QUANTIZED)

    def _load_blob(self, meta: IndexMeta, blob: "_Blob") -> Optional[bytes]:
        expected = str(meta.spec.get(blob.spec_field) or "")
        if not expected:
            return None
        where = f"index {meta.name!r} version {meta.version}"
        n_chunks = getattr(meta, blob.chunks_field)
        if n_chunks < 1:
            raise CorruptIndex(f"{where} is {blob.kind} but holds no {blob.what}")
        keys = [blob.key(self.keys, meta.name, meta.version, i) for i in range(n_chunks)]
        try:
            parts = self.r.mget(keys)
        except redis.ResponseError as e:
            raise CorruptIndex(f"{where}: {blob.what} unreadable: {e}") from e
        if any(p is None or not isinstance(p, bytes) for p in parts):
            raise CorruptIndex(f"{where} is missing chunks of its {blob.what}")
        data = b"".join(parts)  # type: ignore[arg-type]
        if hashlib.sha256(data).hexdigest() != expected:
            raise CorruptIndex(f"{where}: {blob.what} {blob.fails} sha256 (expected {expected[:12]}...): "
                               "refusing to embed with another model than the fitted one")  # fmt: skip
        return data

    def missing_keys(self, meta: IndexMeta) -> list[str]:
        """The keys serving ``meta``'s version needs (pointer, metadata, chunks) that are gone from Redis:
        flushed, evicted or deleted. Empty while the version is whole."""
        keys = [self.keys.active(meta.name), self.keys.meta(meta.name, meta.version)]
        keys += [self.keys.chunk(meta.name, meta.version, i) for i in range(meta.n_chunks)]
        keys += [self.keys.adapted_chunk(meta.name, meta.version, i) for i in range(meta.adapted_chunks)]
        keys += [self.keys.quantized_chunk(meta.name, meta.version, i) for i in range(meta.quantized_chunks)]
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.exists(key)
        return [key for key, n in zip(keys, pipe.execute()) if not n]

    def has_index(self, name: str) -> bool:
        """Whether ``name`` has any version (active or candidate): what ``framewatch learn`` leaves alone."""
        return bool(self.r.exists(self.keys.versions(name)))

    # -- what `framewatch learn` is doing, per camera (JSON records, never pickles) --------------
    def save_learning(self, records: dict[str, dict[str, Any]]) -> None:
        """Write these cameras' learning records (camera -> JSON-able dict) in one round trip."""
        if records:
            mapping = {k: json.dumps(v, sort_keys=True) for k, v in records.items()}
            self.r.hset(self.keys.learn_cameras, mapping=mapping)  # type: ignore[arg-type]

    def learning(self) -> dict[str, dict[str, Any]]:
        """Every camera's learning record; one that is not a JSON object is skipped."""
        out: dict[str, dict[str, Any]] = {}
        for raw_key, raw in self.r.hgetall(self.keys.learn_cameras).items():
            try:
                record = json.loads(raw)
            except ValueError:
                continue
            if isinstance(record, dict):
                out[raw_key.decode("utf-8", "replace")] = record
        return out

    def names(self) -> list[str]:
        """Every index name stored, sorted, undecodable bytes replaced (``index list`` shows even malformed ones)."""
        return sorted(raw.decode("utf-8", "replace") for raw in self.r.smembers(self.keys.names))

    def raw_value(self, key: str) -> Optional[bytes]:
        """The bytes under one of this prefix's keys, unparsed (for diagnostics); ResponseError when it
        holds another type."""
        return self.r.get(key)  # type: ignore[return-value]

    def delete_all(self) -> int:
        """Delete every key under this prefix (the demo removes its own run's data); how many."""
        keys = list(self.r.scan_iter(match=f"{self.keys.prefix}:*", count=1000))
        return int(self.r.delete(*keys)) if keys else 0

    # -- index events (the worker's watcher) ---------------------------------------------------------
    def subscribe_events(self) -> Any:
        """A pub/sub subscribed to the events channel (activations); the caller closes it."""
        pubsub = self.r.pubsub(ignore_subscribe_messages=True)
        try:
            pubsub.subscribe(self.keys.events)
        except BaseException:
            pubsub.close()
            raise
        return pubsub

    # -- review answers (review/answers.py) ----------------------------------------------------------
    def put_answer(self, key: str, field: str, body: str) -> None:
        """One reviewer's answer (JSON) under ``field`` of the answers hash ``key``."""
        self.r.hset(key, field, body)

    def answers(self, key: str) -> dict[bytes, bytes]:
        """Field -> answer (JSON bytes) of the answers hash ``key``."""
        return self.r.hgetall(key)  # type: ignore[return-value]

    def review_lock(self, index: str, timeout_s: float) -> Any:
        """The lock that serialises absorbing marked frames into ``index`` (it expires: a crashed holder
        cannot wedge it); acquire and release it."""
        return self.r.lock(self.keys.review_lock(index), timeout=timeout_s)

    # -- worker heartbeats (worker/heartbeat.py; `framewatch status`) --------------------------------
    def write_health(self, worker_id: str, body: str, ttl_s: float) -> None:
        """One worker's heartbeat, expiring after ``ttl_s``."""
        self.r.set(self.keys.health(worker_id), body, px=int(ttl_s * 1000))

    def clear_health(self, worker_id: str) -> None:
        self.r.delete(self.keys.health(worker_id))

    def read_health(self) -> list[bytes]:
        """Every live worker's heartbeat, as stored (one that expired between SCAN and GET is left out)."""
        out = []
        for key in self.r.scan_iter(match=self.keys.health_pattern, count=100):
            raw = self.r.get(key)
            if raw is not None:
                out.append(raw)
        return out

    def versions(self, name: str) -> list[int]:
        return sorted(int(v) for v in self.r.zrange(self.keys.versions(name), 0, -1))

    def list(self) -> list[IndexSummary]:
        out = []
        for raw in sorted(self.r.smembers(self.keys.names)):
            name = raw.decode()
            versions = self.versions(name)
            active = self.active_version(name)
            shown = active if active is not None else (versions[-1] if versions else None)
            meta = self.meta(name, shown) if shown is not None else None
            out.append(IndexSummary(name, versions, active, meta))
        return out

    # -- verdict counts (alarm rates of active and candidate versions; `index status`) -----------
    def count_verdicts(self, counts: Mapping[tuple[str, int, int], VerdictCount]) -> None:
        """Add (name, version, epoch minute) -> counts to the per-minute counters, in one round trip.
        HINCRBY adds, so every worker of a group adds its own frames to the same counters."""
        pipe = self.r.pipeline(transaction=False)
        for (name, version, minute), c in counts.items():
            key = self.keys.verdicts(name, version, minute // 60)
            for what, n in (("scored", c.scored), ("alarms", c.alarms), ("active", c.active_alarms)):
                if n:
                    pipe.hincrby(key, f"{minute}:{what}", n)
            pipe.expire(key, VERDICT_TTL_S)
        pipe.execute()

    def verdicts(self, name: str, versions: Iterable[int], since_s: float, now: float) -> dict[int, VerdictCount]:
        """Each version's counts over the minutes from ``now - since_s`` to ``now`` (whole minutes)."""
        first, last = int((now - since_s) // 60), int(now // 60)
        versions = list(versions)
        pipe = self.r.pipeline(transaction=False)
        for v in versions:
            for hour in range(first // 60, last // 60 + 1):
                pipe.hgetall(self.keys.verdicts(name, v, hour))
        replies = iter(pipe.execute())
        out: dict[int, VerdictCount] = {}
        for v in versions:
            total = {"scored": 0, "alarms": 0, "active": 0}
            for _ in range(first // 60, last // 60 + 1):
                for field_, n in next(replies).items():
                    minute, _, what = field_.decode().partition(":")
                    if what in total and minute.isdigit() and first <= int(minute) <= last:
                        total[what] += int(n)
            out[v] = VerdictCount(total["scored"], total["alarms"], total["active"])
        return out

    def _resolve(self, name: str, version: Optional[int]) -> int:
        if version is not None:
            return version
        active = self.active_version(name)
        if active is None:
            raise UnknownIndex(name)
        return active


@dataclass(frozen=True)
class _Blob:
    """A model artefact a version may hold besides its vectors, named by a sha256 in its spec."""

    spec_field: str
    chunks_field: str
    kind: str  # what a version holding it is
    what: str  # what it is
    fails: str  # "<what> <fails> sha256"
    key: Any  # (keys, name, version, i) -> the Redis key of chunk i


ADAPTED = _Blob("adapted_sha256", "adapted_chunks", "fine-tuned", "adapted weights", "fail their",
                lambda k, n, v, i: k.adapted_chunk(n, v, i))  # fmt: skip
QUANTIZED = _Blob("quantized_sha256", "quantized_chunks", "int8", "int8 model", "fails its",
                  lambda k, n, v, i: k.quantized_chunk(n, v, i))  # fmt: skip


def _blob_chunks(meta: IndexMeta, data: Optional[bytes], blob: _Blob) -> list[bytes]:
    """The artefact in chunks; CorruptIndex unless it matches the sha256 the spec names."""
    expected = str(meta.spec.get(blob.spec_field) or "")
    if not expected and data is None:
        return []
    if data is None or not expected:
        raise CorruptIndex(f"index {meta.name!r}: the {blob.what} and a {blob.kind} spec come together, "
                           f"got {blob.what if data else f'a {blob.kind} spec'} only")  # fmt: skip
    if hashlib.sha256(data).hexdigest() != expected:
        raise CorruptIndex(f"index {meta.name!r}: the {blob.what} and the spec's {blob.spec_field} disagree")
    return [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]


def _event(name: str, version: int, candidate: bool = False) -> str:
    return json.dumps({"name": name, "version": version, **({"candidate": True} if candidate else {})})


def parse_event(raw: bytes | str) -> Optional[tuple[str, int]]:
    """(name, version) from an events-channel message; None if it is not one of ours."""
    try:
        data = json.loads(raw)
        return str(data["name"]), int(data["version"])
    except (ValueError, KeyError, TypeError):
        return None
