"""``framewatch review``: the review web app (loopback by default, behind a login; docs/security.md)."""

from __future__ import annotations

import argparse
import getpass
import logging
from typing import Any

from framewatch import flags

log = logging.getLogger("framewatch.review")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "review", help="web page: incidents and recent anomalies, the frames, 'normal' / 'confirmed' answers",
        description="Serves the review page: the incidents of `framewatch alert` (open first; from its "
        "incidents topic), then flagged frames in no incident. 'normal' publishes a new index version that "
        "absorbs the frame, or a sample of at most 8 of the incident's frames (and activates it); 'confirmed' "
        "is stored. Answers are kept in Redis under the index's name. "
        "Everyone signs in: with a token (default; without --tokens a marker token is made for you and its "
        "login URL printed) or through an authenticating proxy (--auth proxy). See docs/security.md.",
    )  # fmt: skip
    p.add_argument(
        "--host", default="127.0.0.1", help="bind address (default loopback; any other needs --public-url)"
    )
    p.add_argument("--port", type=int, default=8321)
    p.add_argument("--public-url", default="", help="the URL people open, e.g. https://review.example.com "
                   "(behind a proxy: the proxy's); only its origin may post, https makes the cookie Secure")  # fmt: skip
    p.add_argument("--auth", choices=("token", "proxy"), default="token", help="how people sign in")
    p.add_argument("--tokens", metavar="FILE", help="token mode: lines 'NAME ROLE TOKEN', ROLE view or mark "
                   "(default: one marker token for you, printed as a login URL)")  # fmt: skip
    p.add_argument(
        "--user-header", default="X-Forwarded-Email", help="proxy mode: the header naming the user"
    )
    p.add_argument("--markers", default="", help="proxy mode: comma-separated users who may mark")
    p.add_argument("--viewers", default="", help="proxy mode: comma-separated users who may only view")
    p.add_argument("--trusted-proxy", default="127.0.0.1,::1",
                   help="proxy mode: addresses (CIDR) whose user header is believed (default loopback)")  # fmt: skip
    p.add_argument("--lookback", type=int, default=1000,
                   help="score records (and incident events) per partition read at start")  # fmt: skip
    p.add_argument("--per-source", type=int, default=20, help="recent anomalies shown per source")
    p.add_argument("--device", default="cpu", help="where marked frames are embedded")
    flags.add_connection_flags(p)
    p.set_defaults(func=run)
    return p


def build(
    kafka: Any, redis_settings: Any, device: str, per_source: int, frames_topic: str, scores_topic: str = ""
) -> tuple[Any, Any, Any]:
    """(app, feed, fetcher) wired to real services; shared by the command and the tests. Only records and
    frames on ``frames_topic`` are shown, served or marked. An incident's frames are looked up on
    ``scores_topic`` (without it, an incident's answer covers its peak frame only); ``app.incidents`` is
    fed by ``review.feed.follow_incidents``."""
    from framewatch.admin import repository
    from index_store.embedder import Embedder
    from review.answers import Answers
    from review.app import ReviewApp
    from review.feed import RecentAnomalies
    from review.frames import FrameFetcher, scores_between
    from review.incidents import Incidents
    from review.marking import Marker

    repo = repository(redis_settings)
    answers = Answers(repo)
    fetcher = FrameFetcher(kafka, only_topic=frames_topic)
    feed = RecentAnomalies(per_source, frames_topic)
    marker = Marker(repo, fetcher, lambda spec: Embedder(spec, device=device), answers)
    find = (
        (lambda source, start, end: scores_between(kafka, scores_topic, source, start, end))
        if scores_topic
        else None
    )
    return ReviewApp(feed, fetcher, marker, answers, Incidents(frames_topic), find), feed, fetcher


def _names(text: str) -> frozenset[str]:
    return frozenset(n.strip() for n in text.split(",") if n.strip())


def access(args: argparse.Namespace) -> tuple[Any, str]:
    """The access config from the flags, and a generated token to print ("" if none was made)."""
    from review.access import AccessConfig, generated, read_tokens
    from wire.errors import FramewatchError

    if args.host not in LOOPBACK and not args.public_url:
        raise FramewatchError(
            f"--host {args.host} serves other machines: say the URL they open with --public-url"
        )
    if args.auth == "proxy":
        if not args.public_url:
            raise FramewatchError("--auth proxy: say the URL people open through the proxy with --public-url")
        return AccessConfig(mode="proxy", user_header=args.user_header, markers=_names(args.markers),
                            viewers=_names(args.viewers), trusted_proxies=tuple(_names(args.trusted_proxy))), ""  # fmt: skip
    if args.tokens:
        return AccessConfig(credentials=read_tokens(args.tokens)), ""
    return generated(getpass.getuser())


def run(args: argparse.Namespace) -> int:
    import threading

    from framewatch.cli import stop_on_signals
    from review.feed import follow, follow_incidents
    from review.server import ReviewServer
    from review.web import WebConfig

    config, token = access(args)
    kafka, topics, incidents = (
        flags.kafka_settings(args),
        flags.topics(args),
        flags.alert_topics(args).incidents,
    )
    app, feed, fetcher = build(kafka, flags.redis_settings(args), args.device, args.per_source, topics.frames,
                               topics.scores)  # fmt: skip
    stop = stop_on_signals()
    followers = [
        threading.Thread(target=follow, args=(kafka, topics.scores, feed, stop, args.lookback, app.incidents),
                         daemon=True),
        threading.Thread(target=follow_incidents, args=(kafka, incidents, app.incidents, stop, args.lookback),
                         daemon=True),
    ]  # fmt: skip
    for follower in followers:
        follower.start()
    server = ReviewServer(app, WebConfig(config, public_url=args.public_url), args.host, args.port).start()
    url = (args.public_url or server.url).rstrip("/")
    log.info("review page access: %s", config.describe())
    print(f"review page on {url}/ (Ctrl-C to stop)", flush=True)
    if token:
        print(f"log in as {config.credentials[0].name} (may mark): {url}/login?token={token}", flush=True)
    elif config.mode == "token":
        print(f"log in at {url}/login with a token from {args.tokens}", flush=True)
    else:
        print(f"sign in through the proxy at {url}/ (users from its {config.user_header} header)", flush=True)
    try:
        stop.wait()
    finally:
        server.close()
        for follower in followers:
            follower.join(5)
        fetcher.close()
    return 0
