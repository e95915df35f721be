"""CPU cost per frame, global vs patch index: embedding (preprocess included) + kNN search + "why".

    .venv/bin/python benchmarks/bench_patch.py [--backbone efficientnet_lite0] [--train 100] [--frames 32]

Each kind is fit on ``--train`` frames, then ``--frames`` new 640x480 frames
are embedded in batches of ``--batch`` and scored through the worker's own
function (``worker.scoring.score_frames``: the score plus hotspot and encoded
map for patch indexes, nearest-frame origins for global ones). The two kinds
are timed in alternation, ``--rounds`` times, and the fastest round is kept:
on a shared machine that is the closest to the cost of the work itself.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np
import torch
from PIL import Image

from index_store import fitting
from index_store.embedder import Embedder
from index_store.repository import IndexMeta
from index_store.spec import default_spec
from worker.indexes import LoadedIndex
from worker.scoring import score_frames


def frames(n: int, seed: int) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).resize((640, 480), Image.BILINEAR)
        for _ in range(n)
    ]


def embed_all(emb: Embedder, images: list[Image.Image]) -> tuple[float, list[np.ndarray]]:
    t0 = time.perf_counter()
    feats = [emb.embed(images[i : i + emb.batch_size]) for i in range(0, len(images), emb.batch_size)]
    return time.perf_counter() - t0, feats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--weights", default=None, help="default: the backbone's pretrained weights")
    ap.add_argument("--train", type=int, default=100)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    train_imgs, test_imgs = frames(args.train, 0), frames(args.frames, 1)
    n = len(test_imgs)
    print(f"torch threads {torch.get_num_threads()}, {args.train} training frames, {n} scored, "
          f"batch {args.batch}, 640x480, best of {args.rounds} rounds")  # fmt: skip
    embedders = {}
    for kind in ("global", "patch"):
        spec = default_spec(args.backbone, kind)
        if args.weights:
            spec = dataclasses.replace(spec, weights=args.weights)
        embedders[kind] = Embedder(spec, device="cpu", batch_size=args.batch)
        embedders[kind].embed(test_imgs[: args.batch])  # warm-up
    best = {kind: float("inf") for kind in embedders}
    feats: dict[str, list[np.ndarray]] = {}
    for _ in range(args.rounds):
        for kind, emb in embedders.items():
            seconds, feats[kind] = embed_all(emb, test_imgs)
            best[kind] = min(best[kind], seconds)
    print(
        f"{'kind':<8}{'index':<14}{'vectors':>9}{'embed ms':>10}{'search+why ms':>15}{'total ms/frame':>16}"
    )
    for kind, emb in embedders.items():
        train = emb.embed(train_imgs)
        c = 10 if kind == "global" else 1000
        for cfg in (fitting.FitConfig(), fitting.FitConfig(clusters=c), fitting.FitConfig(coreset=c)):
            index = fitting.build(train, cfg)
            meta = IndexMeta("bench", index.memory, index.k, index.dim, index.size, emb.spec.to_dict(),
                             origins=[f"f{i}" for i in range(index.size)])  # fmt: skip
            loaded = LoadedIndex(meta, index)
            search = float("inf")
            for _ in range(args.rounds):
                t0 = time.perf_counter()
                for f in feats[kind]:
                    score_frames(loaded, f, [(640, 480)] * len(f))
                search = min(search, time.perf_counter() - t0)
            print(f"{kind:<8}{cfg.label:<14}{index.size:>9}{1000 * best[kind] / n:>10.1f}{1000 * search / n:>15.2f}"
                  f"{1000 * (best[kind] + search) / n:>16.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
