"""Patch scores to frame scores, anomaly maps and hotspots (arrays in, arrays out).

A frame's patch features are a (h, w, D) grid; each location is scored
against the index of normal patches by the index's own rule (mean squared
distance to the k nearest for exact/coreset, sum for k-means). The grid of
those scores is the anomaly map; the frame's score is its maximum outside the
index's ignore zones. With tiles, the tiles' maps are stitched over the whole
frame (index_store/geometry.py). The hotspot is the box, in the frame's own
pixels, around the connected region of high scores that holds the maximum.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Optional

import numpy as np

from index_store import geometry
from index_store.knn import Searcher
from index_store.spec import EmbedderSpec


def location_scores(index: Searcher, maps: np.ndarray) -> np.ndarray:
    """(N, h, w, D) grids -> (N, h, w) scores, each location by the index's rule. A position-aware memory
    (index_store/positional.py, ``search_grid``) compares each location with its neighbourhood only."""
    n, h, w, d = maps.shape
    if hasattr(index, "search_grid"):
        return np.asarray(index.search_grid(maps), dtype=np.float32)
    return index.search(maps.reshape(-1, d))[0].reshape(n, h, w)


@lru_cache(maxsize=64)
def ignored_cells(spec: EmbedderSpec, grid: tuple[int, int]) -> Optional[np.ndarray]:
    """(h, w) bool: the cells of a patch grid that the spec's ignore zones cover (None without zones).

    Full view only, so the boxes are fractions of any frame: the mask is the same for every frame size."""
    if not spec.zones or not spec.is_patch:
        return None
    rows, cols = spec.tiles
    gh, gw = grid[0] // rows, grid[1] // cols
    boxes = spec.boxes(1, 1)
    tiles = [geometry.zone_mask(spec.zones, box, (gh, gw), 1, 1) for box in boxes]
    return np.block([[tiles[r * cols + c] for c in range(cols)] for r in range(rows)])


def score_maps(
    index: Searcher, maps: np.ndarray, spec: Optional[EmbedderSpec] = None
) -> tuple[np.ndarray, np.ndarray]:
    """(N, h, w, D) patch features (or global tile vectors) -> (N,) frame scores and (N, h, w) maps.

    The frame's score is its worst location outside the spec's ignore zones; ignored cells read 0 in the
    map. ``index``: a KnnIndex (faiss), its DeviceKnn (device_knn.py) or a positional memory."""
    n, h, w, _d = maps.shape
    if n == 0:
        return np.zeros(0, np.float32), np.zeros((0, h, w), np.float32)
    per_location = location_scores(index, maps)
    mask = ignored_cells(spec, (h, w)) if spec is not None else None
    if mask is not None and not mask.all():
        per_location = np.where(mask[None], np.float32(0.0), per_location)
        return np.where(mask[None], -np.inf, per_location).reshape(n, -1).max(axis=1), per_location
    return per_location.reshape(n, -1).max(axis=1), per_location


def frame_map(amap: np.ndarray, spec: EmbedderSpec, frame_w: int, frame_h: int) -> tuple[np.ndarray, geometry.Box]:
    """One frame's (h, w) map (tiles side by side) -> the map over the frame and the box it covers."""
    rows, cols = spec.tiles
    boxes = spec.boxes(frame_w, frame_h)
    if rows * cols == 1:
        return amap, boxes[0]
    gh, gw = amap.shape[0] // rows, amap.shape[1] // cols
    tiles = amap.reshape(rows, gh, cols, gw).transpose(0, 2, 1, 3).reshape(rows * cols, gh, gw)
    return geometry.stitch(tiles, boxes, frame_w, frame_h)


def hot_cells(amap: np.ndarray, level: float = 0.5) -> tuple[int, int, int, int]:
    """(r0, c0, r1, c1), inclusive: the bounding box of the 4-connected region around the maximum
    where the map stays above median + ``level`` * (max - median)."""
    r, c = np.unravel_index(int(np.argmax(amap)), amap.shape)
    med, top = float(np.median(amap)), float(amap[r, c])
    mask = amap >= med + level * (top - med)
    seen = {(int(r), int(c))}
    todo = deque(seen)
    while todo:
        y, x = todo.popleft()
        for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
            if 0 <= ny < amap.shape[0] and 0 <= nx < amap.shape[1] and mask[ny, nx] and (ny, nx) not in seen:
                seen.add((ny, nx))
                todo.append((ny, nx))
    ys, xs = zip(*seen)
    return min(ys), min(xs), max(ys), max(xs)


def map_region(spec: EmbedderSpec, frame_w: int, frame_h: int) -> list[int]:
    """[x0, y0, x1, y1]: the part of the frame an anomaly map covers (the whole frame in the full view)."""
    if spec.is_full:
        return [0, 0, frame_w, frame_h]
    x0, y0, x1, y1 = spec.boxes(frame_w, frame_h)[0]
    return [int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1))]


def hotspot_in(amap: np.ndarray, box: geometry.Box, frame_w: int, frame_h: int) -> list[int]:
    """[x0, y0, x1, y1] in the frame's pixels around the highest-scoring region of ``amap`` (h, w),
    a map laid over ``box`` (frame pixels)."""
    return geometry.box_of_cells(box, amap.shape, hot_cells(amap), frame_w, frame_h)


def hotspot(amap: np.ndarray, spec: EmbedderSpec, frame_w: int, frame_h: int) -> list[int]:
    """The hotspot of a frame's map as ``score_maps`` gives it (tiles side by side), in frame pixels."""
    stitched, box = frame_map(amap, spec, frame_w, frame_h)
    return hotspot_in(stitched, box, frame_w, frame_h)
