"""Pictures that explain a score: the anomaly map over the frame, or the frame beside its nearest normal frames."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from wire.anomaly_map import decode_map
from wire.records import ScoreRecord

TILE = 256


def heat_colours(values: np.ndarray) -> np.ndarray:
    """[0, 1] values -> (..., 3) uint8 colours from dark blue through yellow to red."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    stops = np.array([[0, 0, 128], [0, 160, 255], [255, 230, 0], [230, 0, 0]], dtype=np.float32)
    pos = v * (len(stops) - 1)
    lo = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = pos - lo
    return (stops[lo[..., 0]] * (1 - frac) + stops[lo[..., 0] + 1] * frac).astype(np.uint8)


def overlay_map(frame: Image.Image, record: ScoreRecord, alpha: float = 0.45) -> Image.Image:
    """The frame with the record's anomaly map blended over the part it covers, and the hotspot boxed."""
    assert record.anomaly_map is not None
    frame = frame.convert("RGB")
    grid = np.asarray(decode_map(record.anomaly_map), dtype=np.float32)
    x0, y0, x1, y1 = record.anomaly_map.get("box") or [0, 0, frame.width, frame.height]
    peak = float(grid.max()) or 1.0
    heat = Image.fromarray(heat_colours(grid / peak)).resize(
        (max(1, x1 - x0), max(1, y1 - y0)), Image.BILINEAR
    )
    region = frame.crop((x0, y0, x1, y1))
    frame.paste(Image.blend(region, heat, alpha), (x0, y0))
    draw = ImageDraw.Draw(frame)
    for zone in record.anomaly_map.get("ignore") or []:  # the index's ignore zones: never scored
        draw.rectangle(zone, outline=(160, 160, 160), width=max(1, frame.width // 300))
        draw.text((zone[0] + 3, zone[1] + 2), "ignored", fill=(200, 200, 200))
    if record.hotspot:
        draw.rectangle(record.hotspot, outline=(255, 0, 0), width=max(2, frame.width // 150))
    return frame


def _tile(image: Optional[Image.Image], caption: str) -> Image.Image:
    tile = Image.new("RGB", (TILE, TILE + 20), (40, 40, 40))
    if image is not None:
        im = image.convert("RGB")
        im.thumbnail((TILE, TILE))
        tile.paste(im, ((TILE - im.width) // 2, (TILE - im.height) // 2))
    else:
        ImageDraw.Draw(tile).text((8, TILE // 2), "not on this machine", fill=(200, 200, 200))
    ImageDraw.Draw(tile).text((4, TILE + 4), caption[-40:], fill=(255, 255, 255))
    return tile


def open_path(path: str) -> Optional[Image.Image]:
    try:
        with Image.open(Path(path)) as im:
            return im.convert("RGB")
    except (OSError, ValueError):
        return None


Opener = Callable[[str], Optional[Image.Image]]


def beside_neighbors(
    frame: Image.Image, record: ScoreRecord, neighbors: Sequence[str], open_origin: Opener = open_path
) -> Image.Image:
    """The frame, then each nearest normal training frame (opened from its origin when it can be)."""
    tiles = [_tile(frame, f"score {record.score:.4g} {record.frame_id}")]
    tiles += [
        _tile(open_origin(origin), origin if "://" in origin else Path(origin).name) for origin in neighbors
    ]
    sheet = Image.new("RGB", (TILE * len(tiles), TILE + 20))
    for i, t in enumerate(tiles):
        sheet.paste(t, (TILE * i, 0))
    return sheet


def explain_image(frame: Image.Image, record: ScoreRecord, open_origin: Opener = open_path) -> Image.Image:
    """Map overlay beside the plain frame (patch index, whole-frame global regions), with the nearest normal
    frames below it when the record names them; else the frame beside its neighbours."""
    if record.anomaly_map is None:
        return beside_neighbors(frame, record, record.neighbors or [], open_origin)
    plain = frame.convert("RGB")
    shown = overlay_map(plain.copy(), record)
    strip = beside_neighbors(frame, record, record.neighbors, open_origin) if record.neighbors else None
    width = max(plain.width * 2, strip.width if strip else 0)
    sheet = Image.new("RGB", (width, plain.height + (strip.height if strip else 0)))
    sheet.paste(plain, (0, 0))
    sheet.paste(shown, (plain.width, 0))
    if strip is not None:
        sheet.paste(strip, (0, plain.height))
    return sheet
