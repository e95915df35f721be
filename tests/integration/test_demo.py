"""The demo runs to completion, scores anomalies above normal frames, and leaves nothing running."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_short_demo_end_to_end(tmp_path):
    summary_path = tmp_path / "summary.json"
    proc = subprocess.run(
        [sys.executable, "-m", "framewatch.cli", "demo", "--short", "--json", str(summary_path), "--timeout", "240"],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    summary = json.loads(summary_path.read_text())
    assert summary["frames_scored"] == 32  # 24 normal + 8 anomalous
    assert summary["mean_score_anomalies"] > summary["mean_score_normal"]
    assert out.count("<< ANOMALY") >= 1
    assert "worker metrics: http://127.0.0.1:" in out
    ports = [int(p) for p in re.findall(r"started local \S+ .*?(?:127\.0\.0\.1:)(\d+)", out)]
    assert len(ports) == 2, out[:500]
    assert not any(_port_open(p) for p in ports), "demo left its broker or Redis running"
