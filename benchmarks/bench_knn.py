"""kNN search cost: exact index vs k-means centres (DN2's N/C speed-up), measured side by side.

    .venv/bin/python benchmarks/bench_knn.py [--n 50000] [--dim 512] [--queries 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from index_store.knn import build_exact, build_kmeans


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=2000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    train = rng.normal(size=(args.n, args.dim)).astype(np.float32)
    queries = rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    exact = build_exact(train)
    t_exact = timed(lambda: exact.score(queries))
    print(f"train {args.n} x {args.dim}, {args.queries} queries (best of 3)")
    print(f"{'index':<14}{'fit s':>8}{'search s':>10}{'frames/s':>12}{'speed-up':>10}{'MB':>8}")
    print(f"{'exact':<14}{0:>8.2f}{t_exact:>10.4f}{args.queries / t_exact:>12.0f}{1:>10.1f}{exact.vectors.nbytes / 1e6:>8.1f}")
    for c in (10, 100, 1000):
        t0 = time.perf_counter()
        km = build_kmeans(train, c)
        fit_s = time.perf_counter() - t0
        t = timed(lambda km=km: km.score(queries))
        print(f"{'kmeans C=' + str(c):<14}{fit_s:>8.2f}{t:>10.4f}{args.queries / t:>12.0f}{t_exact / t:>10.1f}{km.vectors.nbytes / 1e6:>8.3f}")


if __name__ == "__main__":
    main()
