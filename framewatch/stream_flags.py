"""Flags of the commands that read a camera's frames back from the frames topic
(``index fit --from-topic``, ``index recalibrate``), and how they turn into a ``Period``."""

from __future__ import annotations

import argparse
import re

from framewatch import flags
from framewatch.topic_frames import Period
from index_store import stream_defaults
from wire.errors import FramewatchError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``6h``, ``2d``, ``1w`` -> seconds (> 0)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"expected a duration like 90s, 15m, 6h or 2d, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


duration.__name__ = "duration"


def add_topic_flags(p: argparse.ArgumentParser, required: bool = False) -> None:
    """``--from-topic [TOPIC] --source CAM --since DURATION | --last N`` and sampling."""
    p.add_argument("--from-topic", nargs="?", const="", default="" if required else None, metavar="TOPIC",
                   help="read the camera's frames from this topic (no value: the configured frames topic)")  # fmt: skip
    p.add_argument("--source", default=None, help="the camera (source id, the frames' key) to read")
    period = p.add_mutually_exclusive_group()
    period.add_argument("--since", type=duration, default=None, metavar="DURATION",
                        help="frames of the last DURATION by Kafka timestamp (90s, 15m, 6h, 2d)")  # fmt: skip
    period.add_argument("--last", type=flags.positive_int, default=None, metavar="N",
                        help="the camera's last N frames")  # fmt: skip
    p.add_argument("--every", type=flags.positive_int, default=None, metavar="K",
                   help="take every K-th frame of the period (then at most --max-frames, spread evenly)")  # fmt: skip
    p.add_argument("--max-frames", type=flags.positive_int, default=stream_defaults.MAX_FRAMES,
                   help="frames embedded at most, spread evenly over the period")  # fmt: skip


def period(args: argparse.Namespace) -> Period:
    """:raises FramewatchError: no camera or no period given."""
    if not args.source:
        raise FramewatchError("--from-topic needs --source CAM (the camera whose frames to read)")
    if args.since is None and args.last is None:
        raise FramewatchError(
            "--from-topic needs --since DURATION or --last N (which of the camera's frames)"
        )
    return Period(since_s=args.since, last=args.last)


def topic(args: argparse.Namespace) -> str:
    return args.from_topic or flags.topics(args).frames
