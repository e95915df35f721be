"""How long ``framewatch learn`` takes to give a new camera its own index, once the camera has sent enough frames.

    PYTHONPATH=. python benchmarks/learn_time.py [--cameras 2] [--frames 500] [--threads 2] [--size 1280x720]

Publishes, per camera, ``--frames`` frames of benchmarks/stream_scenes.py's scene (10 % anomalous, one static
stretch), upscaled to ``--size`` and JPEG-encoded as a camera sends them, one a second by Kafka timestamp (so
the span is --frames seconds); then starts the real ``framewatch learn --match 'cam-*' --frames N --min-span
(N-1)s --activate`` and times, per camera, the fit (read back by offset, decode, embed, dedup, clean,
calibrate, publish: the learner's ``framewatch_learn_last_fit_seconds``) and the wall time from the learner's
start to each camera's active version. Starts its own broker and Redis (framewatch.services).
The time a camera takes to get its index is then max(--frames / its frame rate, --min-span) + that fit time.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--frames", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--size", default="1280x720")
    p.add_argument("--backbone", default="efficientnet_lite0")
    p.add_argument("--json", default=None)
    a = p.parse_args()
    w, h = (int(v) for v in a.size.split("x"))

    import redis
    from kafka import KafkaProducer

    from benchmarks.stream_scenes import camera_stream
    from framewatch.admin import ensure_topics
    from framewatch.services import LocalBroker, LocalRedis
    from index_store.repository import IndexRepository
    from wire.records import FrameRecord
    from wire.settings import KafkaSettings
    from wire.topics import Topics

    with LocalBroker() as broker, LocalRedis() as rds:
        kafka = KafkaSettings(bootstrap=broker.bootstrap)
        topics = Topics(frames="frames", scores="scores", dead_letters="frames.dlq")
        ensure_topics(kafka, topics, partitions=4)
        producer = KafkaProducer(acks="all", max_request_size=20 << 20, **kafka.client_kwargs())
        start_ms = int(time.time() * 1000) - a.frames * 1000
        sizes = []
        for cam in range(a.cameras):
            stream = camera_stream(cam, 0.1, n_learn=a.frames, n_test_normal=1, n_test_anomalies=1, n_clean=1)
            for i, img in enumerate(stream.learn):
                buf = io.BytesIO()
                img.resize((w, h)).save(buf, format="JPEG", quality=85)
                sizes.append(buf.tell())
                rec = FrameRecord(frame_id=f"{stream.name}-{i}", source=stream.name, sequence=i, capture_time=0.0,
                                  image=buf.getvalue(), content_type="image/jpeg")  # fmt: skip
                key, value, headers = rec.encode()
                producer.send(
                    "frames", key=key, value=value, headers=headers, timestamp_ms=start_ms + i * 1000
                )
        producer.flush()
        producer.close()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FRAMEWATCH_KAFKA": broker.bootstrap,
               "FRAMEWATCH_REDIS": rds.url}  # fmt: skip
        cmd = [sys.executable, "-m", "framewatch.cli", "learn", "--match", "cam-*", "--frames", str(a.frames),
               "--min-span", f"{a.frames - 1}s", "--activate", "--backbone", a.backbone, "--threads", str(a.threads),
               "--metrics-port", "0", "--metrics-host", "127.0.0.1"]  # fmt: skip
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        repo = IndexRepository(redis.Redis.from_url(rds.url))
        ready: dict[str, float] = {}
        lines: list[str] = []
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        while len(ready) < a.cameras and proc.poll() is None and time.monotonic() - t0 < 1800:
            lines += [line.rstrip() for line in iter(proc.stdout.readline, "")]
            for cam in range(a.cameras):
                name = f"cam-{cam}"
                if name not in ready and repo.active_version(name) is not None:
                    ready[name] = time.monotonic() - t0
            time.sleep(0.2)
        proc.terminate()
        proc.wait(60)
        lines += [line.rstrip() for line in (proc.stdout.read() or "").splitlines()]
        starts = [ln for ln in lines if "fitting camera" in ln or "learned " in ln]
        fits = _fit_seconds(starts)
        result = {"cameras": a.cameras, "frames": a.frames, "size": a.size, "jpeg_kib": round(sum(sizes) / len(sizes) / 1024, 1),
                  "backbone": a.backbone, "threads": a.threads, "fit_seconds": fits,
                  "active_after_start_s": {k: round(v, 1) for k, v in ready.items()},
                  "n_vectors": {k: repo.meta(k).n_vectors for k in ready}}  # fmt: skip
        print(json.dumps(result, indent=1))
        if len(ready) < a.cameras:
            print("\n".join(lines[-40:]), file=sys.stderr)
            return 1
        if a.json:
            Path(a.json).write_text(json.dumps(result, indent=1))
    return 0


def _fit_seconds(lines: list[str]) -> dict[str, float]:
    """Per camera, from the learner's log: the time between 'fitting camera X' and 'learned X'."""
    stamp = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
    began: dict[str, float] = {}
    out: dict[str, float] = {}
    for line in lines:
        m, cam = stamp.match(line), re.search(r"'(cam-\d+)'", line)
        if not m or not cam:
            continue
        t = time.mktime(time.strptime(m.group(1)[:19], "%Y-%m-%d %H:%M:%S")) + int(m.group(1)[20:]) / 1000
        if "fitting camera" in line:
            began[cam.group(1)] = t
        elif cam.group(1) in began:
            out[cam.group(1)] = round(t - began[cam.group(1)], 1)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
