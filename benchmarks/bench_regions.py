"""What a whole-frame global index's regions cost in kNN search and memory, against one vector per frame.

    .venv/bin/python benchmarks/bench_regions.py [--dim 1280] [--frames 100,800] [--batch 32]

Random vectors (the search cost does not depend on their values): an exact one-vector index of T frames
against 4x6 regions of T frames, exact per region and 32 k-means centres per region (a stream fit's
default), scored in batches as the worker scores them (anomaly_maps.score_maps); best of 3 rounds, one
after the other. The model's time is the same for all three (one forward pass, pooled differently):
see bench_geometry.py for it.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from index_store import anomaly_maps, knn
from index_store.positional import build_positional


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=1280)
    ap.add_argument("--frames", default="100,800")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--regions", default="4x6")
    args = ap.parse_args()
    r, c = (int(v) for v in args.regions.split("x"))
    rng = np.random.default_rng(0)
    print(f"{'training frames':>16} {'memory':<22} {'ms / frame':>10} {'MiB':>8}")
    for t in (int(v) for v in args.frames.split(",")):
        train = rng.standard_normal((t, r, c, args.dim)).astype(np.float32)
        one = knn.build_exact(train[:, 0, 0], 2)
        grids = rng.standard_normal((args.batch, r, c, args.dim)).astype(np.float32)
        setups = {
            "one vector, exact": (one, grids[:, 0, 0], one.vectors.nbytes),
            f"regions {args.regions}, exact": (m := build_positional(train, 0), grids, m.nbytes),
            f"regions {args.regions}, 32/region": (k := build_positional(train, 0, "kmeans", 32), grids, k.nbytes),
        }
        best = {name: float("inf") for name in setups}
        for _ in range(3):
            for name, (index, q, _) in setups.items():
                t0 = time.perf_counter()
                anomaly_maps.score_maps(index, q) if q.ndim == 4 else index.score(q)
                best[name] = min(best[name], time.perf_counter() - t0)
        for name, (_, _, nbytes) in setups.items():
            print(f"{t:>16} {name:<22} {1000 * best[name] / args.batch:>10.2f} {nbytes / 2**20:>8.1f}")


if __name__ == "__main__":
    main()
