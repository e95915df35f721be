"""Flag types that reject bad values at parse time, and the flag groups several commands share.

Every check here runs before a command does any work: ``--k 0`` fails in
milliseconds with one line, not after minutes of embedding.
"""

from __future__ import annotations

import argparse
from typing import Callable

from framewatch import settings as cfg
from wire.errors import FramewatchError
from wire.settings import KafkaSettings, RedisSettings
from wire.topics import AlertTopics, Topics


def int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def float_in(
    low: float, high: float, low_open: bool = False, high_open: bool = False
) -> Callable[[str], float]:
    """A float in [low, high], with either end open; ``high`` may be ``inf``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_low = value <= low if low_open else value < low
        too_high = value >= high if high_open else value > high
        if value != value or too_low or too_high:  # NaN fails every comparison
            left, right = "(" if low_open else "[", ")" if high_open else "]"
            raise argparse.ArgumentTypeError(f"must be in {left}{low:g}, {high:g}{right}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = int_at_least(1)
non_negative_int = int_at_least(0)
non_negative = float_in(0.0, float("inf"))
positive = float_in(0.0, float("inf"), low_open=True)
fraction = float_in(0.0, 1.0, high_open=True)  # --clean-fraction: 1.0 would drop every image
probability = float_in(0.0, 1.0, low_open=True, high_open=True)  # --target-fpr


def port(text: str) -> int:
    value = int_at_least(0)(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a TCP port (0-65535), got {value}")
    return value


def route(text: str) -> str:
    """``PATTERN=INDEX``: sources matching the shell-style PATTERN are scored with INDEX; INDEX may name
    the index after the camera (``cam-*={source}``)."""
    from worker.routing import RouteError, check_template

    pattern, sep, index = text.partition("=")
    if not sep or not pattern.strip() or not index.strip():
        raise argparse.ArgumentTypeError(f"expected PATTERN=INDEX (e.g. 'gate-*=gate' or 'cam-*={{source}}'), "
                                         f"got {text!r}")  # fmt: skip
    try:
        check_template(index.strip())
    except RouteError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return f"{pattern.strip()}={index.strip()}"


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "ki": 1 << 10, "kib": 1 << 10, "kb": 1000, "m": 1 << 20, "mi": 1 << 20,
          "mib": 1 << 20, "mb": 1000**2, "g": 1 << 30, "gi": 1 << 30, "gib": 1 << 30, "gb": 1000**3,
          "t": 1 << 40, "ti": 1 << 40, "tib": 1 << 40, "tb": 1000**4}  # fmt: skip


def byte_size(text: str) -> int:
    """A memory size: ``512MiB``, ``2GiB``, ``1.5G`` (K/M/G/T and Ki/Mi/.. are binary; kB/MB/GB decimal), or bytes."""
    number = text.strip().rstrip("bBiIkKmMgGtT")
    unit = text.strip()[len(number):].lower()
    try:
        value = float(number) * _UNITS[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(f"expected a size such as 512MiB or 2GiB, got {text!r}") from None
    if not value >= 1 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, got {text!r}")
    return int(value)


# -- flag groups ---------------------------------------------------------------------
def add_connection_flags(p: argparse.ArgumentParser, kafka: bool = True, redis: bool = True) -> None:
    if kafka:
        p.add_argument("--kafka", metavar="HOST:PORT", help="Kafka bootstrap servers (else FRAMEWATCH_KAFKA)")
    if redis:
        p.add_argument(
            "--redis",
            metavar="URL",
            help="Redis URL redis://[:PASSWORD@]HOST:PORT/DB (else FRAMEWATCH_REDIS)",
        )


def add_embed_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1 ...")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads for torch and OpenVINO (default: all cores)",
    )
    add_runtime_flags(p)


def add_runtime_flags(p: argparse.ArgumentParser, many: bool = False) -> None:
    """``--runtime`` and ``--precision`` (CPU); ``many``: comma-separated lists (bench compares them)."""
    from index_store.openvino_runtime import DEFAULT_RUNTIME, RUNTIMES
    from index_store.spec import PRECISIONS

    p.add_argument("--runtime", type=choices(RUNTIMES, many), default=None,
                   help=f"{'|'.join(RUNTIMES)}{' (comma-separated)' if many else ''}: the CPU inference runtime "
                        f"(default {DEFAULT_RUNTIME}: OpenVINO on CPU when installed, torch on CUDA)")  # fmt: skip
    p.add_argument("--precision", type=choices(PRECISIONS, many), default=None,
                   help=f"{'|'.join(PRECISIONS)}{' (comma-separated)' if many else ''}: CPU inference precision; "
                        "index fit and eval record it in the index spec (default: a refit keeps the index's, a new "
                        "index gets bf16 on CPUs with it, else fp32; FRAMEWATCH_PRECISION overrides); int8 is "
                        "calibrated on the fit frames; a CPU worker serves each index at its own, and given one "
                        "refuses indexes fit at another (docs/accuracy.md, docs/benchmarks.md)")  # fmt: skip


def choices(allowed: tuple[str, ...], many: bool = False) -> Callable[[str], object]:
    """One of ``allowed`` or, ``many``, a comma-separated list of them (a tuple)."""

    def parse(text: str) -> object:
        items = tuple(t.strip() for t in text.split(",") if t.strip()) if many else (text,)
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"expected {' or '.join(allowed)}, got {text!r}")
        return items if many else items[0]

    parse.__name__ = "choice"
    return parse


# -- resolving settings (flags > environment > config file) ------------------------------
def add_finetune_flags(p: argparse.ArgumentParser) -> None:
    """``--finetune msc [--epochs N] [--lr X] [--batch B]``: adapt the backbone to the normal images first."""
    p.add_argument("--finetune", choices=("msc",), default=None,
                   help="fine-tune the backbone on the normal images first (Mean-Shifted Contrastive; slow on CPU)")  # fmt: skip
    p.add_argument("--epochs", type=positive_int, default=2, help="fine-tuning epochs (paper: 20)")
    p.add_argument("--lr", type=positive, default=1e-4, help="fine-tuning learning rate (SGD, momentum 0.9)")
    p.add_argument("--batch", type=int_at_least(2), default=32,
                   help="fine-tuning batch (two views each; the rest of the batch are the negatives)")  # fmt: skip


def kafka_settings(args: argparse.Namespace) -> KafkaSettings:
    """:raises FramewatchError: no Kafka address anywhere."""
    s = cfg.kafka_settings(getattr(args, "kafka", None), args.environment)
    if s is None:
        raise FramewatchError(
            "no Kafka address: pass --kafka HOST:PORT, set FRAMEWATCH_KAFKA, or put kafka in --config"
        )
    return s


def redis_settings(args: argparse.Namespace) -> RedisSettings:
    """:raises FramewatchError: no Redis URL anywhere."""
    s = cfg.redis_settings(getattr(args, "redis", None), args.environment)
    if s is None:
        raise FramewatchError(
            "no Redis URL: pass --redis redis://HOST:PORT/0, set FRAMEWATCH_REDIS, or put redis in --config"
        )
    return s


def topics(args: argparse.Namespace) -> Topics:
    return cfg.topics(args.environment)


def alert_topics(args: argparse.Namespace) -> AlertTopics:
    return cfg.alert_topics(args.environment)
