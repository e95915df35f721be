"""Patch scores to frame scores, anomaly maps and hotspots (arrays in, arrays out).

A frame's patch features are a (h, w, D) grid; each location is scored
against the index of normal patches by the index's own rule (mean squared
distance to the k nearest for exact/coreset, sum for k-means). The grid of
those scores is the anomaly map; the frame's score is its maximum. The
hotspot is the box, in the frame's own pixels, around the connected region of
high scores that holds the maximum.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from index_store.knn import Searcher
from index_store.spec import EmbedderSpec


def score_maps(index: Searcher, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, h, w, D) patch features -> (N,) frame scores and (N, h, w) anomaly maps.

    ``index``: a KnnIndex (faiss) or its DeviceKnn (device_knn.py); both score by the index's rule."""
    n, h, w, d = maps.shape
    if n == 0:
        return np.zeros(0, np.float32), np.zeros((0, h, w), np.float32)
    per_location = index.search(maps.reshape(-1, d))[0].reshape(n, h, w)
    return per_location.reshape(n, -1).max(axis=1), per_location


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


def crop_box(spec: EmbedderSpec, frame_w: int, frame_h: int) -> tuple[float, float, float]:
    """Where the model's input sits in the frame: (left, top, scale), frame px = left + crop px * scale.

    Mirrors the embedder's preprocessing: shorter side resized to ``spec.resize``
    (torchvision's rounding), then a centred ``spec.crop`` square.
    """
    short, long_ = min(frame_w, frame_h), max(frame_w, frame_h)
    resized_long = int(spec.resize * long_ / short)
    rw, rh = (spec.resize, resized_long) if frame_w <= frame_h else (resized_long, spec.resize)
    left = int(round((rw - spec.crop) / 2.0))
    top = int(round((rh - spec.crop) / 2.0))
    scale_x, scale_y = frame_w / rw, frame_h / rh
    return left * scale_x, top * scale_y, (scale_x + scale_y) / 2.0


def map_region(spec: EmbedderSpec, frame_w: int, frame_h: int) -> list[int]:
    """[x0, y0, x1, y1]: the part of the frame an anomaly map covers (the model's input crop)."""
    left, top, scale = crop_box(spec, frame_w, frame_h)
    side = spec.crop * scale
    return [int(round(left)), int(round(top)), int(round(left + side)), int(round(top + side))]


def hotspot(amap: np.ndarray, spec: EmbedderSpec, frame_w: int, frame_h: int) -> list[int]:
    """[x0, y0, x1, y1] in the frame's pixels around the highest-scoring region of ``amap`` (h, w)."""
    r0, c0, r1, c1 = hot_cells(amap)
    h, w = amap.shape
    left, top, scale = crop_box(spec, frame_w, frame_h)
    cell_w, cell_h = spec.crop / w * scale, spec.crop / h * scale
    x0, x1 = left + c0 * cell_w, left + (c1 + 1) * cell_w
    y0, y1 = top + r0 * cell_h, top + (r1 + 1) * cell_h
    return [
        int(np.clip(np.floor(x0), 0, frame_w)),
        int(np.clip(np.floor(y0), 0, frame_h)),
        int(np.clip(np.ceil(x1), 0, frame_w)),
        int(np.clip(np.ceil(y1), 0, frame_h)),
    ]
