"""``framewatch index status NAME``: the recent alarm rate of the active version and of each candidate.

The rates come from per-minute counters the workers add to in Redis
(worker/verdicts.py): every frame scored by the active version, and every
candidate verdict scored in the shadow (worker/candidates.py). So the figures
cover every worker of every group that serves the index, and need no read of
the scores topic. A candidate's row also gives the active version's alarm rate
on the very frames the candidate scored, so the two compare like for like.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, Optional

from framewatch import flags, stream_flags

MAX_SINCE_S = 2 * 86_400.0  # the counters expire after two days (index_store/repository.py VERDICT_TTL_S)


def add_parser(isub: Any) -> None:
    p = isub.add_parser(
        "status",
        help="alarm rate of the active version and of each candidate over the recent stream",
        description="Frames scored and alarms raised by the active version and, in the shadow, by each candidate "
        "version, over the last --since, as counted by every worker serving the index. Candidates never raise "
        "alerts; `index promote NAME VERSION` makes one active.",
    )
    p.add_argument("name", help="index name")
    p.add_argument("--since", type=stream_flags.duration, default="1h",
                   help="how far back to count (e.g. 15m, 6h; default 1h, at most 2d)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="the figures as JSON")
    flags.add_connection_flags(p, kafka=False)
    p.set_defaults(func=run)


def rows(repo: Any, name: str, since_s: float, now: float, serving: dict[int, int]) -> list[dict[str, Any]]:
    """One row per version shown: the active one, then each candidate (ascending)."""
    active = repo.active_version(name)
    candidates = repo.candidates(name)
    versions = ([active] if active is not None else []) + [v for v in candidates if v != active]
    counts = repo.verdicts(name, versions, min(since_s, MAX_SINCE_S), now)
    out = []
    for v in versions:
        meta = repo.meta(name, v)
        c = counts[v]
        out.append({
            "version": v, "role": "active" if v == active else "candidate", "frames": c.scored, "alarms": c.alarms,
            "alarm_rate": c.rate, "target_fpr": meta.calibration.get("target_fpr"), "threshold": meta.threshold,
            "active_alarm_rate": c.active_rate if v != active else None, "workers": serving.get(v, 0),
        })  # fmt: skip
    return out


def render(name: str, since_s: float, table: list[dict[str, Any]]) -> str:
    if not table:
        return f"index {name!r} has no active version and no candidate"
    lines = [
        f"index {name}: alarm rates over the last {_span(since_s)} (counted by the workers, per minute)",
        f"{'VERSION':>7}  {'ROLE':<10} {'FRAMES':>8} {'ALARMS':>7} {'RATE':>7} {'TARGET':>7} {'THRESHOLD':>10} "
        f"{'ACTIVE ON SAME FRAMES':>21} {'WORKERS':>7}",
    ]
    for r in table:
        thr = "-" if r["threshold"] is None else f"{r['threshold']:.4g}"
        lines.append(
            f"{r['version']:>7}  {r['role']:<10} {r['frames']:>8} {r['alarms']:>7} {_pct(r['alarm_rate']):>7} "
            f"{_pct(r['target_fpr']):>7} {thr:>10} {_pct(r['active_alarm_rate']):>21} {r['workers']:>7}"
        )
    waiting = [r for r in table if r["role"] == "candidate"]
    if any(r["frames"] == 0 for r in waiting):
        lines.append("a candidate with no frames: no worker serving this index has scored a frame with it, or each "
                     "one refused it (framewatch status lists the candidates each worker shadows; /readyz and the "
                     "worker's log say why one was refused)")  # fmt: skip
    if waiting:
        lines.append(f"candidates never raise alerts; make one active: framewatch index promote {name} VERSION")
    return "\n".join(lines)


def serving_workers(states: list[dict[str, Any]], name: str) -> dict[int, int]:
    """version -> live workers serving it (active) or scoring it in the shadow, from their heartbeats."""
    out: dict[int, int] = {}
    for s in states:
        seen = set()
        indexes, shadow = s.get("indexes"), s.get("candidates")
        if isinstance(indexes, dict) and isinstance(indexes.get(name), int):
            seen.add(indexes[name])
        if isinstance(shadow, dict) and isinstance(shadow.get(name), list):
            seen.update(v for v in shadow[name] if isinstance(v, int))
        for v in seen:
            out[v] = out.get(v, 0) + 1
    return out


def run(args: argparse.Namespace) -> int:
    from framewatch.admin import repository
    from worker.heartbeat import read_all

    repo = repository(flags.redis_settings(args))
    now = time.time()
    table = rows(repo, args.name, args.since, now, serving_workers(read_all(repo), args.name))
    if args.json:
        print(json.dumps({"index": args.name, "since_s": min(args.since, MAX_SINCE_S), "versions": table}, indent=1))
    else:
        print(render(args.name, min(args.since, MAX_SINCE_S), table))
    return 0


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _span(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:.0f}s"
