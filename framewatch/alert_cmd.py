"""``framewatch alert``: deliver anomalies from the score topic to a webhook, Slack and/or stdout."""

from __future__ import annotations

import argparse
from typing import Any

from framewatch import flags


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "alert", help="deliver anomalies to a webhook, Slack or stdout (own consumer group)",
        description="Reads the score topic in its own consumer group and tells people about anomalies: once per "
        "frame id, at most once per --cooldown per source, and only when --need of the last --of frames of a "
        "source are anomalous. Failed deliveries are retried with backoff, then logged and counted.",
    )  # fmt: skip
    p.add_argument("--webhook", action="append", default=[], metavar="URL", help="POST JSON here; repeatable")
    p.add_argument(
        "--slack", action="append", default=[], metavar="URL", help="Slack incoming-webhook URL; repeatable"
    )
    p.add_argument("--stdout", action="store_true", help="also print one JSON line per alert")
    p.add_argument(
        "--cooldown", type=float, default=300.0, metavar="SECONDS", help="per source (default 300)"
    )
    p.add_argument(
        "--need", type=int, default=1, metavar="N", help="alert when N of the last M frames are anomalous"
    )
    p.add_argument("--of", type=int, default=1, metavar="M", dest="window")
    p.add_argument("--attempts", type=int, default=5, help="delivery attempts per alert and sink")
    p.add_argument("--group", default="framewatch-alerts")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="a new group reads retained records (default: only records from now on)",
    )
    p.add_argument("--review-url", default="", help="link to the review page, put in every alert")
    p.add_argument("--metrics-port", type=int, default=9109)
    flags.add_connection_flags(p, redis=False)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from alerting.config import AlertConfig, NoiseConfig, RetryConfig
    from alerting.consumer import AlertConsumer
    from alerting.metrics import AlertMetrics
    from alerting.sinks import SlackSink, StdoutSink, WebhookSink
    from framewatch import settings as env
    from framewatch.cli import stop_on_signals
    from wire.errors import FramewatchError

    sinks: list[Any] = [WebhookSink(u) for u in args.webhook] + [SlackSink(u) for u in args.slack]
    if args.stdout:
        sinks.append(StdoutSink())
    if not sinks:
        raise FramewatchError("no sink: pass --webhook URL, --slack URL or --stdout")
    try:
        noise = NoiseConfig(cooldown_s=args.cooldown, need=args.need, window=args.window)
    except ValueError as e:
        raise FramewatchError(str(e)) from e
    cfg = AlertConfig(kafka=flags.kafka_settings(args), topics=env.topics(), group_id=args.group, from_beginning=args.from_beginning,
                      noise=noise, retry=RetryConfig(attempts=max(1, args.attempts)), review_url=args.review_url)  # fmt: skip
    registry = CollectorRegistry()
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, registry=registry)
    consumer = AlertConsumer(cfg, sinks, AlertMetrics(registry, sorted({s.name for s in sinks})))
    return consumer.run(stop_on_signals())
