"""Where the model looks in a frame: the one geometry shared by fitting, the worker, eval and explain.

Two views (``EmbedderSpec.view``):

- ``full`` (the default for new indexes): the whole frame, aspect kept. The
  frame (or each of its tiles) is resized to the index's fixed ``input_shape``
  (h, w): the shorter side is ``input_size`` and the longer side follows the
  aspect of the frames the index was fit on, rounded to the network's stride.
  Nothing is cropped, so an intruder at the edge of a 16:9 view is seen.
- ``center``: DN2's protocol (resize the shorter side to ``resize``, center-crop
  ``crop``). It reproduces the papers' figures on square datasets; on a 16:9
  frame it drops the outer 25 % on each side. Indexes written before views
  existed are ``center`` and keep scoring exactly as they did.

Tiles (``tiles`` = rows, cols; ``tile_overlap`` a fraction of a tile) cut a
high-resolution frame into overlapping boxes, each embedded at the input shape,
so small distant objects stay large enough to see.

Every index of one worker has one input shape, so batches stay homogeneous
(and a compiled model has one shape). A frame whose aspect differs from the
index's (a camera reconfigured) is still resized to that shape, i.e.
stretched; its record says the size it saw and ``geometry`` ends in
``/stretched``, so the operator knows to refit.

Ignore zones (fractions of the frame: x0, y0, x1, y1) are painted with the
normalisation mean before embedding, so what changes there (a burned-in
clock) never reaches the network: a CNN's receptive field would otherwise
carry it into every cell around the zone. Patch indexes also never score a
cell whose centre lies in a zone (grown by one cell), so a zone is never the
hotspot. Zones are part of what the model sees: changing them means a refit.

Pure arithmetic: no torch, no PIL; numpy only where grids are made (imported there, so the command
line's --help, which reads the spec module, stays light).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import numpy as np

NETWORK_STRIDE = 32  # every registered backbone's last stage: input sides are multiples of it
DEFAULT_INPUT_SIZE = 224  # shorter side of the model input (docs/accuracy.md, "input size", says why)
DEFAULT_TILE_OVERLAP = 0.1
ASPECT_TOLERANCE = 0.02  # a frame whose aspect differs more than this from the index's is "stretched"
VIEWS = ("full", "center")

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in frame pixels (x1, y1 exclusive)


def round_to_stride(x: float, stride: int = NETWORK_STRIDE) -> int:
    return max(stride, int(round(x / stride)) * stride)


def tile_extent(frame_w: int, frame_h: int, tiles: tuple[int, int], overlap: float) -> tuple[float, float]:
    """(width, height) of one tile: ``cols`` tiles overlapping by ``overlap`` of a tile span the width."""
    rows, cols = tiles
    return frame_w / (cols - (cols - 1) * overlap), frame_h / (rows - (rows - 1) * overlap)


def tile_boxes(frame_w: int, frame_h: int, tiles: tuple[int, int], overlap: float) -> list[Box]:
    """The tiles' boxes in frame pixels, row-major."""
    rows, cols = tiles
    tw, th = tile_extent(frame_w, frame_h, tiles, overlap)
    return [
        (c * tw * (1 - overlap), r * th * (1 - overlap), c * tw * (1 - overlap) + tw, r * th * (1 - overlap) + th)
        for r in range(rows)
        for c in range(cols)
    ]


def input_shape_for(
    frame_w: int, frame_h: int, input_size: int, tiles: tuple[int, int] = (1, 1), overlap: float = 0.0
) -> tuple[int, int]:
    """(h, w) of the model input for frames of this size: shorter side ``input_size``, the longer side
    following the (tile's) aspect, both rounded to the network's stride."""
    tw, th = tile_extent(frame_w, frame_h, tiles, overlap)
    short = round_to_stride(input_size)
    long_ = round_to_stride(input_size * max(tw, th) / max(1e-9, min(tw, th)))
    return (short, long_) if th <= tw else (long_, short)


def center_crop_box(frame_w: int, frame_h: int, resize: int, crop: int) -> Box:
    """The DN2 crop in frame pixels: shorter side resized to ``resize`` (torchvision's rounding), then a
    centred ``crop`` square."""
    short, long_ = min(frame_w, frame_h), max(frame_w, frame_h)
    resized_long = int(resize * long_ / short)
    rw, rh = (resize, resized_long) if frame_w <= frame_h else (resized_long, resize)
    left = int(round((rw - crop) / 2.0))
    top = int(round((rh - crop) / 2.0))
    sx, sy = frame_w / rw, frame_h / rh
    return left * sx, top * sy, (left + crop) * sx, (top + crop) * sy


def is_stretched(frame_w: int, frame_h: int, fit_shape: Sequence[int], tiles: tuple[int, int], overlap: float) -> bool:
    """True when a frame's tile aspect differs from the fitted input shape's by more than the tolerance."""
    if not fit_shape or frame_w <= 0 or frame_h <= 0:
        return False
    tw, th = tile_extent(frame_w, frame_h, tiles, overlap)
    h, w = fit_shape
    fitted = w / h
    return abs((tw / th) / fitted - 1.0) > ASPECT_TOLERANCE + NETWORK_STRIDE / (2 * min(h, w))


def cell_centres(box: Box, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(ys, xs): frame-pixel centres of a (gh, gw) feature grid laid over ``box``."""
    import numpy as np

    x0, y0, x1, y1 = box
    gh, gw = grid
    ys = y0 + (np.arange(gh) + 0.5) * (y1 - y0) / gh
    xs = x0 + (np.arange(gw) + 0.5) * (x1 - x0) / gw
    return ys, xs


def zone_mask(
    zones: Sequence[Sequence[float]], box: Box, grid: tuple[int, int], frame_w: int, frame_h: int, dilate: int = 1
) -> np.ndarray:
    """(gh, gw) bool: the cells of a grid over ``box`` that an ignore zone covers (centre inside a zone),
    grown by ``dilate`` cells."""
    import numpy as np

    ys, xs = cell_centres(box, grid)
    mask = np.zeros(grid, dtype=bool)
    for zx0, zy0, zx1, zy1 in zones:
        rows = (ys >= zy0 * frame_h) & (ys < zy1 * frame_h)
        cols = (xs >= zx0 * frame_w) & (xs < zx1 * frame_w)
        mask |= rows[:, None] & cols[None, :]
    for _ in range(dilate):
        grown = mask.copy()
        grown[1:, :] |= mask[:-1, :]
        grown[:-1, :] |= mask[1:, :]
        grown[:, 1:] |= mask[:, :-1]
        grown[:, :-1] |= mask[:, 1:]
        mask = grown
    return mask


def zone_pixels(zones: Sequence[Sequence[float]], box: Box, shape: tuple[int, int], frame_w: int, frame_h: int) -> list[tuple[int, int, int, int]]:
    """The zones as (r0, c0, r1, c1) pixel ranges of a model input of ``shape`` (h, w) taken from ``box``."""
    x0, y0, x1, y1 = box
    h, w = shape
    out = []
    for zx0, zy0, zx1, zy1 in zones:
        c0 = math.floor((zx0 * frame_w - x0) / (x1 - x0) * w)
        c1 = math.ceil((zx1 * frame_w - x0) / (x1 - x0) * w)
        r0 = math.floor((zy0 * frame_h - y0) / (y1 - y0) * h)
        r1 = math.ceil((zy1 * frame_h - y0) / (y1 - y0) * h)
        c0, c1, r0, r1 = max(0, c0), min(w, c1), max(0, r0), min(h, r1)
        if c0 < c1 and r0 < r1:
            out.append((r0, c0, r1, c1))
    return out


def stitch(maps: np.ndarray, boxes: Sequence[Box], frame_w: int, frame_h: int) -> tuple[np.ndarray, Box]:
    """Per-image maps (T, gh, gw) laid over their boxes -> one map over the region they cover, and that
    region (frame pixels). One image: its map and box as they are. Overlaps keep the larger value."""
    import numpy as np

    if len(boxes) == 1:
        return maps[0], boxes[0]
    t, gh, gw = maps.shape
    cw = (boxes[0][2] - boxes[0][0]) / gw
    ch = (boxes[0][3] - boxes[0][1]) / gh
    out = np.full((max(gh, round(frame_h / ch)), max(gw, round(frame_w / cw))), -np.inf, dtype=np.float32)
    for m, (x0, y0, _x1, _y1) in zip(maps, boxes):
        r0 = min(out.shape[0] - gh, round(y0 / ch))
        c0 = min(out.shape[1] - gw, round(x0 / cw))
        region = out[r0 : r0 + gh, c0 : c0 + gw]
        np.maximum(region, m, out=region)
    out[~np.isfinite(out)] = 0.0
    return out, (0.0, 0.0, float(frame_w), float(frame_h))


def box_of_cells(box: Box, grid: tuple[int, int], cells: tuple[int, int, int, int], frame_w: int, frame_h: int) -> list[int]:
    """[x0, y0, x1, y1] frame pixels around cells (r0, c0, r1, c1, inclusive) of a grid over ``box``."""
    import numpy as np

    x0, y0, x1, y1 = box
    gh, gw = grid
    r0, c0, r1, c1 = cells
    cw, ch = (x1 - x0) / gw, (y1 - y0) / gh
    return [
        int(np.clip(math.floor(x0 + c0 * cw), 0, frame_w)),
        int(np.clip(math.floor(y0 + r0 * ch), 0, frame_h)),
        int(np.clip(math.ceil(x0 + (c1 + 1) * cw), 0, frame_w)),
        int(np.clip(math.ceil(y0 + (r1 + 1) * ch), 0, frame_h)),
    ]
