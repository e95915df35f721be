"""Candidate versions, scored in the shadow.

A candidate (``index fit --candidate``, ``index recalibrate --candidate``) is
a published version that is not active. For each index a worker serves, it
holds the candidate versions Redis lists, checked as an active version is: the
same embedder as the worker's (spec fingerprint, dimension), well-formed data,
adapted weights that match their sha256. A refused candidate is logged once,
shown on /readyz (readiness is not affected) and never scored.

Each frame is embedded once. After the active version scored it, every
candidate of the same index scores the same embedding, and the record carries
the verdicts in ``shadow`` ([{"version", "score", "threshold", "is_anomaly"}]).
Alerts never fire on them: the alerter and incidents read ``is_anomaly``, the
active version's verdict. A candidate that fails to score leaves the record
without its verdict; it never costs the frame its score.

``refresh`` runs on the IndexSet watcher thread, after each refresh of the
active versions: on an event for the index (a candidate published, a
promotion) and on the periodic check. A promoted candidate becomes the active
version in that refresh and leaves the shadow in this one.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from dataclasses import replace
from typing import Any, Callable, Optional, Sequence

import numpy as np

from index_store.errors import CorruptIndex, SpecMismatch, UnknownIndex
from index_store.knn import KnnIndex, Searcher
from index_store.repository import IndexMeta, IndexRepository
from index_store.spec import EmbedderSpec
from wire.fields import MAX_SHADOW
from wire.records import ScoreRecord
from worker.indexes import LoadedIndex
from worker.metrics import WorkerMetrics
from worker.verdicts import VerdictTally

log = logging.getLogger(__name__)

# worker.scoring.score_frames
ScoreFn = Callable[[LoadedIndex, np.ndarray, list[tuple[int, int]]], Sequence[Any]]


class Candidates:
    """index name -> candidate versions held; read by the scoring thread, replaced whole by the watcher."""

    def __init__(
        self,
        names: list[str],
        spec: Callable[[], Optional[EmbedderSpec]],
        tally: VerdictTally,
        metrics: WorkerMetrics,
        searcher_for: Optional[Callable[[KnnIndex], Searcher]] = None,
    ) -> None:
        """``spec`` is the worker's embedder spec (the active indexes fix it; None until one is loaded)."""
        self.names, self.spec, self.tally, self.metrics = names, spec, tally, metrics
        self.searcher_for = searcher_for
        self._held: dict[str, tuple[LoadedIndex, ...]] = {}
        self._refused: dict[tuple[str, int], str] = {}  # versions are immutable: refused once, for good
        self._failed: set[tuple[str, int]] = set()  # scoring errors already logged
        self._lock = threading.Lock()
        metrics.candidates_held.set_function(lambda: float(sum(len(c) for c in self._held.values())))
        for name in names:
            metrics.candidates_refused.labels(name)
            for verdict in ("anomaly", "normal"):
                metrics.shadow_scored.labels(name, verdict)

    # -- read side --------------------------------------------------------------------------
    def held(self) -> dict[str, list[int]]:
        """index name -> candidate versions scored in the shadow (for the heartbeat and /readyz)."""
        return {name: [c.meta.version for c in held] for name, held in self._held.items()}

    def problems(self) -> list[str]:
        return list(self._refused.values())

    # -- loading (watcher thread) -----------------------------------------------------------------
    def refresh(self, repo: IndexRepository) -> None:
        """Hold exactly the versions Redis lists as candidates of each index (once the worker's spec is known)."""
        spec = self.spec()
        if spec is None:
            return
        held: dict[str, tuple[LoadedIndex, ...]] = {}
        listed: set[tuple[str, int]] = set()
        for name in self.names:
            have = {c.meta.version: c for c in self._held.get(name, ())}
            kept = []
            for version in repo.candidates(name):
                listed.add((name, version))
                loaded = have.get(version) or self._load(repo, name, version, spec)
                if loaded is not None:
                    kept.append(loaded)
            if kept:
                held[name] = tuple(kept)
        for name, was in self._held.items():
            for c in was:
                if (name, c.meta.version) not in listed:
                    log.info("candidate %s left the shadow (promoted or withdrawn)", c.label)
        with self._lock:
            self._held = held
        self._refused = {k: why for k, why in self._refused.items() if k in listed}

    def _load(self, repo: IndexRepository, name: str, version: int,
              spec: EmbedderSpec) -> Optional[LoadedIndex]:  # fmt: skip
        if (name, version) in self._refused:
            return None
        try:
            meta, index = repo.load(name, version)
            _check_embedder(meta, spec)
            repo.load_adapted(meta)  # weights whole and matching their sha256, as an active version's
        except (SpecMismatch, CorruptIndex, UnknownIndex) as e:
            why = f"candidate {name}@{version} refused, not scored in the shadow: {e}"
            self._refused = {**self._refused, (name, version): why}  # replaced whole: /readyz reads it
            self.metrics.candidates_refused.labels(name).inc()
            log.error("%s", why)
            return None
        positional = hasattr(index, "search_grid")  # searched on the CPU, as an active one
        searcher = self.searcher_for(index) if self.searcher_for is not None and not positional else None
        log.info("scoring candidate %s@%d in the shadow (%s, %d vectors, threshold %s)", name, version, meta.kind,
                 meta.n_vectors, meta.threshold)  # fmt: skip
        return LoadedIndex(meta, index, searcher)

    # -- scoring (embed stage's thread) -------------------------------------------------------------
    def shadow(
        self, records: list[ScoreRecord], embeddings: np.ndarray, sizes: list[tuple[int, int]], score: ScoreFn
    ) -> list[ScoreRecord]:
        """``records`` with the verdicts of their index's candidates on the same ``embeddings`` (row i is
        record i's frame), all of them counted in the tally."""
        held = self._held
        rows: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(records):
            if r.index_name in held:
                rows[r.index_name].append(i)
        verdicts: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for name, idx in rows.items():
            for cand in held[name][:MAX_SHADOW]:
                for i, entry in zip(idx, self._score(cand, embeddings[idx], [sizes[i] for i in idx], score)):
                    if entry is not None and records[i].index_version != cand.meta.version:
                        verdicts[i].append(entry)
        out = [replace(r, shadow=verdicts[i]) if verdicts.get(i) else r for i, r in enumerate(records)]
        for i, entries in verdicts.items():
            for v in entries:
                verdict = "anomaly" if v["is_anomaly"] else "normal"
                self.metrics.shadow_scored.labels(records[i].index_name, verdict).inc()
        self.tally.add(out)
        return out

    def _score(self, cand: LoadedIndex, feats: np.ndarray, sizes: list[tuple[int, int]],
               score: ScoreFn) -> list[Optional[dict[str, Any]]]:  # fmt: skip
        """One verdict per row; None where the candidate gave no finite score. Never raises."""
        try:
            whys = score(cand, feats, sizes)
        except Exception as e:  # noqa: BLE001 - a candidate must never cost a frame its score
            if (cand.meta.name, cand.meta.version) not in self._failed:
                self._failed.add((cand.meta.name, cand.meta.version))
                log.error("candidate %s failed to score (its verdicts are left out): %s: %s", cand.label,
                          type(e).__name__, e)  # fmt: skip
            return [None] * len(feats)
        threshold = cand.meta.threshold
        return [
            {"version": cand.meta.version, "score": float(w.score), "threshold": threshold,
             "is_anomaly": bool(threshold is not None and w.score > threshold)}
            if math.isfinite(w.score) else None
            for w in whys
        ]  # fmt: skip


def _check_embedder(meta: IndexMeta, spec: EmbedderSpec) -> None:
    """The check IndexSet makes of an active version: the worker embeds once, with its own spec."""
    own = meta.embedder_spec
    if meta.dim != own.dim:
        raise SpecMismatch(f"index dimension {meta.dim} != {own.dim} of its backbone {own.backbone}")
    if own.fingerprint() != spec.fingerprint():
        raise SpecMismatch(f"built with {own.label()} (dim {meta.dim}); this worker embeds with {spec.label()} "
                           f"(dim {spec.dim})")  # fmt: skip
