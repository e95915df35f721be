"""``framewatch eval``: DN2's one-class ROC-AUC on a labelled dataset (Tables 1 and 6 of the paper),
or the MVTec AD / VisA protocol (``--dataset mvtec``: image and pixel ROC-AUC per category).

``--kind patch`` evaluates the patch index (worst location of a grid of local
features) instead of the global one. Embeddings are computed once per (spec,
image set) and cached on disk, so a rerun with other --clusters/--k/--classes
takes seconds. The evaluation code lives in the ``evaluation`` package.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from typing import Any, Optional

from evaluation import datasets
from framewatch.eval_common import (
    DEFAULT_CLUSTERS,
    DEFAULT_CORESETS,
    cache_dir,
    calibrated,
    embedder_maker,
    methods_from_args,
    parse_clusters,
    precision_of,
    spec_from_args,
    threads_used,
    write_outputs,
)
from index_store.errors import IndexStoreError
from index_store.registry import BACKBONES, FEATURES
from wire.errors import FramewatchError

log = logging.getLogger("framewatch.eval")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "eval",
        help="one-class ROC-AUC on a labelled dataset (DN2 protocol), or MVTec-style image/pixel ROC-AUC",
        description="Each class in turn is normal: fit on its training images, score every test image, "
        "ROC-AUC of 'other class' vs 'this class'. Reports exact kNN and the k-means index per C. "
        "--dataset mvtec: per category, fit on train/good, image ROC-AUC of test/DEFECT vs test/good, "
        "and pixel ROC-AUC against ground_truth masks (patch kind).",
    )
    p.add_argument("--dataset", choices=(*datasets.DATASETS, "mvtec"), required=True)
    p.add_argument("--kind", "--features", dest="kind", choices=FEATURES, default="global", help="features to evaluate")
    p.add_argument(
        "--data", default=None, help="dataset folder (default: the standard place for each dataset)"
    )
    p.add_argument("--split", type=float, default=0.5, help="test fraction for a single-level image folder")
    p.add_argument("--backbone", default="efficientnet_lite0", choices=sorted(BACKBONES))
    p.add_argument("--weights", default=None, help="torchvision enum name, pypi, random[:SEED], or a file path "
                   "(default: the backbone's pretrained weights)")  # fmt: skip
    p.add_argument(
        "--norm",
        choices=("default", "imagenet", "tflite"),
        default="default",
        help="input mean/std (default: the backbone's own; for ablations)",
    )
    p.add_argument(
        "--crop", type=int, default=None, help="input crop size (default 224; resize = crop * 8/7)"
    )
    p.add_argument(
        "--clusters",
        default=None,
        help="k-means C values, comma separated ('' for none); default 1,3,5,10 (global), 1000 (patch)",
    )
    p.add_argument("--coreset", default=None, help="coreset sizes C, comma separated; default none (global), "
                   "1000 (patch)")  # fmt: skip
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
    p.add_argument(
        "--threads", type=int, default=None, help="torch and OpenVINO CPU threads (default: all CPUs)"
    )
    p.add_argument(
        "--cache-dir", default=None, help="feature cache (default ~/.cache/framewatch/features; '' = none)"
    )
    p.add_argument("--out-json", default=None)
    p.add_argument("--out-md", default=None)
    p.add_argument("--pixels", action="store_true", help="add the raw-pixel kNN baseline (the floor)")
    p.add_argument("--pixel-size", type=int, default=32)
    p.add_argument("--no-progress", action="store_true")
    from framewatch import flags, geometry_flags

    flags.add_finetune_flags(p)  # --finetune msc: fine-tune per normal class (evaluation/finetuned.py)
    geometry_flags.add_geometry_flags(p)
    flags.add_runtime_flags(p)
    p.set_defaults(func=run)
    return p


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
    if args.dataset == "mvtec":
        from framewatch.eval_mvtec import run_mvtec

        return run_mvtec(args)
    from evaluation import evaluate, features

    t_start = time.perf_counter()
    datasets.check_available(args.dataset, args.data)  # fail before any model is built
    spec = spec_from_args(args.backbone, args.weights, args.norm, args.kind, args.crop, precision_of(args))
    from framewatch import geometry_flags

    # the papers' one-class datasets are object-centric: DN2 pools each image into one vector
    spec = geometry_flags.apply(args, spec, default_regions=(1, 1) if args.dataset != "folder" else geometry_flags.DEFAULT_REGIONS)
    methods = methods_from_args(args)
    threads = features.configure_threads(args.threads)
    ds = datasets.load(args.dataset, args.data, args.split, args.seed)
    classes = _parse_classes(args.classes, ds.class_names)
    n_train_sub = args.subsample_train if args.subsample_train is not None else args.subsample
    n_test_sub = args.subsample_test if args.subsample_test is not None else args.subsample
    train = ds.train.subsample(n_train_sub, args.seed)
    cache = features.FeatureCache(cache_dir(args))
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
    tuning = None
    if args.finetune:
        main, tuning, tr, te = _finetuned(args, spec, train, test, methods, classes, cache, progress)
        eval_s = 0.0
    else:
        make_embedder = embedder_maker(args, spec)
        spec = calibrated(make_embedder, spec, train)
        tr = cache.get_or_embed(spec, train, make_embedder, progress=progress)
        te = cache.get_or_embed(spec, test, make_embedder, progress=progress)
        t_eval = time.perf_counter()
        main = evaluate.one_class(tr.features, train.labels, te.features, test.labels, ds.class_names,
                                  methods, classes, spec.label(), args.seed, spec)  # fmt: skip
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
    if tuning is not None:
        report["finetune"] = {"method": args.finetune, "epochs": args.epochs, "lr": args.lr,
                              "batch": args.batch, "seconds": round(tuning.total_seconds(), 1),
                              "per_class": tuning.per_class}  # fmt: skip
    markdown = evaluate.render_markdown(report, main, baselines)
    if tuning is not None:
        markdown += (f"\nFine-tuning: MSC per normal class, {args.epochs} epoch(s), lr {args.lr:g}, batch {args.batch}: "
                     f"{tuning.total_seconds():.1f} s of the embedding time above.\n")  # fmt: skip
    write_outputs(args, report, markdown)
    print(markdown)
    return 0


def _finetuned(args, spec, train, test, methods, classes, cache, progress):  # type: ignore[no-untyped-def]
    """The protocol with MSC fine-tuning per normal class; timings as CachedFeatures-like records."""
    from evaluation.features import CachedFeatures
    from evaluation.finetuned import one_class_finetuned
    from index_store.embedder import pick_device
    from index_store.finetune import FinetuneConfig

    device = str(pick_device(args.device))
    cfg = FinetuneConfig(epochs=args.epochs, lr=args.lr, batch=args.batch, seed=args.seed, device=device)
    bs = args.batch_size or (128 if device.startswith("cuda") else 16)
    t0 = time.perf_counter()
    main, tuning = one_class_finetuned(
        spec, cfg, train, test, methods, classes, cache, bs, args.seed, progress
    )
    seconds = time.perf_counter() - t0
    done = CachedFeatures(None, seconds, all(c["from_cache"] for c in tuning.per_class.values()), None)  # type: ignore[arg-type]
    return main, tuning, done, CachedFeatures(None, 0.0, done.from_cache, None)  # type: ignore[arg-type]


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
        "kind": args.kind,
        "clusters": parse_clusters(DEFAULT_CLUSTERS[args.kind] if args.clusters is None else args.clusters),
        "coreset": parse_clusters(DEFAULT_CORESETS[args.kind] if args.coreset is None else args.coreset),
        "clean_fraction": args.clean_fraction,
        "results": main.to_dict(),
        "baselines": [b.to_dict() for b in baselines],
        "paper": _paper(ds.name),
        "timings": {
            "embed_train_s": round(tr.seconds, 2),
            "embed_test_s": round(te.seconds, 2),
            "from_cache": bool(tr.from_cache and te.from_cache),
            "eval_s": round(eval_s, 2),
            "total_s": round(total_s, 2),
            "threads": threads_used(),
        },
        "argv": sys.argv[1:],
    }


def _paper(name: str) -> Any:
    from evaluation import evaluate

    return evaluate.PAPER.get(name)


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
