"""``framewatch produce``: publish frames from an image folder, a video file, a camera or an RTSP stream."""

from __future__ import annotations

import argparse
from typing import Any

from framewatch import flags
from framewatch.signals import stop_on_signals


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "produce", help="publish frames from a folder, video file, camera or RTSP stream"
    )
    p.add_argument(
        "source_path", metavar="SOURCE", help="image folder, video file, camera number or RTSP URI"
    )
    p.add_argument("--source", required=True, help="source id (camera name), the Kafka key")
    p.add_argument(
        "--fps", type=flags.non_negative, default=0.0, help="rate limit in frames/s (0 = as fast as possible)"
    )
    p.add_argument("--loop", action="store_true", help="start over at the end")
    p.add_argument(
        "--limit", type=flags.positive_int, default=None,
        help="stop after N frames attempted, acknowledged or not (default: no limit)",
    )  # fmt: skip
    p.add_argument("--give-up-after", type=flags.non_negative, default=300.0,
                   help="seconds with no frame acknowledged, through renewed producers, before exiting with "
                        "status 2 (default 300; 0 = never)")  # fmt: skip
    p.add_argument("--every", type=flags.positive_int, default=1, help="video: keep one frame in N")
    p.add_argument(
        "--partitions", type=flags.positive_int, default=4, help="partitions if the topics must be created"
    )
    p.add_argument(
        "--metrics-port", type=flags.port, default=None, help="serve /metrics on this port (default: off)"
    )
    flags.add_connection_flags(p, redis=False)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from framewatch.admin import ensure_topics
    from producer.metrics import ProducerMetrics
    from producer.publisher import Publisher, Renewal, kafka_producer
    from producer.sources import open_source

    kafka = flags.kafka_settings(args)
    topics = flags.topics(args)
    source = open_source(
        args.source_path, loop=args.loop, every=args.every
    )  # a bad source fails before Kafka
    ensure_topics(kafka, topics, args.partitions)
    registry = CollectorRegistry()
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, registry=registry)
    stop = stop_on_signals()
    renewal = Renewal(lambda: kafka_producer(kafka), give_up_after_s=args.give_up_after)
    publisher = Publisher(kafka_producer(kafka), topics.frames, args.source, ProducerMetrics(registry),
                          fps=args.fps, renewal=renewal)  # fmt: skip
    try:
        report = publisher.publish(source.frames(), limit=args.limit, stop=stop)
    finally:
        source.close()
        publisher.producer.close(timeout=10)  # the one in use: it may have been renewed
    renewed = f" ({report.renewed} producers renewed)" if report.renewed else ""
    print(
        f"sent {report.sent} frames from {args.source_path} as source {args.source!r}; {report.failed} failed"
        + renewed
    )
    return 0 if report.failed == 0 else 1
