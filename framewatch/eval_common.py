"""What ``framewatch eval`` shares between its datasets (eval_cmd: the CIFAR-style ones, eval_mvtec: MVTec AD):
the spec from the flags, the methods compared, the embedder built on first use, the outputs written."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Optional

from index_store.errors import IndexStoreError
from index_store.registry import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD
from index_store.spec import PATCH_DEFAULT_CLUSTERS, EmbedderSpec, default_spec

DEFAULT_CLUSTERS = {"global": "1,3,5,10", "patch": str(PATCH_DEFAULT_CLUSTERS)}
DEFAULT_CORESETS = {"global": "", "patch": str(PATCH_DEFAULT_CLUSTERS)}
def spec_from_args(
    backbone: str,
    weights: Optional[str],
    norm: str = "default",
    kind: str = "global",
    crop: Optional[int] = None,
    precision: Optional[str] = None,
) -> EmbedderSpec:
    """The backbone's default spec with ``--weights``, ``--norm``, ``--kind``, ``--crop`` and ``--precision``
    applied (file paths pinned by sha256)."""
    from index_store.weights import file_sha256

    spec = default_spec(backbone, kind)
    if precision:
        spec = dataclasses.replace(spec, precision=precision)
    if crop:
        spec = dataclasses.replace(spec, crop=crop, resize=round(crop * 8 / 7))
    if norm == "imagenet":
        spec = dataclasses.replace(spec, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    elif norm == "tflite":
        spec = dataclasses.replace(spec, mean=LITE_MEAN, std=LITE_STD)
    if weights is None:
        return spec
    if weights == "random" or weights.startswith("random:"):
        return dataclasses.replace(spec, weights=weights if ":" in weights else "random:0")
    path = weights[len("file:") :] if weights.startswith("file:") else weights
    if weights.startswith("file:") or os.sep in weights or os.path.exists(weights):
        if not os.path.isfile(path):
            raise IndexStoreError(f"--weights {weights!r}: no such file")
        return dataclasses.replace(
            spec, weights=f"file:{os.path.abspath(path)}", weights_sha256=file_sha256(path)
        )
    return dataclasses.replace(spec, weights=weights)


def parse_clusters(text: Optional[str]) -> list[int]:
    if not text:
        return []
    try:
        values = [int(c) for c in text.split(",") if c.strip()]
    except ValueError as e:
        raise IndexStoreError(f"--clusters {text!r}: expected integers like 1,3,5,10") from e
    if any(c < 1 for c in values):
        raise IndexStoreError("--clusters values must be at least 1")
    return values


def methods_from_args(args: argparse.Namespace) -> list[Any]:
    from evaluation import evaluate

    clusters = DEFAULT_CLUSTERS[args.kind] if args.clusters is None else args.clusters
    coresets = DEFAULT_CORESETS[args.kind] if args.coreset is None else args.coreset
    return evaluate.methods_for(
        parse_clusters(clusters), args.k, args.clean_fraction, parse_clusters(coresets)
    )


def embedder_maker(args: argparse.Namespace, spec: EmbedderSpec):  # type: ignore[no-untyped-def]
    """A function that builds the embedder on first call (not at all when every feature is cached)."""
    box: list[Any] = []

    def make_embedder() -> Any:
        if not box:
            from index_store.embedder import Embedder, pick_device

            device = pick_device(args.device)
            bs = args.batch_size or (128 if device.type == "cuda" else 16)
            runtime = {"runtime": args.runtime} if args.runtime else {}
            box.append(Embedder(spec, device=str(device), batch_size=bs, **runtime))
        return box[0]

    return make_embedder


def precision_of(args: argparse.Namespace) -> str:
    """``--precision``, else what ``index fit`` gives a new index (openvino_runtime.default_precision)."""
    if args.precision:
        return str(args.precision)
    from index_store import openvino_runtime
    from index_store.embedder import pick_device

    return openvino_runtime.default_precision(args.runtime or openvino_runtime.DEFAULT_RUNTIME,
                                              pick_device(args.device).type)  # fmt: skip


def calibrated(make_embedder: Any, spec: EmbedderSpec, train: Any) -> EmbedderSpec:
    """An int8 spec: the embedder ``make_embedder`` builds calibrated on (evenly spaced) normal training images,
    as ``index fit`` calibrates on its fit frames; the spec returned names the quantized model (so feature caches
    keep each calibration apart). Any other spec: unchanged."""
    if spec.precision != "int8":
        return spec
    import numpy as np

    from index_store.openvino_runtime import CALIBRATION_FRAMES

    n = min(len(train), CALIBRATION_FRAMES)
    picked = train.subset(np.linspace(0, len(train) - 1, n).round().astype(int), f"cal{n}")
    embedder = make_embedder()
    embedder.calibrate(list(picked))
    return embedder.spec


def cache_dir(args: argparse.Namespace) -> Optional[str]:
    """``--cache-dir``: None = the default place, '' = no cache."""
    from evaluation import features

    if args.cache_dir is None:
        return str(features.DEFAULT_CACHE_DIR)
    return args.cache_dir or None


def threads_used() -> int:
    import torch

    return int(torch.get_num_threads())


def write_outputs(args: argparse.Namespace, report: dict[str, Any], markdown: str) -> None:
    if args.out_json:
        Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_json).write_text(json.dumps(report, indent=1) + "\n")
    if args.out_md:
        Path(args.out_md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_md).write_text(markdown)
