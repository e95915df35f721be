"""``framewatch status``: every live worker from its Redis heartbeat (group, partitions, indexes, lag, readiness)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from framewatch import flags


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "status", help="live workers: group, partitions, index versions, lag, readiness"
    )
    p.add_argument("--json", action="store_true", help="the heartbeats as JSON")
    flags.add_connection_flags(p, kafka=False)
    p.set_defaults(func=run)
    return p


def _indexes(served: Any) -> str:
    if isinstance(served, dict):
        return ",".join(f"{n}@{v}" for n, v in sorted(served.items())) or "-"
    return str(served or "-")


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
            f"{_indexes(s.get('indexes')):<24} {lag if lag is not None else '-':>7} {ready:<6} {seen:>5}  {s.get('detail', '')}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from index_store.keys import Keys
    from worker.heartbeat import read_all

    settings = flags.redis_settings(args)
    from framewatch.admin import repository

    states = read_all(repository(settings).r, Keys(settings.key_prefix))
    print(json.dumps(states, indent=1, sort_keys=True) if args.json else render(states, time.time()))
    return 0
