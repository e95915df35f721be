"""``framewatch demo``: the whole pipeline on embedded local services (see framewatch/demo.py)."""

from __future__ import annotations

import argparse
from typing import Any

from framewatch import flags


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from index_store.registry import FEATURES

    p = subparsers.add_parser("demo", help="everything end to end on embedded local services")
    p.add_argument("--short", action="store_true", help="a smaller scene (CI)")
    p.add_argument("--backbone", default=None,
                   help="default: resnet18 if its weights are cached, else efficientnet_lite0")  # fmt: skip
    p.add_argument("--weights", default=None, help="as for index fit; random to force random init")
    p.add_argument("--seed", type=int, default=0, help="seed of the demo scene")
    p.add_argument("--kind", "--features", dest="kind", choices=FEATURES, default="global",
                   help="patch: anomaly maps and hotspots over the whole frame (with --out: pictures of them)")  # fmt: skip
    p.add_argument(
        "--fps", type=flags.non_negative, default=0.0, help="producer rate limit (0 = as fast as possible)"
    )
    p.add_argument("--out", default=None, help="keep the demo images in this folder (patch kind: also "
                   "explain/FRAME.png, each flagged frame with its anomaly map and hotspot)")  # fmt: skip
    p.add_argument("--json", default=None, metavar="FILE", help="write the demo summary here")
    p.add_argument(
        "--timeout", type=flags.positive, default=600.0, help="give up after this many seconds of streaming"
    )
    flags.add_connection_flags(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from framewatch.demo import run_demo

    return run_demo(args)
