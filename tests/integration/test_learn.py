"""``framewatch learn`` as a real process on a real broker and Redis: a new camera that publishes frames gets an
index with no other command; a camera that has one, or that no pattern matches, is left alone; a restart refits
nothing; ``framewatch status`` says which cameras are candidate or active."""

from __future__ import annotations

import os
import sys
import time

import pytest

from framewatch.cli import main
from tests.integration import harness as h
from tests.integration.test_stream_fit import SMALL, env, frames, produce  # noqa: F401 - env is a fixture

pytestmark = pytest.mark.integration
MIN_MS = 60_000


def learner(kafka_settings, topics, unique: str, *extra: str) -> h.WorkerProcess:  # type: ignore[no-untyped-def]
    cmd = [sys.executable, "-m", "framewatch.cli", "learn", "--match", "cam-*", "--frames", "8", "--min-span", "2m",
           "--group", f"learn-{unique}", "--metrics-port", "0", "--metrics-host", "127.0.0.1", *SMALL, *extra]  # fmt: skip
    return h.WorkerProcess(cmd, {**os.environ, "OMP_NUM_THREADS": "1"})


def spread(
    kafka_settings, topic: str, source: str, seeds: list[int], minutes_ago: float, step_ms: int = MIN_MS
) -> None:  # type: ignore[no-untyped-def]
    """The camera's frames from ``minutes_ago`` minutes before now, ``step_ms`` apart (Kafka timestamps)."""
    start = int(time.time() * 1000 - minutes_ago * MIN_MS)
    for i, record in enumerate(frames(source, seeds)):
        produce(kafka_settings, topic, [record], start + i * step_ms)


def fits(proc: h.WorkerProcess, outcome: str) -> float:
    return proc.metric(f'framewatch_learn_fits_total{{outcome="{outcome}"}}')


def test_a_new_camera_gets_its_own_index_and_a_restart_refits_nothing(env, kafka_settings, unique, capsys):  # type: ignore[no-untyped-def]  # noqa: F811
    topics, repo = env
    produce(kafka_settings, topics.frames, frames("cam-b", list(range(300, 310))), int(time.time() * 1000))
    assert (
        main(["index", "fit", "--name", "cam-b", *SMALL, "--from-topic", "--source", "cam-b", "--last", "10"])
        == 0
    )
    spread(
        kafka_settings, topics.frames, "cam-a", list(range(12)), minutes_ago=12
    )  # 12 frames over 11 minutes
    spread(
        kafka_settings, topics.frames, "gate-1", list(range(100, 112)), minutes_ago=12
    )  # no pattern matches
    spread(
        kafka_settings, topics.frames, "cam-c", list(range(200, 212)), 10, step_ms=100
    )  # 12 frames in 1.1 s

    proc = learner(kafka_settings, topics, unique)
    try:
        assert h.wait_until(lambda: fits(proc, "fitted") >= 1 or not proc.alive(), 180), proc.output()
        assert proc.get("/readyz")[0] == 200 and proc.get("/healthz")[0] == 200
        body = proc.get("/metrics")[1]
        assert h.metric_value(body, 'framewatch_learn_cameras{state="fitted"}') == 1
        assert h.metric_value(body, 'framewatch_learn_cameras{state="indexed"}') == 1  # cam-b
        assert h.metric_value(body, 'framewatch_learn_cameras{state="learning"}') == 1, (
            body + proc.output()
        )  # cam-c
        assert fits(proc, "failed") == 0
    finally:
        assert proc.terminate() == 0, proc.output()

    meta = repo.meta("cam-a", 1)
    assert meta.frames_from["source"] == "cam-a" and meta.frames_from["frames_used"] == 12
    assert repo.candidates("cam-a") == [1] and repo.active_version("cam-a") is None  # a candidate by default
    assert repo.versions("cam-b") == [1] and not repo.has_index("gate-1") and not repo.has_index("cam-c")

    capsys.readouterr()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:3] == ["cam-a", "cam-a", "candidate"] for line in out.splitlines()), out
    assert any(line.split()[:3] == ["cam-c", "cam-c", "learning"] for line in out.splitlines()), out

    # Restarted with --activate: cam-a has its candidate (not refitted); cam-c, seen again from its first frame
    # (the group's commit waited for it), learns once its span is long enough.
    proc = learner(kafka_settings, topics, unique, "--activate")
    try:
        spread(kafka_settings, topics.frames, "cam-a", list(range(20, 23)), 0, step_ms=100)
        spread(
            kafka_settings, topics.frames, "cam-c", list(range(212, 215)), 0, step_ms=100
        )  # 10 minutes later
        assert h.wait_until(lambda: fits(proc, "fitted") >= 1 or not proc.alive(), 180), proc.output()
        assert h.wait_until(
            lambda: proc.metric('framewatch_learn_cameras{state="indexed"}') >= 1, 60
        )  # cam-a
    finally:
        assert proc.terminate() == 0, proc.output()
    assert repo.versions("cam-a") == [1] and repo.versions("cam-b") == [1]
    assert repo.active_version("cam-c") == 1 and repo.meta("cam-c").frames_from["frames_used"] == 15
    capsys.readouterr()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert any(line.split()[:3] == ["cam-c", "cam-c", "active"] for line in out.splitlines()), out
