"""Position-aware patch memory cost: build time, bytes and search time per frame, per memory kind.

    .venv/bin/python benchmarks/bench_positional.py [--grid 28x48 --train 200 --dim 256 --radius 1,2 --per-cell 16]

Random features at the size of a whole-frame 16:9 patch grid (see index_store/positional.py).
Search is timed for one frame alone and per frame in a batch of ``--batch``; the last line is
today's location-free patch memory (1000 k-means centres, ``knn.py``) on the same grid, for scale.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from index_store.knn import KnnIndex
from index_store.positional import build_positional


def best_of(fn, repeat: int = 3) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default="28x48")
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--radius", default="1,2")
    ap.add_argument("--per-cell", default="16", help="C per cell for kmeans and coreset, comma separated")
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    h, w = (int(x) for x in args.grid.split("x"))
    rng = np.random.default_rng(0)
    train = rng.standard_normal((args.train, h, w, args.dim), dtype=np.float32)
    queries = rng.standard_normal((args.batch, h, w, args.dim), dtype=np.float32)
    kinds = [("exact", 0)] + [(k, int(c)) for c in args.per_cell.split(",") for k in ("kmeans", "coreset")]
    print(f"grid {h}x{w}, T {args.train}, D {args.dim}; search: best of 3, ms per frame")
    print(f"{'memory':<14}{'R':>3}{'build s':>9}{'MB':>9}{'1 frame':>10}{f'batch {args.batch}':>10}")
    for kind, c in kinds:
        t0 = time.perf_counter()
        memory = build_positional(train, 0, kind, c)
        build_s = time.perf_counter() - t0
        vectors, meta = memory.to_arrays()
        for r in (int(x) for x in args.radius.split(",")):
            m = type(memory).from_arrays(vectors, {**meta, "radius": r})
            one = best_of(lambda m=m: m.search_grid(queries[:1])) * 1e3
            many = best_of(lambda m=m: m.search_grid(queries)) * 1e3 / args.batch
            name = kind if kind == "exact" else f"{kind} C={c}"
            print(f"{name:<14}{r:>3}{build_s:>9.2f}{memory.nbytes / 1e6:>9.1f}{one:>10.1f}{many:>10.1f}")
    free = KnnIndex("kmeans", 2, rng.standard_normal((1000, args.dim), dtype=np.float32))
    one = best_of(lambda: free.search(queries[0].reshape(-1, args.dim))) * 1e3
    many = best_of(lambda: free.search(queries.reshape(-1, args.dim))) * 1e3 / args.batch
    print(
        f"{'knn.py C=1000':<14}{'-':>3}{'':>9}{free.vectors.nbytes / 1e6:>9.1f}{one:>10.1f}{many:>10.1f}"
        "   (location-free: today's patch default)"
    )


if __name__ == "__main__":
    main()
