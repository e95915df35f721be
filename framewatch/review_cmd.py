"""``framewatch review``: the review web app (loopback by default)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from framewatch import flags

log = logging.getLogger("framewatch.review")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "review", help="web page: recent anomalies, the frames, 'normal' / 'confirmed' answers",
        description="Serves the review page. 'normal' publishes a new index version that absorbs the frame "
        "(and activates it); 'confirmed' is stored. Answers are kept in Redis under the index's name.",
    )  # fmt: skip
    p.add_argument(
        "--host", default="127.0.0.1", help="bind address (default loopback; the page has no login)"
    )
    p.add_argument("--port", type=int, default=8321)
    p.add_argument("--lookback", type=int, default=1000, help="score records per partition read at start")
    p.add_argument("--per-source", type=int, default=20, help="recent anomalies shown per source")
    p.add_argument("--device", default="cpu", help="where marked frames are embedded")
    flags.add_connection_flags(p)
    p.set_defaults(func=run)
    return p


def build(kafka: Any, redis_settings: Any, device: str, per_source: int) -> tuple[Any, Any, Any]:
    """(app, feed, fetcher) wired to real services; shared by the command and the tests."""
    from framewatch.admin import repository
    from index_store.embedder import Embedder
    from review.answers import Answers
    from review.feed import RecentAnomalies
    from review.frames import FrameFetcher
    from review.marking import Marker
    from review.server import ReviewApp

    repo = repository(redis_settings)
    answers = Answers(repo.r, repo.keys)
    fetcher = FrameFetcher(kafka)
    feed = RecentAnomalies(per_source)
    marker = Marker(repo, fetcher, lambda spec: Embedder(spec, device=device), answers)
    return ReviewApp(feed, fetcher, marker, answers), feed, fetcher


def run(args: argparse.Namespace) -> int:
    import threading

    from framewatch import settings as env
    from framewatch.cli import stop_on_signals
    from review.feed import follow
    from review.server import ReviewServer

    kafka, topics = flags.kafka_settings(args), env.topics()
    app, feed, fetcher = build(kafka, flags.redis_settings(args), args.device, args.per_source)
    stop = stop_on_signals()
    follower = threading.Thread(
        target=follow, args=(kafka, topics.scores, feed, stop, args.lookback), daemon=True
    )
    follower.start()
    server = ReviewServer(app, args.host, args.port).start()
    print(f"review page on {server.url}/ (Ctrl-C to stop)", flush=True)
    try:
        stop.wait()
    finally:
        server.close()
        follower.join(5)
        fetcher.close()
    return 0
