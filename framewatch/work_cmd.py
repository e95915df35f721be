"""``framewatch work``: a worker in the consumer group (decode, batch, embed, score, publish)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from framewatch import allocator, flags
from framewatch.settings import kafka_client, metrics_host
from framewatch.signals import exit_later, stop_on_signals
from wire.errors import FramewatchError
from wire.settings import KAFKA_CLIENTS

log = logging.getLogger("framewatch.work")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("work", help="score frames as a member of a consumer group")
    p.add_argument("--index", required=True, help="default index name")
    p.add_argument("--route", action="append", default=[], type=flags.route, metavar="PATTERN=INDEX",
                   help="score sources matching PATTERN (shell-style) with INDEX; repeatable, first match wins. "
                        "INDEX may name the index after the camera: 'cam-*={source}' (one index per camera, "
                        "loaded on its first frame; a camera without one is scored by --index)")  # fmt: skip
    p.add_argument("--index-memory", type=flags.byte_size, default=None, metavar="SIZE",
                   help="memory per-camera indexes ({source} routes) may hold, e.g. 512MiB (default 1GiB); the "
                        "least recently used are evicted and loaded again on demand")  # fmt: skip
    p.add_argument("--index-load-wait", type=flags.non_negative, default=None, metavar="SECONDS",
                   help="how long a batch waits for a per-camera index being loaded before its frames are "
                        "scored by --index instead (default 2)")  # fmt: skip
    p.add_argument("--group", default="framewatch-workers", help="Kafka consumer group")
    p.add_argument("--worker-id", help="name in logs, records and metrics (default: host-pid)")
    p.add_argument(
        "--max-batch", type=flags.positive_int, default=32, help="frames per batch (see docs/benchmarks.md)"
    )
    p.add_argument(
        "--max-wait", type=flags.non_negative, default=0.2, help="seconds a frame may wait for its batch"
    )
    p.add_argument(
        "--window",
        type=flags.non_negative_int,
        default=0,
        help="per-source window size for group scores (0 = off)",
    )
    p.add_argument(
        "--metrics-port", type=flags.port, default=9108, help="port of /metrics, /healthz, /readyz"
    )
    p.add_argument("--metrics-host", default=None, metavar="ADDRESS",
                   help="address /metrics, /healthz, /readyz listen on (else FRAMEWATCH_METRICS_HOST; default "
                        "0.0.0.0, so Prometheus reaches a pod; 127.0.0.1 keeps them on this host)")  # fmt: skip
    p.add_argument(
        "--drain-timeout", type=flags.positive, default=30.0, help="seconds to finish and commit on SIGTERM"
    )
    p.add_argument(
        "--max-bytes", type=flags.positive_int, default=20 * 1024 * 1024, help="largest frame accepted, bytes"
    )
    p.add_argument(
        "--min-side", type=flags.positive_int, default=32, help="smallest image side accepted, pixels"
    )
    p.add_argument(
        "--max-pixels", type=flags.positive_int, default=40_000_000, help="largest image accepted, pixels"
    )
    p.add_argument("--max-decode-mib", type=flags.positive_int, default=None,
                   help="memory one frame's decode may take, MiB (default 320: a 16-bit 40 M-pixel frame is refused)")  # fmt: skip
    p.add_argument("--decode-budget-mib", type=flags.positive_int, default=None,
                   help="memory all frames being decoded at once may take, MiB (default 640)")  # fmt: skip
    p.add_argument(
        "--partitions", type=flags.positive_int, default=4, help="partitions if the topics must be created"
    )
    p.add_argument(
        "--session-timeout-ms", type=flags.positive_int, default=10000, help="consumer group session timeout"
    )
    p.add_argument(
        "--heartbeat-ms", type=flags.positive_int, default=3000, help="consumer group heartbeat interval"
    )
    p.add_argument("--start-from", choices=("earliest", "latest"), default=None,
                   help="where a partition without a committed offset starts (default: latest: the first frame "
                        "published since this worker started, so a new group does not re-score retained history "
                        "and misses nothing while it starts); earliest to backfill")  # fmt: skip
    p.add_argument("--stall-timeout", type=flags.positive, default=120.0,
                   help="seconds without progress (lag but nothing consumed, or one call) before /readyz says 503")  # fmt: skip
    p.add_argument("--stall-exit", type=flags.positive, default=600.0,
                   help="seconds stalled before the worker gives up and exits with code 70")  # fmt: skip
    p.add_argument("--kafka-client", choices=KAFKA_CLIENTS, default=None,
                   help="the client consuming frames and sending outputs (else FRAMEWATCH_KAFKA_CLIENT; default "
                        "kafka-python): confluent (librdkafka, pip install 'framewatch[confluent]') is faster")  # fmt: skip
    p.add_argument("--drift-sources", type=flags.non_negative_int, default=50,
                   help="cameras with their own alarm-rate and drift metrics (the worst; the rest are counted in "
                        "histograms)")  # fmt: skip
    p.add_argument("--drift-window", type=flags.positive, default=600.0,
                   help="seconds of frames per camera that alarm rate and drift are measured over")  # fmt: skip
    flags.add_connection_flags(p)
    flags.add_embed_flags(p)
    p.add_argument("--ov-streams", type=flags.positive_int, default=None,
                   help="OpenVINO inference streams each batch is split over (default 1; 2 measured 0.6-1.6x "
                        "one stream's frames/s on 2 loaded cores: try it with framewatch bench --ov-streams 1,2)")  # fmt: skip
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    if args.heartbeat_ms >= args.session_timeout_ms:
        raise FramewatchError(f"--heartbeat-ms {args.heartbeat_ms} must be below --session-timeout-ms "
                              f"{args.session_timeout_ms}")  # fmt: skip
    kafka = flags.kafka_settings(args)
    redis = flags.redis_settings(args)
    topics = flags.topics(args)
    client = kafka_client(args.kafka_client, args.environment)
    listen = metrics_host(args.metrics_host, args.environment)
    if client == "confluent":
        from worker.confluent_client import require

        require()  # not installed: one clear line now, not a retry loop later
    _check_routes(args, redis)

    from framewatch.admin import ensure_topics
    from index_store.embedder import set_cpu_threads
    from worker.config import WorkerConfig
    from worker.decode import DecodeLimits
    from worker.loop import EXIT_STALLED, Worker
    from worker.start_position import process_started_at

    if args.runtime:  # --runtime openvino where it cannot run: one clear line now, not a worker never ready
        from index_store.embedder import pick_device
        from index_store.openvino_runtime import choose

        choose(args.runtime, pick_device(args.device).type)
    stop = stop_on_signals(hard_exit_after_s=args.drain_timeout + 15.0)
    set_cpu_threads(args.threads)
    log.info("malloc: %s", allocator.state())
    cfg = WorkerConfig(
        kafka=kafka, redis=redis, index=args.index, routes=tuple(args.route), topics=topics,
        group_id=args.group, worker_id=args.worker_id or "", max_batch=args.max_batch, max_wait_s=args.max_wait,
        device=args.device, window=args.window, metrics_host=listen, metrics_port=args.metrics_port, drain_timeout_s=args.drain_timeout,
        limits=DecodeLimits(max_bytes=args.max_bytes, min_side=args.min_side, max_pixels=args.max_pixels,
                            **({"max_decode_bytes": args.max_decode_mib << 20} if args.max_decode_mib else {})),
        **({"decode_budget_bytes": args.decode_budget_mib << 20} if args.decode_budget_mib else {}),
        session_timeout_ms=args.session_timeout_ms, heartbeat_interval_ms=args.heartbeat_ms,
        stall_timeout_s=args.stall_timeout, stall_exit_s=args.stall_exit, kafka_client=client,
        drift_sources=args.drift_sources, drift_window_s=args.drift_window,
        **({"index_memory_bytes": args.index_memory} if args.index_memory else {}),
        **({"index_load_wait_s": args.index_load_wait} if args.index_load_wait is not None else {}),
        started_at=process_started_at(),  # "latest" means frames published since this process started
        **({"start_from": args.start_from} if args.start_from else {}),  # the default lives in WorkerConfig
        **({"runtime": args.runtime} if args.runtime else {}), **({"precision": args.precision} if args.precision else {}),
        **({"ov_streams": args.ov_streams} if args.ov_streams else {}),
    )  # fmt: skip
    # The worker serves /healthz, /readyz and /metrics first, then creates the topics (waiting for Kafka as
    # long as it takes: a worker started during an outage waits, it does not exit).
    worker = Worker(cfg, prepare=lambda: ensure_topics(kafka, topics, args.partitions, timeout_s=10.0),
                    on_give_up=lambda stall: exit_later(args.drain_timeout + 15.0, EXIT_STALLED))  # fmt: skip
    return worker.run(stop)


def _check_routes(args: argparse.Namespace, redis_settings: Any) -> None:
    """With --route, refuse at start-up indexes of different backbones (the worker could serve only one)."""
    if not args.route:
        return
    from framewatch.admin import ConnectionFailed, repository
    from index_store.errors import IndexStoreError, UnknownIndex
    from worker.routing import Routing, check_one_embedder

    try:
        repo = repository(redis_settings)
    except ConnectionFailed as e:
        log.warning("routes not checked at start-up (%s); a mismatched index will be refused when it loads", e)
        return
    specs = {}
    for name in Routing.parse(args.index, args.route).names():
        try:
            spec = repo.meta(name).embedder_spec
        except UnknownIndex:
            continue  # not published yet: checked when it loads
        except IndexStoreError as e:
            log.warning("index %s not checked at start-up: %s", name, e)
            continue
        specs[name] = (spec.label(), spec.fingerprint())
    check_one_embedder(specs)
