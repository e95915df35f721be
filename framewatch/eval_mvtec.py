"""``framewatch eval --dataset mvtec``: image ROC-AUC per category, pixel ROC-AUC where masks exist.

Real MVTec AD (unpacked from mvtec_anomaly_detection.tar.xz)::

    framewatch eval --dataset mvtec --data /data/mvtec_ad --kind patch --backbone resnet18 \\
        --out-json docs/results/mvtec_resnet18_patch.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from evaluation import features, mvtec
from evaluation.errors import DatasetUnavailable
from framewatch import geometry_flags
from framewatch.eval_common import (
    cache_dir,
    calibrated,
    embedder_maker,
    methods_from_args,
    precision_of,
    spec_from_args,
    threads_used,
    write_outputs,
)


def run_mvtec(args: argparse.Namespace) -> int:
    t_start = time.perf_counter()
    if not args.data:
        raise DatasetUnavailable(
            "--dataset mvtec needs --data ROOT (ROOT/CATEGORY/train/good, ROOT/CATEGORY/test/...)"
        )
    names = [n.strip() for n in args.classes.split(",") if n.strip()] if args.classes else None
    categories = mvtec.load(args.data, names)  # fail before any model is built
    spec = geometry_flags.apply(args, spec_from_args(args.backbone, args.weights, args.norm, args.kind, args.crop,
                                                      precision_of(args)))
    methods = methods_from_args(args)
    features.configure_threads(args.threads)
    cache = features.FeatureCache(cache_dir(args))
    make_embedder = embedder_maker(args, spec)
    progress = not args.no_progress
    results, embed_s, eval_s = [], 0.0, 0.0
    tuning: dict[str, Any] = {}
    for cat in categories:
        if args.finetune:  # MSC on the category's normal training images (evaluation/finetuned.py)
            (tr, te), tuning[cat.name] = _tuned(args, spec, cat, cache, progress)
        elif spec.precision == "int8":  # each category is its own index: calibrated on its own training images
            make_embedder = embedder_maker(args, spec)
            cat_spec = calibrated(make_embedder, spec, cat.train)
            tr = cache.get_or_embed(cat_spec, cat.train, make_embedder, progress=progress)
            te = cache.get_or_embed(cat_spec, cat.test, make_embedder, progress=progress)
        else:
            tr = cache.get_or_embed(spec, cat.train, make_embedder, progress=progress)
            te = cache.get_or_embed(spec, cat.test, make_embedder, progress=progress)
        embed_s += tr.seconds + te.seconds
        t0 = time.perf_counter()
        results.append(mvtec.evaluate_category(cat, tr.features, te.features, methods, spec, args.seed))
        eval_s += time.perf_counter() - t0
    main = mvtec.result(spec.label() + ("/msc" if args.finetune else ""), methods, results)
    report: dict[str, Any] = {
        "dataset": {
            "name": f"mvtec:{Path(args.data).name}",
            "categories": [c.name for c in categories],
            "n_train": sum(len(c.train) for c in categories),
            "n_test": sum(len(c.test) for c in categories),
            "masks": [c.name for c in categories if c.has_masks],
        },
        "spec": spec.to_dict(),
        "spec_label": spec.label(),
        "kind": args.kind,
        "k": args.k,
        "methods": [m.name for m in methods],
        "results": main.to_dict(),
        "timings": {
            "embed_s": round(embed_s, 2),
            "eval_s": round(eval_s, 2),
            "total_s": round(time.perf_counter() - t_start, 2),
            "threads": threads_used(),
        },
        "argv": sys.argv[1:],
    }
    if args.finetune:
        report["finetune"] = {"method": args.finetune, "epochs": args.epochs, "lr": args.lr, "batch": args.batch,
                              "per_category": tuning}  # fmt: skip
    markdown = mvtec.render_markdown(report, main)
    write_outputs(args, report, markdown)
    print(markdown)
    return 0


def _tuned(args: argparse.Namespace, spec: Any, cat: Any, cache: Any, progress: bool) -> tuple[Any, Any]:
    from evaluation.finetuned import tuned_features
    from index_store.embedder import pick_device
    from index_store.finetune import FinetuneConfig

    device = str(pick_device(args.device))
    cfg = FinetuneConfig(epochs=args.epochs, lr=args.lr, batch=args.batch, seed=args.seed, device=device)
    bs = args.batch_size or (128 if device.startswith("cuda") else 16)
    return tuned_features(spec, cfg, cat.train, [cat.train, cat.test], cache, bs, progress)
