"""``framewatch index promote NAME VERSION`` and ``framewatch index recalibrate NAME --from-topic ...``:
new versions from what an index already holds, and candidates made active (``index status``, in
framewatch/index_status_cmd.py, shows what a candidate would do first)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from framewatch import flags, stream_flags

log = logging.getLogger("framewatch.index")


def add_parsers(isub: Any) -> None:
    promote = isub.add_parser("promote", help="make a candidate version active (workers reload)")
    promote.add_argument("name", help="index name")
    promote.add_argument("version", type=flags.positive_int, help="a candidate version (see index list)")
    flags.add_connection_flags(promote, kafka=False)
    promote.set_defaults(func=run_promote)
    from framewatch import index_status_cmd  # `index status`: active and candidate alarm rates

    index_status_cmd.add_parser(isub)

    recal = isub.add_parser(
        "recalibrate",
        help="a new version with the same vectors and a threshold from a camera's recent frames",
        description="Scores the camera's recent frames against the version's vectors with its own backbone, "
        "leaves out the frames reviewers confirmed as anomalies, and sets the threshold at the target "
        "false-alarm rate over the rest. Use frames from after the version was fitted.",
    )
    recal.add_argument("name", help="index name")
    recal.add_argument(
        "--version", type=flags.positive_int, default=None, help="version to start from (default: active)"
    )
    stream_flags.add_topic_flags(recal, required=True)
    recal.add_argument("--target-fpr", type=flags.probability, default=None,
                       help="false-alarm rate the threshold aims at (default: the version's)")  # fmt: skip
    recal.add_argument(
        "--candidate", action="store_true", help="publish as a candidate instead of activating"
    )
    recal.add_argument("--batch-size", type=flags.positive_int, default=32, help="frames per embedding batch")
    flags.add_connection_flags(recal)
    flags.add_embed_flags(recal)
    recal.set_defaults(func=run_recalibrate)


def print_candidates(repo: Any, names: list[str]) -> None:
    """One line per index with candidate versions (``index list``): what ``index promote`` can activate."""
    for name in names:
        waiting = repo.candidates(name)
        if waiting:
            print(
                f"{name}: candidate version(s) {', '.join(map(str, waiting))} (framewatch index promote {name} VERSION)"
            )


def run_promote(args: argparse.Namespace) -> int:
    from framewatch.admin import repository

    repository(flags.redis_settings(args)).promote(args.name, args.version)
    print(f"index {args.name!r} version {args.version} is active (promoted from candidate); workers switch to it "
          "and stop scoring it in the shadow")  # fmt: skip
    return 0


def run_recalibrate(args: argparse.Namespace) -> int:
    period = stream_flags.period(args)
    topic = stream_flags.topic(args)
    kafka = flags.kafka_settings(args)

    import numpy as np

    from framewatch.admin import repository
    from framewatch.stream_frames import read_sample
    from index_store.embedder import Embedder, set_cpu_threads
    from index_store.fitting import score
    from index_store.recalibration import recalibrate
    from review.answers import Answers

    repo = repository(flags.redis_settings(args))
    meta, index = repo.load(args.name, args.version)
    adapted, quantized = repo.load_adapted(meta), repo.load_quantized(meta)
    set_cpu_threads(args.threads)
    embedder = Embedder(meta.embedder_spec, device=args.device, batch_size=args.batch_size, adapted=adapted,
                        quantized=quantized)  # fmt: skip
    sample = read_sample(kafka, topic, args.source, period, embedder, args.every, args.max_frames)
    answers = Answers(repo).all(args.name)
    confirmed = np.array(
        [answers.get(f, {}).get("label") == "confirmed" for f in sample.frame_ids], dtype=bool
    )
    scores = score(index, sample.feats, meta.embedder_spec)  # positional memories score per region / cell
    result = recalibrate(meta, scores, confirmed, args.target_fpr, sample.coordinates())
    published = repo.publish(result.meta, index, activate=True, adapted=adapted, candidate=args.candidate,
                             quantized=quantized)  # fmt: skip
    state = "candidate" if args.candidate else "active"
    print(
        f"published index {published.name!r} version {published.version} ({state}): the vectors of version "
        f"{meta.version}, threshold {_num(meta.threshold)} -> {_num(published.threshold)} (target FPR "
        f"{published.calibration['target_fpr']}); {result.scored} frames of {args.source!r} scored "
        f"({period.describe()}), {result.left_out} confirmed anomalies left out; alarm rate "
        f"{result.rate_before:.1%} before, {result.rate_after:.1%} after"
    )
    return 0


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.4g}"
