"""Ablation for docs/accuracy.md: pretrained EfficientNet-Lite0 features with and without L2 normalisation,
no fine-tuning, read from the feature cache of the matching baseline ``framewatch eval`` run (crop 112).

    python benchmarks/msc_l2_ablation.py [--cache-dir DIR] [--train 100] [--test 100] [--classes 0,8]
"""

from __future__ import annotations

import argparse

import numpy as np

from evaluation import datasets, evaluate, features
from framewatch.eval_cmd import spec_from_args


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cache-dir", default=str(features.DEFAULT_CACHE_DIR))
    p.add_argument("--train", type=int, default=100, help="--subsample-train of the baseline run")
    p.add_argument("--test", type=int, default=100, help="--subsample-test of the baseline run")
    p.add_argument("--classes", default=None, help="--classes of the baseline run (indices)")
    args = p.parse_args()
    spec = spec_from_args("efficientnet_lite0", None, "default", "global", 112)
    ds = datasets.load("fashion-mnist", None, 0.5, 0)
    classes = [int(c) for c in args.classes.split(",")] if args.classes else None
    train, test = ds.train.subsample(args.train, 0), ds.test.subsample(args.test, 1)
    cache = features.FeatureCache(args.cache_dir)
    if classes is not None and not cache.contains(spec, train):
        train = train.only_classes(classes)  # as framewatch eval does
    tr, te = cache.load(spec, train), cache.load(spec, test)
    if tr is None or te is None:
        raise SystemExit("run the matching baseline `framewatch eval` first (its features are not cached)")
    methods = evaluate.methods_for([10])
    for name, norm in (("raw", False), ("l2", True)):
        a, b = tr.features, te.features
        if norm:
            a, b = a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
        res = evaluate.one_class(a, train.labels, b, test.labels, ds.class_names, methods, classes)
        print(name, {m: round(100 * res.mean(m), 2) for m in res.methods},
              {c.name: round(100 * c.auc["exact"], 1) for c in res.classes})  # fmt: skip


if __name__ == "__main__":
    main()
