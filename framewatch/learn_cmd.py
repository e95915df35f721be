"""``framewatch learn --match 'cam-*'``: every camera that appears on the frames topic and has no index gets one,
fitted from its own stream (as ``index fit --from-topic``), published as a candidate or, with ``--activate``,
as the active version. learning/ holds the service; learn_fit.py the fit."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from framewatch import flags, stream_flags
from index_store import stream_defaults

log = logging.getLogger("framewatch.learn")


def name_template(text: str) -> str:
    """An index name template: must contain ``{source}`` (one index per camera)."""
    if "{source}" not in text:
        raise argparse.ArgumentTypeError(
            f"expected a template with {{source}}, e.g. 'site1-{{source}}', got {text!r}"
        )
    return text


name_template.__name__ = "template"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from framewatch.index_cmd import add_model_flags

    p = subparsers.add_parser(
        "learn", help="fit an index for each new camera from its own stream (own consumer group)",
        description="Watches the frames topic in its own consumer group. A camera (record key) that matches "
        "--match and whose index (--name, default the camera's own name, as the worker's --route "
        "'PATTERN={source}' expects) has no version is learned: once --frames of its frames spanning "
        "--min-span (by their Kafka timestamps) have been seen, an index is fitted on a sample of them, "
        "as `index fit --from-topic` does, and published as a candidate (`index promote` activates it) "
        "or, with --activate, as the active version. Cameras with an index are left alone, so a restart "
        "refits nothing; `framewatch status` lists the cameras learning, fitted and failed.",
    )  # fmt: skip
    p.add_argument("--match", action="append", required=True, metavar="PATTERN",
                   help="learn the cameras whose source id matches this shell-style pattern (repeatable)")  # fmt: skip
    p.add_argument("--name", type=name_template, default="{source}", metavar="TEMPLATE",
                   help="index name of a camera; {source} is replaced by its source id")  # fmt: skip
    p.add_argument("--frames", type=flags.int_at_least(2), default=500, metavar="N",
                   help="frames of a camera to see before fitting")  # fmt: skip
    p.add_argument("--min-span", type=stream_flags.duration, default=1800.0, metavar="DURATION",
                   help="and over at least this long (90s, 15m, 6h; seconds by default), by the frames' timestamps")  # fmt: skip
    p.add_argument("--activate", action="store_true",
                   help="publish each learned index as the active version (default: a candidate)")  # fmt: skip
    p.add_argument("--max-frames", type=flags.positive_int, default=stream_defaults.MAX_FRAMES,
                   help="frames embedded at most per camera, spread evenly over what was seen")  # fmt: skip
    p.add_argument("--dedup", type=flags.non_negative, default=stream_defaults.DEDUP,
                   help="drop a frame closer than this fraction of the camera's mean pair distance (squared) "
                        "to a frame already kept (0 keeps near-duplicates)")  # fmt: skip
    p.add_argument("--retry-after", type=stream_flags.duration, default=600.0, metavar="DURATION",
                   help="after a failed fit, learn the camera again from later frames, no sooner than this")  # fmt: skip
    p.add_argument("--forget-after", type=stream_flags.duration, default=86400.0, metavar="DURATION",
                   help="forget a camera still learning that has sent nothing for this long")  # fmt: skip
    p.add_argument(
        "--group", default="framewatch-learn", help="consumer group (its own: it reads every frame)"
    )
    p.add_argument("--session-timeout-ms", type=flags.positive_int, default=10000,
                   help="consumer group session timeout")  # fmt: skip
    p.add_argument("--metrics-host", default=None, metavar="ADDRESS",
                   help="address /metrics, /healthz, /readyz listen on (else FRAMEWATCH_METRICS_HOST; default 0.0.0.0)")  # fmt: skip
    p.add_argument(
        "--metrics-port", type=flags.port, default=9110, help="port of /metrics, /healthz, /readyz (0: any)"
    )
    add_model_flags(p)
    flags.add_connection_flags(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry

    from framewatch.admin import ensure_topics, repository
    from framewatch.learn_fit import CameraFitter
    from framewatch.settings import metrics_host
    from framewatch.signals import stop_on_signals
    from index_store.embedder import set_cpu_threads
    from index_store.spec import default_spec
    from learning.metrics import LearnMetrics
    from learning.service import LearnConfig, LearnService
    from learning.tracker import LearnPolicy, PolicyError
    from wire.errors import FramewatchError
    from worker.health import HealthServer

    try:
        policy = LearnPolicy(tuple(args.match), args.name, args.frames, args.min_span, keep=max(2 * args.max_frames, 4),
                             retry_after_s=args.retry_after, forget_after_s=args.forget_after)  # fmt: skip
    except PolicyError as e:
        raise FramewatchError(str(e)) from e
    from framewatch.topic_fit_cmd import stream_spec

    stream_spec(
        args, args.weights or default_spec(args.backbone).weights
    )  # bad model flags: stop now, not per camera
    kafka, topics = flags.kafka_settings(args), flags.topics(args)
    listen = metrics_host(args.metrics_host, args.environment)
    repo = repository(flags.redis_settings(args))
    set_cpu_threads(args.threads)
    ensure_topics(kafka, topics)
    registry = CollectorRegistry()
    metrics = LearnMetrics(registry)
    cfg = LearnConfig(kafka, topics.frames, args.group, policy, args.session_timeout_ms)
    service = LearnService(cfg, repo, CameraFitter(args, kafka, topics.frames, repo), metrics)
    try:
        health = HealthServer(
            registry, service.alive, service.ready, host=listen, port=args.metrics_port
        ).start()
    except OSError as e:
        raise FramewatchError(
            f"cannot serve metrics on {listen}:{args.metrics_port}: {e.strerror or e}"
        ) from e
    log.info("learner metrics on http://%s:%d/metrics", listen, health.port)
    try:
        return service.run(stop_on_signals(hard_exit_after_s=30.0))
    finally:
        health.stop()
