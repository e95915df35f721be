"""Issue 18, finding 8: ``framewatch produce`` across a real broker restart.

The broker (Tansu, memory storage) is stopped while the producer publishes
and started again empty: the producer's idempotence state is gone with it.
The producer must publish again afterwards (renewing its producer when the
old one is broken for good) and stop at ``--limit`` frames attempted.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from framewatch.services import LocalBroker, free_port
from tests.conftest import png_bytes
from tests.integration import harness as h
from wire.settings import KafkaSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def test_produce_keeps_publishing_after_a_broker_restart_and_stops_at_limit(tmp_path, unique):
    for i in range(3):
        (tmp_path / f"{i}.png").write_bytes(png_bytes(i))
    with LocalBroker(port=free_port()) as broker:
        kafka = KafkaSettings(bootstrap=broker.bootstrap)
        topics = h.topics_for(unique, kafka, partitions=1)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FRAMEWATCH_TOPIC_FRAMES": topics.frames}
        proc = subprocess.Popen(
            [sys.executable, "-m", "framewatch.cli", "produce", str(tmp_path), "--source", "camR", "--loop",
             "--fps", "20", "--limit", "1000", "--kafka", broker.bootstrap],
            env=env, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out: list[str] = []
        err: list[str] = []
        for stream, sink in ((proc.stdout, out), (proc.stderr, err)):
            threading.Thread(target=lambda s=stream, k=sink: k.extend(iter(s.readline, "")), daemon=True).start()
        try:
            assert h.wait_until(lambda: len(h.read_topic(kafka, topics.frames)) >= 10, 60), err
            broker.stop()
            assert h.wait_until(lambda: any("not acknowledged" in line for line in err), 90), err
            broker.start()
            h.topics_for(unique, kafka, partitions=1)
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
        after = h.read_topic(kafka, topics.frames)  # memory storage: only frames sent after the restart
    text = "".join(err)
    assert after, f"nothing published after the restart:\n{text[-3000:]}"
    (summary,) = [line for line in out if line.startswith("sent ")]
    sent, failed = map(int, re.match(r"sent (\d+) frames .*; (\d+) failed", summary).groups())  # type: ignore[union-attr]
    assert sent + failed == 1000, summary  # --limit counts frames attempted
    assert failed >= 1 and proc.returncode == 1, (summary, proc.returncode)
    assert len(after) <= sent and "Traceback" not in text, text[-3000:]
    print(summary, f"| after the restart: {len(after)} |", "renewed" if "renewing the producer" in text else "")
