"""`framewatch bench` runs end to end on embedded services and writes the figures a user sizes a deployment with."""

from __future__ import annotations

import importlib.util
import json
import platform
import subprocess
import sys

import pytest

from framewatch.bench_cmd import JSON_KEYS

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_prints_every_figure_and_writes_exactly_the_documented_json_keys(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "framewatch.cli", "bench", "--frames", "8", "--batch", "4", "--backbone", "resnet18",
         "--weights", "random", "--latency-seconds", "2", "--partitions", "1", "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    for line in ("decode (pool)", "extractor (decode + embed)", "pipeline (through the broker)",
                 "null pipeline (no decode, no embed)", "raw consume", "pipeline / extractor", "p99", "best of 1 rounds"):  # fmt: skip
        assert line in run.stdout
    figures = json.loads(out.read_text())
    assert tuple(figures) == JSON_KEYS
    assert figures["frames"] == 8 and figures["batch"] == 4 and figures["device"] == "cpu"
    assert figures["kafka_client"] == "kafka-python"  # the default, and what the ratio's raw consume used
    if sys.platform == "linux" and platform.libc_ver()[0] == "glibc":  # set up before the worker's threads start
        assert figures["malloc"].startswith("glibc, kept for reuse") and figures["malloc"] in run.stdout
    assert all(figures[k] > 0 for k in ("decode_fps", "extractor_fps", "pipeline_fps", "null_pipeline_fps",
                                        "raw_consume_fps", "p50_latency_s", "p99_latency_s"))  # fmt: skip
    if importlib.util.find_spec("confluent_kafka") is not None:  # the optional client, measured beside the other
        assert figures["raw_consume_confluent_fps"] > 0 and "raw consume (confluent-kafka)" in run.stdout
    else:
        assert figures["raw_consume_confluent_fps"] is None


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_bench_compares_runtimes_side_by_side_in_one_run(tmp_path):
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "framewatch.cli", "bench", "--frames", "8", "--batch", "4", "--backbone", "resnet18",
         "--weights", "random", "--latency-seconds", "2", "--partitions", "1", "--repeats", "1", "--json", str(out),
         "--device", "cpu", "--runtime", "torch,openvino", "--precision", "fp32"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {line.split()[0]: line.split()[1:] for line in run.stdout.splitlines() if line.startswith(("torch/", "openvino/"))}
    assert set(rows) == {"torch/fp32", "openvino/fp32"} and "pipeline x torch/fp32" in run.stdout
    assert float(rows["torch/fp32"][3]) == 1.0  # each runtime's pipeline over the first's
    figures = json.loads(out.read_text())
    assert figures["runtimes"] == ["torch/fp32", "openvino/fp32"]
    for name in figures["runtimes"]:
        assert figures[f"extractor_fps@{name}"] > 0 and figures[f"pipeline_fps@{name}"] > 0
        assert figures[f"pipeline_over_extractor@{name}"] > 0
    assert figures["extractor_fps"] == figures["extractor_fps@torch/fp32"]  # the plain figures are the first's
