"""``framewatch index add NAME --frames ID... | --dir DIR``: frames a person says are normal become a new version."""

from __future__ import annotations

import argparse
import getpass
import socket
from typing import Any

from framewatch import flags


def add_parser(index_subparsers: Any) -> argparse.ArgumentParser:
    p = index_subparsers.add_parser(
        "add", help="absorb frames marked normal into a new, active index version",
        description="Embeds the frames with the index's own backbone and publishes a new version that absorbs "
        "them (every memory kind does: exact, kmeans, coreset; see index_store/feedback.py), recalibrates the "
        "threshold where the memory allows (exact) and activates it "
        "atomically. --frames looks the frames up on the score topic and fetches them from the frames topic.",
    )  # fmt: skip
    p.add_argument("name")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--frames", nargs="+", metavar="ID", help="frame ids, as in score records")
    what.add_argument("--dir", help="a folder of normal images (searched recursively)")
    p.add_argument("--by", default=None, help="who says they are normal (default: user@host)")
    p.add_argument("--device", default="cpu")
    flags.add_connection_flags(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from framewatch.admin import repository
    from index_store.build import image_paths
    from index_store.embedder import Embedder
    from index_store.feedback import Mark
    from review.answers import Answers
    from review.frames import FrameFetcher, find_scores
    from review.marking import Marker
    from wire.errors import FramewatchError

    by = args.by or f"{getpass.getuser()}@{socket.gethostname()}"
    repo = repository(flags.redis_settings(args))
    repo.meta(args.name)  # fail fast on an unknown index
    needs_kafka = args.frames is not None
    topics = flags.topics(args)  # --config topic names, as every other command
    # frames are fetched only from the frames topic: a forged score record cannot point the index elsewhere
    fetcher = FrameFetcher(flags.kafka_settings(args), only_topic=topics.frames) if needs_kafka else None
    marker = Marker(
        repo, fetcher, lambda spec: Embedder(spec, device=args.device), Answers(repo)
    )  # type: ignore[arg-type]
    try:
        if args.frames:
            found = find_scores(flags.kafka_settings(args), topics.scores, args.frames)
            missing = [f for f in args.frames if f not in found]
            if missing:
                raise FramewatchError(
                    f"no score record for frame(s) {', '.join(missing)} on {topics.scores}"
                )
            meta = marker.mark_normal([found[f] for f in args.frames], by, name=args.name)
            n = len(args.frames)
        else:
            paths = image_paths(args.dir)
            images = [marker.decode(args.name, p.read_bytes()) for p in paths]
            marks = [Mark(str(p.relative_to(args.dir)), by) for p in paths]
            meta = marker.absorb_images(args.name, images, marks)
            n = len(paths)
    finally:
        if fetcher is not None:
            fetcher.close()
    thr = f"{meta.threshold:.4g}" if meta.threshold is not None else "-"
    print(f"index {meta.name!r} version {meta.version} is active: absorbed {n} frame(s) marked normal by {by} "
          f"({meta.feedback['method']}); {meta.n_vectors} vectors, threshold {thr}")  # fmt: skip
    return 0
