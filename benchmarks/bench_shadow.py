"""What shadow scoring costs the scoring step (worker/candidates.py), measured side by side in one run.

    PYTHONPATH=. OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_shadow.py [--vectors 1000] [--rounds 200]

Three scorers take the same batches of 32 frames, in turn: no shadow step, the shadow step with no candidate
(the tally alone), and one candidate of the active index's size. Embeddings are random (the embedder is left
out: it runs once per frame whatever the shadow does), so the figures are the kNN searches and record building.
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Optional

import numpy as np
from prometheus_client import CollectorRegistry

from index_store.knn import build_exact
from index_store.repository import IndexMeta
from index_store.spec import EmbedderSpec
from wire.records import FrameRecord
from worker.candidates import Candidates
from worker.indexes import LoadedIndex
from worker.inflight import InFlight
from worker.metrics import WorkerMetrics
from worker.routing import Routing
from worker.scoring import Scorer
from worker.verdicts import VerdictTally

SPEC = EmbedderSpec("resnet18", "random:0", resize=64, crop=64)
BATCH = 32


class RandomEmbedder:
    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def embed(self, prepared: list[Any]) -> np.ndarray:
        return self.rng.normal(size=(len(prepared), SPEC.dim)).astype(np.float32)


class OneCandidate:
    """The reads Candidates.refresh makes, for one candidate version (or none)."""

    def __init__(self, loaded: Optional[LoadedIndex]) -> None:
        self.loaded = loaded

    def candidates(self, name: str) -> list[int]:
        return [self.loaded.meta.version] if self.loaded else []

    def load(self, name: str, version: int) -> tuple[IndexMeta, Any]:
        assert self.loaded is not None
        return self.loaded.meta, self.loaded.index

    def load_adapted(self, meta: IndexMeta) -> None:
        return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--vectors", type=int, default=1000, help="vectors of the active index and the candidate")
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    rng = np.random.default_rng(0)

    def loaded(version: int) -> LoadedIndex:
        meta = IndexMeta(name="idx", kind="exact", k=2, dim=SPEC.dim, n_vectors=args.vectors, spec=SPEC.to_dict(),
                         version=version, threshold=float(SPEC.dim))  # fmt: skip
        return LoadedIndex(meta, build_exact(rng.normal(size=(args.vectors, SPEC.dim)).astype(np.float32)))

    def scorer(candidate: Optional[bool]) -> Scorer:
        if candidate is None:
            return Scorer(RandomEmbedder(rng), Routing.parse("idx"))
        shadow = Candidates(["idx"], lambda: SPEC, VerdictTally(), WorkerMetrics(CollectorRegistry()))
        shadow.refresh(OneCandidate(loaded(2) if candidate else None))  # type: ignore[arg-type]
        return Scorer(RandomEmbedder(rng), Routing.parse("idx"), shadow=shadow)

    active = {"idx": loaded(1)}
    variants = {"no shadow step": scorer(None), "shadow, no candidate": scorer(False), "one candidate": scorer(True)}
    frames = [InFlight.decoded(FrameRecord(f"f{i}", "cam", i, time.time(), b"x"), None, offset=i)
              for i in range(BATCH)]  # fmt: skip
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.rounds):
        for name, s in variants.items():
            t0 = time.perf_counter()
            s.score(frames, active)
            times[name].append(time.perf_counter() - t0)
    print(f"exact index of {args.vectors} x {SPEC.dim} vectors, batches of {BATCH}, {args.rounds} rounds")
    for name, ts in times.items():
        per_frame = np.array(ts[5:]) * 1000 / BATCH
        print(f"{name:<22} median {np.median(per_frame):.3f} ms/frame (p90 {np.percentile(per_frame, 90):.3f})")


if __name__ == "__main__":
    main()
