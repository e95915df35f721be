"""``framewatch alert``: deliver anomalies from the score topic to a webhook, Slack and/or stdout."""

from __future__ import annotations

import argparse
import logging
import time
from typing import Any

from framewatch import flags

log = logging.getLogger("framewatch.alert")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "alert", help="deliver anomalies to a webhook, Slack or stdout (own consumer group)",
        description="Reads the score topic in its own consumer group and tells people about anomalies: once per "
        "frame id, at most once per --cooldown per source, and only when --need of the last --of frames of a "
        "source are anomalous. Each sink has its own queue; an alert a sink cannot take is retried with backoff "
        "for --retry-for seconds, then sent to the alert dead-letter topic (FRAMEWATCH_TOPIC_ALERTS_DLQ, "
        "default alerts.dlq).",
    )  # fmt: skip
    p.add_argument("--webhook", action="append", default=[], metavar="URL",
                   help="POST JSON here; repeatable (else FRAMEWATCH_ALERT_WEBHOOKS, space-separated); "
        "user:pass@ in the URL is sent as HTTP basic auth")  # fmt: skip
    p.add_argument(
        "--slack",
        action="append",
        default=[],
        metavar="URL",
        help="Slack incoming-webhook URL; repeatable (else FRAMEWATCH_ALERT_SLACK)",
    )
    p.add_argument("--stdout", action="store_true", help="also print one JSON line per alert")
    p.add_argument("--cooldown", type=flags.non_negative, default=300.0, metavar="SECONDS",
                   help="per source (default 300)")  # fmt: skip
    p.add_argument("--need", type=flags.positive_int, default=1, metavar="N",
                   help="alert when N of the last M frames are anomalous")  # fmt: skip
    p.add_argument("--of", type=flags.positive_int, default=1, metavar="M", dest="window")
    p.add_argument("--retry-for", type=flags.non_negative, default=600.0, metavar="SECONDS",
                   help="how long a sink keeps retrying an alert before dead-lettering it (default 600)")  # fmt: skip
    p.add_argument("--webhook-timeout", type=flags.positive, default=10.0, metavar="SECONDS",
                   help="per HTTP request (default 10)")  # fmt: skip
    p.add_argument("--per-frame", action="store_true",
                   help="one alert per frame that passes the rules, instead of incidents (open, close)")  # fmt: skip
    p.add_argument("--close-after", type=flags.positive, default=60.0, metavar="SECONDS",
                   help="an incident closes after this long without an anomaly of its source (default 60)")  # fmt: skip
    p.add_argument("--update-every", type=flags.non_negative, default=30.0, metavar="SECONDS",
                   help="at most one update per incident this often, to the incidents topic (0: none; default 30)")  # fmt: skip
    p.add_argument("--updates-to-sinks", action="store_true",
                   help="send those updates to the sinks too (default: open, kind change and close only)")  # fmt: skip
    p.add_argument("--scene-after", type=flags.positive, default=30.0, metavar="SECONDS",
                   help="an incident covering the whole frame this long is a scene change (default 30)")  # fmt: skip
    p.add_argument("--group", default="framewatch-alerts")
    p.add_argument("--from-beginning", action="store_true",
                   help="a new group reads retained records (default: only scores published after this start)")  # fmt: skip
    p.add_argument("--review-url", default="", help="link to the review page, put in every alert")
    p.add_argument("--metrics-host", default="0.0.0.0",
                   help="address /metrics listens on (default 0.0.0.0: reachable by Prometheus in a pod; "
                        "127.0.0.1 keeps it on this host)")  # fmt: skip
    p.add_argument(
        "--metrics-port", type=flags.port, default=9109, help="port of /metrics (0: any free port)"
    )
    p.add_argument("--drain-timeout", type=flags.positive, default=10.0,
                   help="seconds the sinks get to finish on SIGTERM (the rest stays uncommitted)")  # fmt: skip
    p.add_argument("--session-timeout-ms", type=flags.positive_int, default=10000,
                   help="consumer group session timeout")  # fmt: skip
    p.add_argument("--max-poll-interval-ms", type=flags.positive_int, default=300000,
                   help="consumer group max poll interval (the loop never waits on a sink)")  # fmt: skip
    flags.add_connection_flags(p, redis=False)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    started_at = time.time()  # first: scores published from here on are alerted, however long the join takes
    from prometheus_client import CollectorRegistry, start_http_server

    from alerting.config import AlertConfig, IncidentConfig, NoiseConfig, RetryConfig
    from alerting.consumer import AlertConsumer
    from alerting.metrics import AlertMetrics
    from alerting.sinks import SlackSink, StdoutSink, WebhookSink
    from framewatch import settings
    from framewatch.admin import ensure_named_topics
    from framewatch.cli import stop_on_signals
    from wire.errors import FramewatchError

    timeout = args.webhook_timeout
    env_hooks, env_slack = settings.alert_urls(args.environment)
    sinks: list[Any] = [WebhookSink(u, timeout) for u in args.webhook or env_hooks]
    sinks += [SlackSink(u, timeout) for u in args.slack or env_slack]
    if args.stdout:
        sinks.append(StdoutSink())
    if not sinks:
        raise FramewatchError(
            "no sink: pass --webhook URL, --slack URL or --stdout (or set FRAMEWATCH_ALERT_WEBHOOKS)"
        )
    try:
        noise = NoiseConfig(cooldown_s=args.cooldown, need=args.need, window=args.window)
        incidents = None if args.per_frame else IncidentConfig(
            close_after_s=args.close_after, update_every_s=args.update_every, updates_to_sinks=args.updates_to_sinks,
            scene_after_s=args.scene_after)  # fmt: skip
    except ValueError as e:
        raise FramewatchError(str(e)) from e
    cfg = AlertConfig(kafka=flags.kafka_settings(args), topics=flags.topics(args), alert_topics=flags.alert_topics(args),
                      group_id=args.group, from_beginning=args.from_beginning, started_at=started_at, noise=noise, incidents=incidents,
                      retry=RetryConfig(retry_for_s=args.retry_for, timeout_s=timeout), review_url=args.review_url,
                      drain_timeout_s=args.drain_timeout, session_timeout_ms=args.session_timeout_ms,
                      max_poll_interval_ms=args.max_poll_interval_ms)  # fmt: skip
    registry = CollectorRegistry()
    metrics = AlertMetrics(registry, sorted({s.name for s in sinks}))
    try:
        server, _ = start_http_server(args.metrics_port, addr=args.metrics_host, registry=registry)
    except OSError as e:
        raise FramewatchError(
            f"cannot serve metrics on {args.metrics_host}:{args.metrics_port}: {e.strerror or e}"
        ) from e
    log.info("alerter metrics on http://%s:%d/metrics", args.metrics_host, server.server_port)
    ensure_named_topics(
        cfg.kafka, [cfg.alert_topics.dead_letters] + ([] if args.per_frame else [cfg.alert_topics.incidents])
    )
    consumer = AlertConsumer(cfg, sinks, metrics)
    return consumer.run(stop_on_signals())
