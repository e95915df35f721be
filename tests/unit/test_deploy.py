"""Deploy files parse, and every metric the alerts and dashboard query is one the worker exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from worker.metrics import WorkerMetrics

yaml = pytest.importorskip("yaml")
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def exported_names() -> set[str]:
    registry = CollectorRegistry()
    WorkerMetrics(registry)
    names = set()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
    for family in registry.collect():
        names.update(family.name + s for s in suffixes[family.type])
    return names


def queried_names() -> set[str]:
    exprs = [r["expr"] for g in yaml.safe_load((DEPLOY / "prometheus/rules.yml").read_text())["groups"] for r in g["rules"]]
    dash = json.loads((DEPLOY / "grafana/framewatch.json").read_text())
    exprs += [t["expr"] for p in dash["panels"] for t in p["targets"]]
    return set(re.findall(r"framewatch_[a-z_]+", " ".join(exprs)))


def test_every_queried_metric_is_exported():
    missing = queried_names() - exported_names()
    assert not missing, f"alerts/dashboard query metrics the worker does not export: {missing}"


def test_compose_and_k8s_files_parse_and_drain_within_grace_period():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    assert {"kafka", "redis", "worker"} <= set(compose["services"])
    assert compose["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    worker = yaml.safe_load((DEPLOY / "k8s/worker.yaml").read_text())
    pod = worker["spec"]["template"]["spec"]
    args = pod["containers"][0]["args"]
    drain = float(args[args.index("--drain-timeout") + 1])
    assert pod["terminationGracePeriodSeconds"] > drain
