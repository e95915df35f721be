"""The ``framewatch`` command line: index, produce, work, watch, demo, eval, ...

How commands are registered (so each lives in its own module and merges cleanly):

- A command is a module ``framewatch/<name>_cmd.py`` with ``add_parser(subparsers)``, which
  calls ``subparsers.add_parser("<name>", help=...)``, adds the flags and
  ``set_defaults(func=run)``, and one line in ``COMMANDS`` below (module and one-line help).
- Only the module of the command being run is imported (the others appear in
  ``framewatch --help`` from their ``COMMANDS`` line), so keep module top levels light:
  torch, faiss, timm, kafka and redis are imported inside ``run``. ``framewatch --help``
  and ``--version`` import none of them.
- Every flag has a help string; defaults are shown by the formatter, so do not repeat
  them in the help text. Use the types in ``framewatch.flags`` so that bad values stop
  the command at parse time with one line, before any work starts.
- ``run(args)`` returns the exit code. Kafka, Redis and topic settings come from
  ``framewatch.flags.kafka_settings(args)`` etc. (flags > environment > config file).
  Errors the user can fix are ``wire.errors.FramewatchError``; ``main`` prints them
  as one line ``framewatch: error: ...`` and exits 2.

Global flags (``-v``, ``--log-format``, ``--config``) may be given before or after the command.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import Any, Optional, Sequence

from framewatch import allocator, logs
from framewatch import settings as cfg
from framewatch.signals import stop_on_signals
from wire.errors import FramewatchError

__all__ = ["COMMANDS", "build_parser", "main", "stop_on_signals"]
log = logging.getLogger("framewatch")

# name -> (module with add_parser, one-line help shown by `framewatch --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "index": ("framewatch.index_cmd", "fit, list and activate kNN indexes in Redis"),
    "produce": ("framewatch.produce_cmd", "publish frames from a folder, video file, camera or RTSP stream"),
    "work": ("framewatch.work_cmd", "score frames as a member of a consumer group"),
    "watch": ("framewatch.watch_cmd", "print score records as they arrive"),
    "demo": ("framewatch.demo_cmd", "everything end to end on embedded local services"),
    "eval": ("framewatch.eval_cmd", "one-class ROC-AUC on a labelled dataset (DN2 protocol)"),
    "alert": ("framewatch.alert_cmd", "deliver anomalies to a webhook, Slack or stdout"),
    "review": ("framewatch.review_cmd", "a web page to review flagged frames and mark false alarms"),
    "status": ("framewatch.status_cmd", "live workers: group, partitions, index versions, lag, readiness"),
    "explain": ("framewatch.explain_cmd", "render why a frame scored as it did (anomaly map or nearest normals)"),
    "bench": ("framewatch.bench_cmd", "measure one worker's throughput and latency on this machine"),
    "learn": ("framewatch.learn_cmd", "fit an index for each new camera from its own stream"),
}


class HelpFormatter(argparse.HelpFormatter):
    """Shows each flag's default after its help, where there is a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        hidden = default is None or default is False or default is argparse.SUPPRESS or default == []
        if "%(default)" in text or not action.option_strings or hidden:
            return text
        return f"{text} (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line, and whose help shows defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("framewatch")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _add_global_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-v", "--verbose", action="store_true", help="debug logging, and kafka-python's own log unfiltered"
    )
    p.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="log lines on stderr as text or JSON"
    )
    p.add_argument("--config", metavar="FILE", default=None,
                   help="TOML file with the FRAMEWATCH_* settings (else $FRAMEWATCH_CONFIG); flags and env win")  # fmt: skip


def build_parser(command: Optional[str] = None) -> argparse.ArgumentParser:
    """The parser with ``command``'s real subparser; the other commands are name-and-help stubs."""
    parser = Parser(
        prog="framewatch", description="Streaming image anomaly detection: Kafka frames in, kNN scores out."
    )
    parser.add_argument("--version", action="version", version=f"framewatch {version()}")
    _add_global_flags(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name, (module, summary) in COMMANDS.items():
        if name == command:
            try:
                importlib.import_module(module).add_parser(sub)
            except ImportError as e:
                parser.exit(2, f"framewatch: error: the {name} command is unavailable here: {e}\n")
        else:
            sub.add_parser(name, help=summary, add_help=False)
    return parser


def _split_global_flags(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Global flags wherever they are, and the rest of the command line."""
    pre = Parser(prog="framewatch", add_help=False, allow_abbrev=False)
    _add_global_flags(pre)
    return pre.parse_known_args(list(argv))


def main(argv: Optional[Sequence[str]] = None) -> int:
    allocator.tune()  # first: it holds for the threads started after it
    glob, rest = _split_global_flags(sys.argv[1:] if argv is None else argv)
    command = next((a for a in rest if not a.startswith("-")), None)
    args = build_parser(command).parse_args(rest)
    args.verbose, args.log_format, args.config = glob.verbose, glob.log_format, glob.config
    logs.configure(verbose=args.verbose, fmt=args.log_format)
    try:
        args.environment = cfg.effective_environment(args.config)
        return int(args.func(args) or 0)
    except FramewatchError as e:
        print(f"framewatch: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `framewatch watch | head`: the reader left; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug, or a failure we did not foresee: one line, the traceback under -v
        log.debug("traceback", exc_info=True)
        print(f"framewatch: error: {type(e).__name__}: {e} (run with -v for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
