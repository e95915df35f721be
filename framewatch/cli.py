"""The ``framewatch`` command line: index fit/list/activate, produce, work, watch, demo, eval.

Kafka and Redis come from ``--kafka`` / ``--redis`` or FRAMEWATCH_KAFKA /
FRAMEWATCH_REDIS; only ``demo`` starts its own when neither is given.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Optional, Sequence

from framewatch import settings as env
from wire.errors import FramewatchError
from wire.settings import KafkaSettings, RedisSettings
from wire.topics import Topics

log = logging.getLogger("framewatch")


def _kafka(args: argparse.Namespace) -> KafkaSettings:
    s = env.kafka_settings(args.kafka)
    if s is None:
        raise FramewatchError("no Kafka address: pass --kafka HOST:PORT or set FRAMEWATCH_KAFKA")
    return s


def _redis(args: argparse.Namespace) -> RedisSettings:
    s = env.redis_settings(args.redis)
    if s is None:
        raise FramewatchError("no Redis address: pass --redis redis://HOST:PORT/0 or set FRAMEWATCH_REDIS")
    return s


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT (Ctrl-C), for the long-running commands."""
    stop = threading.Event()

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


# -- index ---------------------------------------------------------------------------
def cmd_index_fit(args: argparse.Namespace) -> int:
    from framewatch.admin import repository
    from index_store.build import fit_from_images, image_paths, spec_for
    from index_store.embedder import Embedder, set_cpu_threads
    from index_store.fitting import FitConfig

    repo = repository(_redis(args))  # fail fast, before minutes of embedding
    set_cpu_threads(args.threads)
    embedder = Embedder(spec_for(args.backbone, args.weights), device=args.device, batch_size=args.batch_size)
    if embedder.spec.is_random:
        log.warning("random backbone weights: scores are far weaker than with pretrained weights")
    cfg = FitConfig(args.clusters, args.k, args.clean_fraction, args.target_fpr, args.seed)
    holdout = image_paths(args.holdout) if args.holdout else ()
    meta, index = fit_from_images(args.name, image_paths(args.images), embedder, cfg, holdout)
    meta = repo.publish(meta, index, activate=not args.no_activate)
    cal = meta.calibration
    print(
        f"published index {meta.name!r} version {meta.version}{'' if args.no_activate else ' (active)'}: "
        f"{meta.kind}, {meta.n_vectors} vectors x {meta.dim}, k={meta.k}, backbone {embedder.spec.label()}, "
        f"threshold {meta.threshold:.4g} ({cal['method']}, target FPR {cal['target_fpr']}); "
        f"embed {cal['embed_seconds']:.1f}s, fit {cal['fit_seconds']:.2f}s"
    )
    return 0


def cmd_index_list(args: argparse.Namespace) -> int:
    from framewatch.admin import repository

    summaries = repository(_redis(args)).list()
    if not summaries:
        print("no indexes")
        return 0
    print(f"{'NAME':<20} {'ACTIVE':>6} {'VERSIONS':<12} {'KIND':<7} {'SIZE':>7} {'DIM':>5} {'THRESHOLD':>10}  BACKBONE")
    for s in summaries:
        m = s.meta
        versions = ",".join(map(str, s.versions[-5:]))
        if m is None:
            print(f"{s.name:<20} {'-':>6} {versions:<12}")
            continue
        thr = f"{m.threshold:.4g}" if m.threshold is not None else "-"
        print(
            f"{s.name:<20} {s.active if s.active is not None else '-':>6} {versions:<12} {m.kind:<7} "
            f"{m.n_vectors:>7} {m.dim:>5} {thr:>10}  {m.embedder_spec.label()}"
        )
    return 0


def cmd_index_activate(args: argparse.Namespace) -> int:
    from framewatch.admin import repository

    repository(_redis(args)).activate(args.name, args.version)
    print(f"index {args.name!r} version {args.version} is active")
    return 0


# -- produce / work / watch -------------------------------------------------------------
def cmd_produce(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, start_http_server

    from framewatch.admin import ensure_topics
    from producer.metrics import ProducerMetrics
    from producer.publisher import Publisher, kafka_producer
    from producer.sources import open_source

    kafka = _kafka(args)
    topics = env.topics()
    ensure_topics(kafka, topics, args.partitions)
    registry = CollectorRegistry()
    if args.metrics_port is not None:
        start_http_server(args.metrics_port, registry=registry)
    source = open_source(args.source_path, loop=args.loop, every=args.every)
    stop = stop_on_signals()
    producer = kafka_producer(kafka)
    publisher = Publisher(producer, topics.frames, args.source, ProducerMetrics(registry), fps=args.fps)
    try:
        report = publisher.publish(source.frames(), limit=args.limit, stop=stop)
    finally:
        source.close()
        producer.close(timeout=10)
    print(f"sent {report.sent} frames from {args.source_path} as source {args.source!r}; {report.failed} failed")
    return 0 if report.failed == 0 else 1


def cmd_work(args: argparse.Namespace) -> int:
    from index_store.embedder import set_cpu_threads
    from worker.config import WorkerConfig
    from worker.decode import DecodeLimits
    from worker.loop import Worker

    kafka = _kafka(args)
    topics = env.topics()
    stop = stop_on_signals()
    if not _wait_for_topics(kafka, topics, args.partitions, stop):
        return 0  # stopped before Kafka was reachable
    set_cpu_threads(args.threads)
    cfg = WorkerConfig(
        kafka=kafka, redis=_redis(args), index=args.index, routes=tuple(args.route), topics=topics,
        group_id=args.group, worker_id=args.worker_id or "", max_batch=args.max_batch, max_wait_s=args.max_wait,
        device=args.device, window=args.window, metrics_port=args.metrics_port, drain_timeout_s=args.drain_timeout,
        limits=DecodeLimits(max_bytes=args.max_bytes, min_side=args.min_side, max_pixels=args.max_pixels),
        session_timeout_ms=args.session_timeout_ms, heartbeat_interval_ms=args.heartbeat_ms,
    )  # fmt: skip
    return Worker(cfg).run(stop)


def _wait_for_topics(kafka: KafkaSettings, topics: Topics, partitions: int, stop: threading.Event) -> bool:
    """Create the topics, waiting for Kafka as long as it takes (a worker started during an outage waits, not exits)."""
    from kafka.errors import KafkaError

    from framewatch.admin import ConnectionFailed, ensure_topics

    backoff = 1.0
    while not stop.is_set():
        try:
            ensure_topics(kafka, topics, partitions, timeout_s=10.0)
            return True
        except (ConnectionFailed, KafkaError) as e:
            log.warning("%s; retrying in %.0fs", e, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)
    return False


def cmd_watch(args: argparse.Namespace) -> int:
    from framewatch.console import ScorePrinter, follow_scores

    stop = stop_on_signals()
    printer = ScorePrinter(sys.stdout)
    for record in follow_scores(_kafka(args), env.topics().scores, stop, from_beginning=args.from_beginning):
        if not args.anomalies_only or record.is_anomaly:
            printer.print(record)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from framewatch.demo import run_demo

    return run_demo(args)


# -- parser ---------------------------------------------------------------------------
def _connection_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kafka", help="Kafka bootstrap HOST:PORT (or FRAMEWATCH_KAFKA)")
    p.add_argument("--redis", help="Redis URL (or FRAMEWATCH_REDIS)")


def _embed_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="framewatch", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    index = sub.add_parser("index", help="fit, list and activate kNN indexes in Redis")
    isub = index.add_subparsers(dest="index_command", required=True)
    fit = isub.add_parser("fit", help="embed normal images and publish a new index version")
    fit.add_argument("images", help="folder of normal images (searched recursively)")
    fit.add_argument("--name", required=True)
    fit.add_argument("--backbone", default="resnet50")
    fit.add_argument("--weights", default="IMAGENET1K_V1",
                     help="torchvision weight name (IMAGENET1K_V1/V2), pypi, random[:SEED], or a file path")
    fit.add_argument("--clusters", type=int, default=None, help="k-means centres C (default: exact kNN)")
    fit.add_argument("--k", type=int, default=2)
    fit.add_argument("--clean-fraction", type=float, default=0.0,
                     help="drop this fraction of training images with the largest kNN distance (paper: 0.5)")
    fit.add_argument("--target-fpr", type=float, default=0.01, help="false-alarm rate the threshold aims at")
    fit.add_argument("--holdout", help="folder of held-out normal images for calibration")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--batch-size", type=int, default=32)
    fit.add_argument("--no-activate", action="store_true", help="publish without switching workers to it")
    _connection_flags(fit)
    _embed_flags(fit)
    fit.set_defaults(func=cmd_index_fit)
    lst = isub.add_parser("list", help="indexes, versions, active version, size, backbone")
    _connection_flags(lst)
    lst.set_defaults(func=cmd_index_list)
    act = isub.add_parser("activate", help="switch the active version (workers reload)")
    act.add_argument("name")
    act.add_argument("version", type=int)
    _connection_flags(act)
    act.set_defaults(func=cmd_index_activate)

    prod = sub.add_parser("produce", help="publish frames from a folder, video file or camera")
    prod.add_argument("source_path", metavar="SOURCE", help="image folder, video file, camera number or RTSP URI")
    prod.add_argument("--source", required=True, help="source id (camera name), the Kafka key")
    prod.add_argument("--fps", type=float, default=0.0, help="rate limit (0 = as fast as possible)")
    prod.add_argument("--loop", action="store_true", help="start over at the end")
    prod.add_argument("--limit", type=int, default=None, help="stop after N frames")
    prod.add_argument("--every", type=int, default=1, help="video: keep one frame in N")
    prod.add_argument("--partitions", type=int, default=4, help="partitions if the topics must be created")
    prod.add_argument("--metrics-port", type=int, default=None)
    _connection_flags(prod)
    prod.set_defaults(func=cmd_produce)

    work = sub.add_parser("work", help="score frames as a member of a consumer group")
    work.add_argument("--index", required=True, help="default index name")
    work.add_argument("--route", action="append", default=[], metavar="PATTERN=INDEX",
                      help="score sources matching PATTERN (shell-style) with INDEX; repeatable")
    work.add_argument("--group", default="framewatch-workers")
    work.add_argument("--worker-id")
    work.add_argument("--max-batch", type=int, default=32, help="frames per batch (see docs/benchmarks.md)")
    work.add_argument("--max-wait", type=float, default=0.2, help="seconds a frame may wait for its batch")
    work.add_argument("--window", type=int, default=0, help="per-source window size for group scores (0 = off)")
    work.add_argument("--metrics-port", type=int, default=9108)
    work.add_argument("--drain-timeout", type=float, default=30.0)
    work.add_argument("--max-bytes", type=int, default=20 * 1024 * 1024)
    work.add_argument("--min-side", type=int, default=32)
    work.add_argument("--max-pixels", type=int, default=40_000_000)
    work.add_argument("--partitions", type=int, default=4)
    work.add_argument("--session-timeout-ms", type=int, default=10000, help="consumer group session timeout")
    work.add_argument("--heartbeat-ms", type=int, default=3000)
    _connection_flags(work)
    _embed_flags(work)
    work.set_defaults(func=cmd_work)

    watch = sub.add_parser("watch", help="print score records as they arrive")
    watch.add_argument("--anomalies-only", action="store_true")
    watch.add_argument("--from-beginning", action="store_true")
    _connection_flags(watch)
    watch.set_defaults(func=cmd_watch)

    demo = sub.add_parser("demo", help="everything end to end on embedded local services")
    demo.add_argument("--short", action="store_true", help="a smaller scene (CI)")
    demo.add_argument("--backbone", default=None, help="default: resnet18 if its weights are cached, else efficientnet_lite0")
    demo.add_argument("--weights", default=None, help="as for index fit; random to force random init")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--fps", type=float, default=0.0)
    demo.add_argument("--out", default=None, help="keep the demo images in this folder")
    demo.add_argument("--json", default=None, help="write the demo summary here")
    demo.add_argument("--timeout", type=float, default=600.0)
    _connection_flags(demo)
    demo.set_defaults(func=cmd_demo)

    try:
        from framewatch import eval_cmd
    except ImportError:
        pass
    else:
        eval_cmd.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not args.verbose:
        logging.getLogger("kafka").setLevel(logging.ERROR)
        logging.getLogger("faiss").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except FramewatchError as e:
        print(f"framewatch: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
