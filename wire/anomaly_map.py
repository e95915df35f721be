"""A compact, JSON-safe encoding of a coarse anomaly map (the score record's ``anomaly_map``).

    {"h": H, "w": W, "max": M, "data": base64(H*W bytes, row-major)}

Each byte is ``round(255 * value / max)``, so a map costs H*W*4/3 characters
(a 28x28 grid: ~1 KB) and decodes back within max/510 of the original.
Stdlib only, so any consumer of the score topic can read it.
"""

from __future__ import annotations

import base64
import math
from typing import Any, Sequence

from wire.errors import ScoreDecodeError


def encode_map(rows: Sequence[Sequence[float]]) -> dict[str, Any]:
    """Quantise a 2-D grid of non-negative scores (a list of rows, or a 2-D numpy array)."""
    h = len(rows)
    w = len(rows[0]) if h else 0
    values = [max(0.0, float(v)) for row in rows for v in row]
    if len(values) != h * w or not all(math.isfinite(v) for v in values):
        raise ValueError("an anomaly map is a rectangular grid of finite numbers")
    top = max(values, default=0.0)
    scale = 255.0 / top if top > 0 else 0.0
    data = bytes(min(255, round(v * scale)) for v in values)
    return {"h": h, "w": w, "max": top, "data": base64.b64encode(data).decode("ascii")}


def decode_map(encoded: dict[str, Any]) -> list[list[float]]:
    """The grid back as rows of floats; raises ScoreDecodeError on a malformed map."""
    try:
        h, w, top = int(encoded["h"]), int(encoded["w"]), float(encoded["max"])
        data = base64.b64decode(encoded["data"], validate=True)
    except (KeyError, TypeError, ValueError) as e:
        raise ScoreDecodeError(f"malformed anomaly map: {e}") from e
    if len(data) != h * w or h < 0 or w < 0:
        raise ScoreDecodeError(f"anomaly map holds {len(data)} values, not {h}x{w}")
    step = top / 255.0
    return [[data[r * w + c] * step for c in range(w)] for r in range(h)]
