"""What each geometry costs per frame: decode + preprocess + embed (+ patch kNN), side by side in one run.

    .venv/bin/python benchmarks/bench_geometry.py [--frames 64] [--rounds 3] [--size 1280x720]

Frames are synthetic 1280x720 JPEGs (framewatch.bench.synthetic_jpegs). Each configuration goes
through the worker's own extractor (worker/extract.py: JPEG draft decoding, the shared
preprocessing, the embedder on the default CPU runtime, as the worker runs it) and, for patch indexes,
the kNN search of every location against a 1000-centre memory; for whole-frame global regions, the search
of each region against an exact memory of ``--train`` frames at its place (index_store/positional.py). Configurations are timed in
alternation, ``--rounds`` times, and the median kept: on a shared machine one run is noise, so
read the ratios to the center crop, not the absolute figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch

from framewatch import bench
from index_store import anomaly_maps, knn
from index_store.build import spec_for
from index_store.embedder import Embedder
from index_store.positional import build_positional
from worker.extract import ImageExtractor

CONFIGS = (  # kind, view, tiles, input size, global regions
    ("global", "center", (1, 1), 224, (1, 1)),
    ("global", "full", (1, 1), 224, (1, 1)),
    ("global", "full", (1, 1), 224, (4, 6)),
    ("global", "full", (2, 2), 160, (1, 1)),
    ("global", "full", (2, 2), 224, (1, 1)),
    ("patch", "center", (1, 1), 224, (1, 1)),
    ("patch", "full", (1, 1), 224, (1, 1)),
    ("patch", "full", (1, 1), 288, (1, 1)),
    ("patch", "full", (2, 2), 224, (1, 1)),
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", default="1280x720")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kinds", default="global,patch", help="comma-separated: which kinds' configurations to run")
    ap.add_argument("--train", type=int, default=500, help="training frames held per region (global regions)")
    ap.add_argument("--runtimes", default="auto", help="comma-separated: auto, torch, openvino (each config per runtime)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    frames = bench.records(bench.synthetic_jpegs(16, (w, h)), args.frames)
    setups = []
    for runtime, (kind, view, tiles, size, regions) in ((r, c) for r in args.runtimes.split(",") for c in CONFIGS
                                                             if c[0] in args.kinds.split(",")):
        spec = spec_for("efficientnet_lite0", "pypi", kind, view)
        if view == "full":
            spec = dataclasses.replace(spec, input_size=size, tiles=tiles, tile_overlap=0.1 if tiles != (1, 1) else 0.0,
                                       regions=regions)  # fmt: skip
        spec = spec.resolved(w, h)
        embedder = Embedder(spec, device="cpu", batch_size=args.batch, runtime=runtime)
        extractor = ImageExtractor(embedder)
        memory = None
        if kind == "patch":
            sample = extractor.embed([extractor.prepare(frames[0])])
            rng = np.random.default_rng(0)
            memory = knn.KnnIndex("kmeans", 2, rng.standard_normal((1000, sample.shape[-1])).astype(np.float32))
        elif spec.n_regions > 1:  # an exact memory of --train frames per region, as `index fit` keeps
            sample = extractor.embed([extractor.prepare(frames[0])])
            rng = np.random.default_rng(0)
            train = rng.standard_normal((args.train, *sample.shape[1:])).astype(np.float32)
            memory = build_positional(train, radius=0)
        setups.append((f"{kind:<6} {embedder.runtime:<8} {spec.geometry_label():<29}", extractor, memory, spec))
    times: dict[str, list[float]] = {name: [] for name, *_ in setups}
    for _ in range(args.rounds):
        for name, extractor, memory, spec in setups:
            t0 = time.perf_counter()
            for start in range(0, len(frames), args.batch):
                batch = [extractor.prepare(f) for f in frames[start : start + args.batch]]
                feats = extractor.embed(batch)
                if memory is not None:
                    anomaly_maps.score_maps(memory, feats, spec)
            times[name].append(len(frames) / (time.perf_counter() - t0))
    first = args.runtimes.split(",")[0]
    base = {kind: statistics.median(times[name]) for name, *_ in setups for kind in args.kinds.split(",")
            if name.startswith(kind) and "center" in name and (first == "auto" or f" {first} " in name)}  # fmt: skip
    print(f"{args.frames} frames of {w}x{h}, batch {args.batch}, {args.threads} threads, median of {args.rounds} rounds")
    print(f"{'kind / runtime / geometry':<52}{'frames/s':>10}{'x center':>10}   (x the first runtime's center crop)")
    for name, *_ in setups:
        fps = statistics.median(times[name])
        print(f"{name:<52}{fps:>10.1f}{fps / base[name.split()[0]]:>10.2f}")


if __name__ == "__main__":
    main()
