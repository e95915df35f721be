"""``framewatch status``: every live worker from its Redis heartbeat (group, partitions, indexes, lag, readiness),
then each camera's alarm rate against its index's target and its score drift (worker/drift.py), then the cameras
``framewatch learn`` is learning or has learned (learning, fitting, failed, candidate, active)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from framewatch import flags


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "status", help="live workers (group, partitions, index versions, lag, readiness) and per-camera alarm rate and drift"
    )
    p.add_argument("--json", action="store_true", help="the heartbeats as JSON")
    flags.add_connection_flags(p, kafka=False)
    p.set_defaults(func=run)
    return p


def _indexes(served: Any, shadow: Any = None) -> str:
    """``name@version`` per index served, ``+vN`` per candidate version scored in the shadow: ``cams@4+v5`` serves
    version 4 of ``cams`` and scores candidate 5 in the shadow (``framewatch index status cams``: both alarm rates)."""
    if not isinstance(served, dict):
        return str(served or "-")
    shadow = shadow if isinstance(shadow, dict) else {}
    return ",".join(
        f"{n}@{v}" + "".join(f"+v{c}" for c in (shadow.get(n) if isinstance(shadow.get(n), list) else []))
        for n, v in sorted(served.items())
    ) or "-"


def render(states: list[dict[str, Any]], now: float) -> str:
    if not states:
        return "no live workers (none has written a heartbeat within its expiry)"
    lines = [
        f"{'WORKER':<24} {'GROUP':<20} {'PARTITIONS':<12} {'INDEXES':<24} {'LAG':>7} {'READY':<6} {'SEEN':>5}  DETAIL"
    ]
    for s in states:
        parts = ",".join(str(p) for p in s.get("partitions") or []) or "-"
        lag = s.get("lag")
        ready = "yes" if s.get("ready") else "no"
        seen = f"{max(0.0, now - float(s.get('at', now))):.0f}s"
        lines.append(
            f"{str(s.get('worker_id', '?')):<24} {str(s.get('group', '-')):<20} {parts:<12} "
            f"{_indexes(s.get('indexes'), s.get('candidates')):<24} {lag if lag is not None else '-':>7} {ready:<6} {seen:>5}  {s.get('detail', '')}"
        )
    return "\n".join(lines + _cameras(states))


def _cameras(states: list[dict[str, Any]]) -> list[str]:
    """One line per camera a worker reports (its worst --drift-sources), "!" past an alert's threshold."""
    from worker.drift import ALARM_RATIO_ALERT, DRIFT_ALERT

    rows = [(s.get("worker_id", "?"), d) for s in states for d in s.get("drift") or [] if isinstance(d, dict)]
    if not rows:
        return []
    lines = ["", f"{'CAMERA':<20} {'WORKER':<24} {'INDEX':<16} {'FRAMES':>6} {'ALARMS':>7} {'TARGET':>7} "
                 f"{'xTARGET':>8} {'DRIFT':>6}  REF"]  # fmt: skip
    for worker, d in sorted(rows, key=lambda r: str(r[1].get("source"))):
        rate, target, drift = d.get("alarm_rate"), d.get("target_fpr"), d.get("drift")
        ratio = rate / target if isinstance(rate, (int, float)) and isinstance(target, (int, float)) and target else None
        ratio_s = "-" if ratio is None else f"{ratio:.1f}" + ("!" if ratio > ALARM_RATIO_ALERT else "")
        drift_s = "-" if not isinstance(drift, (int, float)) else f"{drift:.1f}" + ("!" if drift > DRIFT_ALERT else "")
        lines.append(
            f"{str(d.get('source', '?')):<20} {str(worker):<24} {str(d.get('index', '-')):<16} "
            f"{d.get('frames', 0):>6} {_percent(rate):>7} {_percent(target):>7} {ratio_s:>8} {drift_s:>6}  "
            f"{d.get('reference', '-')}"
        )
    return lines


def _percent(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, (int, float)) else "-"


def learning(repo: Any) -> list[str]:
    """One line per camera ``framewatch learn`` has taken up: learning (frames, span), fitting, failed (why),
    or its learned version and whether it is a candidate or active now."""
    records = repo.learning()
    if not records:
        return []
    lines = ["", f"{'LEARNING CAMERA':<20} {'INDEX':<20} {'STATE':<10} {'FRAMES':>6} {'SPAN':>7}  DETAIL"]
    for source, r in sorted(records.items()):
        state, index, version = str(r.get("state", "?")), str(r.get("index", "-")), r.get("version")
        detail = str(r.get("error") or "")
        if state == "fitted" and isinstance(version, int):
            active = repo.active_version(index)
            state = "active" if active == version else "candidate" if version in repo.candidates(index) else state
            detail = f"version {version}" + (f" (active: {active})" if active not in (None, version) else "")
        lines.append(f"{source:<20} {index:<20} {state:<10} {r.get('frames', 0):>6} "
                     f"{float(r.get('span_s') or 0) / 60:>6.1f}m  {detail}")  # fmt: skip
    return lines


def run(args: argparse.Namespace) -> int:
    from worker.heartbeat import read_all

    settings = flags.redis_settings(args)
    from framewatch.admin import repository

    repo = repository(settings)
    states = read_all(repo)
    print(json.dumps(states, indent=1, sort_keys=True) if args.json else render(states, time.time()))
    lines = [] if args.json else learning(repo)
    if lines:
        print("\n".join(lines))
    return 0
