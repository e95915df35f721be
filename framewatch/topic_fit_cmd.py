"""``framewatch index fit --from-topic [TOPIC] --source CAM --since DURATION | --last N``:
an index fitted on one camera's own frames, read back from the frames topic.

``index_cmd`` owns the ``fit`` parser; ``add_fit_flags`` adds the stream flags
to it and ``index_cmd.run_fit`` hands over here when ``--from-topic`` is given.
Every other fit flag (backbone, weights, kind, clusters, coreset, k,
target FPR, holdout folder, seed, crop, fine-tuning, --no-activate, ...) means
what it means for a folder. ``--candidate`` (here, and for a folder) publishes
the version without activating it; ``index promote`` activates it later.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import Any

from framewatch import flags, stream_flags
from index_store import stream_defaults

log = logging.getLogger("framewatch.index")


def add_fit_flags(fit: argparse.ArgumentParser) -> None:
    stream_flags.add_topic_flags(fit)
    flags.add_connection_flags(fit, redis=False)  # --kafka, for --from-topic
    fit.add_argument("--dedup", type=flags.non_negative, default=stream_defaults.DEDUP,
                     help="--from-topic: drop a frame closer than this fraction of the camera's mean pair distance "
                          "(squared) to a frame already kept (0 keeps near-duplicates)")  # fmt: skip
    fit.add_argument("--candidate", action="store_true",
                     help="publish as a candidate: not active until `framewatch index promote NAME VERSION`")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from index_store.spec import default_spec

    period = stream_flags.period(args)
    topic = stream_flags.topic(args)
    kafka = flags.kafka_settings(args)
    weights = args.weights or default_spec(args.backbone).weights
    redis_settings = flags.redis_settings(args)

    from framewatch.admin import repository
    from framewatch.index_safety import check_backbone
    from framewatch.stream_frames import read_sample
    from index_store.build import embed_paths, image_paths
    from index_store.embedder import Embedder, set_cpu_threads
    from index_store.stream_fit import fit_stream

    spec = stream_spec(args, weights)
    cfg = stream_fit_config(args)
    holdout_paths = image_paths(args.holdout) if args.holdout else ()
    repo = repository(redis_settings)
    from framewatch.index_safety import fit_precision

    spec = dataclasses.replace(spec, precision=fit_precision(repo, args.name, getattr(args, "precision", None),
                                                             getattr(args, "runtime", None), args.device))  # fmt: skip
    if spec.precision == "int8":  # calibration needs the frames before the sample is embedded: not wired here
        from wire.errors import FramewatchError

        raise FramewatchError("--precision int8 is not offered with --from-topic yet: fit int8 from a folder "
                              "of frames (index fit DIR --precision int8), or use fp32/bf16")  # fmt: skip
    set_cpu_threads(args.threads)
    embedder = Embedder(spec, device=args.device, batch_size=args.batch_size)
    sample = read_sample(kafka, topic, args.source, period, embedder, args.every, args.max_frames)
    spec = embedder.spec  # the full view's input shape now follows the camera's first frame
    check_backbone(repo, args.name, dataclasses.replace(spec, adapted_sha256="new") if args.finetune else spec,
                   args.new_backbone)  # fmt: skip
    adapted, tuned = None, {}
    if args.finetune:
        spec, adapted, tuned = _finetune(args, kafka, topic, spec, sample)
        embedder = Embedder(spec, device=args.device, batch_size=args.batch_size, adapted=adapted)
        sample = read_sample(kafka, topic, args.source, period, embedder, args.every, args.max_frames)
    if embedder.spec.is_random:
        log.warning("random backbone weights: scores are far weaker than with pretrained weights")
    holdout = embed_paths(embedder, holdout_paths, desc="embedding holdout") if holdout_paths else None
    result = fit_stream(args.name, sample.feats, sample.origins, embedder.spec.to_dict(), cfg, args.dedup, holdout,
                        sample.coordinates())  # fmt: skip
    meta = result.meta
    if tuned:
        meta = dataclasses.replace(meta, calibration={**meta.calibration, "finetune": tuned})
    meta = repo.publish(
        meta, result.index, activate=not args.no_activate, adapted=adapted, candidate=args.candidate
    )
    print(_summary(meta, sample, result.counts, args))
    return 0


def stream_spec(args: argparse.Namespace, weights: str) -> Any:
    """The embedder spec the model and geometry flags give (``index fit --from-topic``, ``learn``)."""
    from framewatch import geometry_flags
    from index_store.build import spec_for

    spec = spec_for(args.backbone, weights, args.kind)
    if args.crop and args.view == "full" and args.input_size is None:
        args.input_size = args.crop
    elif args.crop:
        spec = dataclasses.replace(spec, crop=args.crop, resize=round(args.crop * 8 / 7))
    spec = geometry_flags.apply(args, spec)
    if getattr(args, "precision", None):
        spec = dataclasses.replace(spec, precision=args.precision)
    return spec


# A stream fit keeps up to 800 frames; exact per-region memory would hold 24 x 800 vectors (98 MB at 1280 dims)
# per camera. 32 k-means centres per region matched exact kNN within 0.4 ROC-AUC on the wide-camera set
# (docs/accuracy.md) and hold 3.9 MB, what an exact one-vector index of 800 frames held before regions.
STREAM_REGION_CLUSTERS = 32


def regions_of(args: argparse.Namespace) -> tuple[int, int]:
    """The global regions a fit with these flags gets (geometry_flags.apply's default when not given)."""
    from framewatch.geometry_flags import DEFAULT_REGIONS

    if args.kind == "patch" or getattr(args, "view", "full") != "full" or getattr(args, "tiles", None) not in (None, (1, 1)):
        return getattr(args, "regions", None) or (1, 1)
    return getattr(args, "regions", None) or DEFAULT_REGIONS


def stream_fit_config(args: argparse.Namespace) -> Any:
    """The FitConfig of a fit from a stream: the folder's flags, cleaning on by default."""
    from index_store.fitting import PATCH_DEFAULT_CLUSTERS, FitConfig
    from index_store.stream_fit import STREAM_CLEAN_FRACTION

    clusters = args.clusters
    if args.kind == "patch" and clusters is None and args.coreset is None:
        clusters = PATCH_DEFAULT_CLUSTERS
    elif regions_of(args) != (1, 1) and clusters is None and args.coreset is None:
        clusters = STREAM_REGION_CLUSTERS  # per region: a camera's index stays ~4 MB, not ~100 MB
    clean = STREAM_CLEAN_FRACTION if args.clean_fraction is None else args.clean_fraction
    return FitConfig(clusters, args.k, clean, args.target_fpr, args.seed, args.coreset)


def _summary(meta: Any, sample: Any, counts: dict[str, int], args: argparse.Namespace) -> str:
    state = " (candidate)" if args.candidate else ("" if args.no_activate else " (active)")
    where = meta.frames_from
    bad = f", {sum(sample.bad.values())} undecodable skipped" if sample.bad else ""
    return (
        f"published index {meta.name!r} version {meta.version}{state}: {meta.kind}, {meta.n_vectors} vectors x "
        f"{meta.dim}, k={meta.k}, threshold {meta.threshold:.4g} (target FPR {meta.calibration['target_fpr']}); "
        f"from {where['topic']}/{where['partition']} offsets {where['offsets'][0]}..{where['offsets'][1]} "
        f"({sample.period.describe()}): {sample.located} frames of {sample.source!r}, {counts['embedded']} "
        f"embedded{bad}, {counts['deduplicated']} after de-duplication; {counts['train']} fitted after cleaning "
        f"{meta.clean_fraction:g}, calibrated on {counts['holdout']} of {counts['held_out']} held out"
    )


def _finetune(
    args: argparse.Namespace, kafka: Any, topic: str, spec: Any, sample: Any
) -> tuple[Any, bytes, dict[str, Any]]:
    """MSC fine-tuning on the sampled frames (fetched again by their coordinates), as ``index fit`` does on a folder."""
    from framewatch.topic_frames import parse_stream_origin
    from index_store.finetune import FinetuneConfig, finetune
    from review.frames import FrameFetcher
    from worker.decode import decode_image

    fetcher = FrameFetcher(kafka, cache_size=1)

    def image(i: int) -> Any:
        _, partition, offset = parse_stream_origin(sample.origins[i]) or ("", -1, -1)
        frame = fetcher.fetch(topic, partition, offset)
        return decode_image(frame.image, frame.content_type, resize=spec.draft_side)

    cfg = FinetuneConfig(epochs=args.epochs, lr=args.lr, batch=args.batch, seed=args.seed, device=args.device)
    try:
        result = finetune(spec, image, len(sample.origins), cfg)
    finally:
        fetcher.close()
    done = {"method": args.finetune, **cfg.to_dict(), "losses": [round(x, 5) for x in result.losses],
            "seconds": round(result.seconds, 1), "weights_bytes": len(result.weights)}  # fmt: skip
    return result.spec, result.weights, done
