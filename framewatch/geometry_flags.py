"""The geometry flags of `index fit`, `eval` and `bench`: where the model looks in a frame.

--view full|center, --input-size, --tiles RxC, --tile-overlap, --ignore x0,y0,x1,y1 (repeatable),
--ignore-mask FILE.png, --position-radius R, --regions RxC. Parsed here once and applied to a spec with
:func:`apply`; the spec checks the combination (index_store/geometry.py says what each means).
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from framewatch import flags
from index_store.spec import DEFAULT_REGIONS
from wire.errors import FramewatchError

MASK_GRID = 64  # an ignore mask is read as boxes on a grid this many cells across


def tiles(text: str) -> tuple[int, int]:
    """``RxC`` -> (rows, cols)."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RxC, e.g. 2x2 (got {text!r})") from None
    if not (1 <= rows <= 16 and 1 <= cols <= 16):
        raise argparse.ArgumentTypeError(f"tiles must be 1..16 each way (got {text!r})")
    return rows, cols


def zone(text: str) -> tuple[float, float, float, float]:
    """``x0,y0,x1,y1`` fractions of the frame's width and height -> a zone."""
    try:
        x0, y0, x1, y1 = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected x0,y0,x1,y1 as fractions, e.g. 0,0,0.3,0.08 (got {text!r})") from None
    if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
        raise argparse.ArgumentTypeError(f"a zone needs 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (got {text!r})")
    return x0, y0, x1, y1


def add_geometry_flags(p: argparse.ArgumentParser, default_view: str = "full") -> None:
    g = p.add_argument_group("geometry (where the model looks; README: 'Whole-frame geometry')")
    g.add_argument("--view", choices=("full", "center"), default=default_view,
                   help="full: the whole frame, aspect kept (default); center: DN2's resize 256 + center crop "
                        "224 (reproduces the papers on square datasets; drops a 16:9 frame's sides)")  # fmt: skip
    g.add_argument("--input-size", type=flags.int_at_least(32), default=None,
                   help="full view: shorter side of the model input (default 224); the longer side follows "
                        "the frame's aspect, rounded to 32")  # fmt: skip
    g.add_argument("--tiles", type=tiles, default=None,
                   help="RxC: cut each frame into R rows x C columns of overlapping tiles, each embedded at "
                        "the input size (high-resolution cameras); default 1x1")  # fmt: skip
    g.add_argument("--regions", type=tiles, default=None,
                   help="global kind, full view: pool the feature map over R x C regions, each compared with "
                        "the normal memory of its own place (default 4x6 without tiles; 1x1 = one pooled "
                        "vector per frame, DN2)")  # fmt: skip
    g.add_argument("--tile-overlap", type=flags.fraction, default=None,
                   help="overlap between neighbouring tiles, a fraction of a tile (default 0.1)")
    g.add_argument("--ignore", type=zone, action="append", default=[], metavar="X0,Y0,X1,Y1",
                   help="an ignore zone in fractions of the frame (repeatable): a burned-in clock, a road, "
                        "trees; never scored, never the hotspot")  # fmt: skip
    g.add_argument("--ignore-mask", default=None, metavar="FILE.png",
                   help="ignore zones as an image the frame's shape: white = ignore")
    g.add_argument("--position-radius", type=flags.non_negative_int, default=None,
                   help="patch indexes: compare each location only with normal patches seen within R grid "
                        "cells of it (an ordinary object where it never stands is anomalous); default off")  # fmt: skip


def apply(args: argparse.Namespace, spec: Any, default_regions: tuple[int, int] = DEFAULT_REGIONS) -> Any:
    """The spec with the geometry flags applied (SpecMismatch from the spec when they do not combine).

    ``default_regions``: the regions of a whole-frame global index without tiles when --regions is not
    given (``eval`` on the papers' one-class datasets keeps DN2's one vector per image: 1x1)."""
    from index_store import geometry

    changes: dict[str, Any] = {"view": args.view}
    if args.view == "full" and args.input_size is None and getattr(args, "crop", None):
        args.input_size = args.crop  # --crop N in the full view: the input's shorter side
    if args.input_size is not None:
        changes["input_size"] = args.input_size
    if args.tiles is not None:
        changes["tiles"] = args.tiles
        changes["tile_overlap"] = geometry.DEFAULT_TILE_OVERLAP if args.tiles != (1, 1) else 0.0
    if args.tile_overlap is not None:
        changes["tile_overlap"] = args.tile_overlap
    zones = list(args.ignore) + (mask_zones(args.ignore_mask) if args.ignore_mask else [])
    if zones:
        changes["zones"] = tuple(zones)
    if args.position_radius is not None:
        changes["position_radius"] = args.position_radius
    regions = getattr(args, "regions", None)
    if regions is not None:
        changes["regions"] = regions
    if args.view == "center" and set(changes) - {"view"}:
        raise FramewatchError("--input-size, --tiles, --regions, --ignore and --position-radius need --view full")
    spec = dataclasses.replace(spec, **changes)
    if regions is None:  # the default: regions for a whole-frame global index without tiles, else none
        grid = default_regions if spec.is_full and not spec.is_patch and spec.n_tiles == 1 else (1, 1)
        spec = dataclasses.replace(spec, regions=grid)
    spec.check_geometry()
    return spec


def mask_zones(path: str) -> list[tuple[float, float, float, float]]:
    """An ignore mask (white = ignore) -> zones: the masked cells of a coarse grid, merged along rows."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            mask = np.asarray(im.convert("L")) > 127
    except (OSError, UnidentifiedImageError) as e:
        raise FramewatchError(f"--ignore-mask {path!r} is not a readable image: {e}") from e
    h, w = mask.shape
    cols = MASK_GRID
    rows = max(1, round(MASK_GRID * h / w))
    zones = []
    for r in range(rows):
        ys = slice(r * h // rows, max(r * h // rows + 1, (r + 1) * h // rows))
        covered = [bool(mask[ys, c * w // cols : max(c * w // cols + 1, (c + 1) * w // cols)].any()) for c in range(cols)]
        c = 0
        while c < cols:
            if not covered[c]:
                c += 1
                continue
            start = c
            while c < cols and covered[c]:
                c += 1
            zones.append((start / cols, r / rows, c / cols, (r + 1) / rows))
    return zones
