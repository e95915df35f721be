"""``framewatch watch``: follow the score topic as a table, or as JSON lines with ``--json``."""

from __future__ import annotations

import argparse
import fnmatch
import select
import sys
import threading
from typing import Any

from framewatch import flags
from framewatch.signals import stop_on_signals


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("watch", help="print score records as they arrive")
    p.add_argument("--anomalies-only", action="store_true", help="only frames over their threshold")
    p.add_argument("--source", action="append", default=[], metavar="PATTERN",
                   help="only sources matching this shell-style pattern, e.g. 'gate-*'; repeatable")  # fmt: skip
    p.add_argument("--json", action="store_true", help="one JSON score record per line, as published")
    p.add_argument("--from-beginning", action="store_true", help="start at the oldest record, not the newest")
    flags.add_connection_flags(p, redis=False)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from framewatch.console import JsonPrinter, ScorePrinter, follow_messages

    kafka = flags.kafka_settings(args)
    topic = flags.topics(args).scores
    stop = stop_on_signals()
    threading.Thread(target=_stop_when_reader_leaves, args=(sys.stdout, stop), daemon=True).start()
    printer = JsonPrinter(sys.stdout) if args.json else ScorePrinter(sys.stdout)
    printer.header()
    for record, raw in follow_messages(kafka, topic, stop, from_beginning=args.from_beginning):
        if args.anomalies_only and not record.is_anomaly:
            continue
        if args.source and not any(fnmatch.fnmatchcase(record.source, pat) for pat in args.source):
            continue
        if args.json:
            printer.print_raw(raw)  # type: ignore[union-attr]
        else:
            printer.print(record)  # type: ignore[union-attr]
    return 0


def _stop_when_reader_leaves(stream: Any, stop: threading.Event) -> None:
    """`watch | head`: once head has its lines and exits, stop, even if no record comes to fail a write.

    The write end of a pipe whose reader is gone polls as POLLERR (Linux, macOS); a terminal or file never does.
    """
    try:
        poller = select.poll()
        poller.register(stream.fileno(), 0)  # errors and hang-ups are always reported
    except (AttributeError, OSError, ValueError):
        return  # no poll() here, or not a real file
    while not stop.wait(0.5):
        if any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0)):
            stop.set()
