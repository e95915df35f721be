"""``framewatch explain FRAME_ID``: a PNG that shows why a frame got its score.

Finds the frame's first score record on the score topic, fetches the frame
by the Kafka coordinates the record carries, and draws the anomaly map over
it (patch index) or puts it beside its nearest normal training frames
(global index): files for a folder fit, ``kafka://TOPIC/PARTITION/OFFSET``
frames fetched from Kafka for an index fitted ``--from-topic``.
"""

from __future__ import annotations

import argparse
from typing import Any

from framewatch import flags


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("explain", help="write a PNG showing why a frame scored as it did")
    p.add_argument("frame_id", metavar="FRAME_ID")
    p.add_argument("--out", default=None, help="PNG path (default: explain-FRAME_ID.png)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to search the score topic")
    flags.add_connection_flags(p, redis=False)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from framewatch.explain_render import explain_image
    from review.frames import FrameFetcher, find_scores
    from wire.errors import FramewatchError
    from worker.decode import decode_image

    kafka = flags.kafka_settings(args)
    scores = flags.topics(args).scores
    record = find_scores(kafka, scores, [args.frame_id], args.timeout).get(args.frame_id)
    if record is None:
        raise FramewatchError(f"no score record for frame {args.frame_id!r} on topic {scores!r}")
    fetcher = FrameFetcher(kafka, cache_size=1, timeout_s=args.timeout)
    try:
        frame = fetcher.fetch(record.frame_topic, record.frame_partition, record.frame_offset)
        out = args.out or f"explain-{''.join(c if c.isalnum() or c in '-_.' else '_' for c in args.frame_id)}.png"  # fmt: skip
        explain_image(decode_image(frame.image), record, _origin_opener(fetcher)).save(out)
    finally:
        fetcher.close()
    why = ", ".join(
        (["anomaly map"] if record.anomaly_map is not None else [])
        + ([f"{len(record.neighbors)} nearest normal frames"] if record.neighbors else [])
    ) or "no map and no nearest normal frames"
    print(f"{out}: frame {record.frame_id} score {record.score:.4g} (threshold {record.threshold}), {why}")
    return 0


def _origin_opener(fetcher: Any) -> Any:
    """Opens a nearest normal frame: fetched from Kafka for a ``kafka://`` origin (None when it is gone),
    else read from the file path as before."""
    from framewatch.explain_render import open_path
    from framewatch.topic_frames import parse_stream_origin
    from wire.errors import FramewatchError
    from worker.decode import decode_image

    def open_origin(origin: str) -> Any:
        where = parse_stream_origin(origin)
        if where is None:
            return open_path(origin)
        try:
            frame = fetcher.fetch(*where)
            return decode_image(frame.image, frame.content_type)
        except FramewatchError:  # gone (retention) or unreadable: the tile says "not on this machine"
            return None

    return open_origin
