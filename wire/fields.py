"""What a field of a record may hold: the character and range rules both record decoders apply.

Headers and score-record fields come from whoever can write to a topic. They
are data, never markup: a value that holds a control character (a CR/LF pair
that splits an HTTP response, an escape sequence that rewrites a terminal, a
NUL that ends a C string) is refused, never cleaned, so no tool downstream
has to remember to escape it. Numbers are parsed strictly (plain decimal
digits, no ``_``, no surrounding spaces) and bounded, so a 400-digit sequence
number or a capture time of 1e300 never reaches a metric, a log or a
``time.localtime`` call.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Optional

# C0 controls (CR, LF, NUL, ESC ...), DEL, C1 controls, and the two Unicode line breaks
# (JavaScript and some terminals treat U+2028/U+2029 as newlines).
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
INT64 = (-(2**63), 2**63 - 1)
_INT_TEXT = re.compile(r"[-+]?[0-9]{1,19}")
_FLOAT_TEXT = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]{1,3})?")
MAX_NUMBER_CHARS = 40

# Capture times a frame may carry (seconds since the epoch). Earlier than 2000, or more than a day ahead of
# the worker's clock, is a camera without a set clock or a forged header: see FrameRecord.decode.
EARLIEST_CAPTURE_TIME = 946_684_800.0  # 2000-01-01T00:00:00Z
MAX_CAPTURE_AHEAD_S = 86_400.0
# Times a score record may carry: what datetime and time.localtime can show (0001..9999 is wider; 0 .. 9999-12-31).
LATEST_TIME = 253_402_300_799.0


def has_control(text: str) -> bool:
    return CONTROL.search(text) is not None


def escape_controls(text: str) -> str:
    """``text`` with each control character written as ``\\xNN`` (``\\uNNNN``): for a producer's file names."""
    return CONTROL.sub(
        lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 256 else f"\\u{ord(m.group()):04x}", text
    )


def parse_int(text: str, low: int = INT64[0], high: int = INT64[1]) -> Optional[int]:
    """A decimal integer within [low, high], or None (too long, not plain digits, out of range)."""
    if not _INT_TEXT.fullmatch(text):
        return None
    value = int(text)
    return value if low <= value <= high else None


def parse_float(text: str) -> Optional[float]:
    """A finite decimal number, or None (``nan``, ``inf``, ``1_0``, ``1e999`` and 40+ characters are not)."""
    if len(text) > MAX_NUMBER_CHARS or not _FLOAT_TEXT.fullmatch(text):
        return None
    value = float(text)
    return value if math.isfinite(value) else None


def sane_capture_time(value: float, now: float) -> bool:
    return EARLIEST_CAPTURE_TIME <= value <= now + MAX_CAPTURE_AHEAD_S


# -- score-record fields (JSON values) ----------------------------------------------------------------


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and INT64[0] <= v <= INT64[1]


def _time(v: Any) -> bool:
    return _number(v) and 0 <= v <= LATEST_TIME


def _text(limit: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, str) and len(v) <= limit and not has_control(v)


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def score_field_rules(id_chars: int, text_chars: int) -> dict[str, Callable[[Any], bool]]:
    """Field name -> check, for every field of a score record (readers refuse a record that fails one)."""
    return {
        "frame_id": _text(id_chars), "source": _text(id_chars), "sequence": _integer,
        "capture_time": _time, "score_time": _time, "score": _number, "threshold": _optional(_number),
        "is_anomaly": lambda v: isinstance(v, bool), "index_name": _text(text_chars), "index_version": _integer,
        "backbone": _text(text_chars), "latency_s": _number, "origin": _text(text_chars),
        "normalized_score": _optional(_number), "window_score": _optional(_number), "worker": _text(text_chars),
        "schema_version": _integer, "frame_topic": _text(text_chars), "frame_partition": _integer,
        "frame_offset": _integer,
        "hotspot": _optional(lambda v: isinstance(v, list) and len(v) == 4 and all(_integer(x) for x in v)),
        "anomaly_map": _optional(lambda v: isinstance(v, dict)),
        "neighbors": _optional(lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
        "frame_size": _optional(lambda v: isinstance(v, list) and len(v) == 2 and all(_integer(x) for x in v)),
        "geometry": _text(40), "camera_index": _optional(_text(text_chars)), "index_fallback": _text(20),
        "shadow": _optional(_shadow),
    }  # fmt: skip


MAX_SHADOW = 16  # candidate verdicts a score record may carry


def _shadow(v: Any) -> bool:
    """Candidate verdicts: a short list of {"version": int, "score": number, "threshold": number|null,
    "is_anomaly": bool} and nothing else."""
    return isinstance(v, list) and len(v) <= MAX_SHADOW and all(_verdict(x) for x in v)


def _verdict(v: Any) -> bool:
    return (
        isinstance(v, dict) and set(v) == {"version", "score", "threshold", "is_anomaly"} and _integer(v["version"])
        and _number(v["score"]) and _optional(_number)(v["threshold"]) and isinstance(v["is_anomaly"], bool)
    )  # fmt: skip
