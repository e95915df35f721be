"""A wide fixed-camera evaluation set: one 16:9 (1280x720) yard, seen whole, with anomalies where a
center crop does not look (issue 17).

The scene: sky and a tree line, a building wall with two like doorways (a fire
exit left of centre, a store door right of it) and windows, fence runs to both
sides, a lamp post and a cabinet at the left edge, a container and a bin at the
right edge, asphalt with bay lines, and a crate that stands in the store door
half the time and elsewhere along the wall's foot (``CRATE_SPOTS``) otherwise,
never near the fire exit. Normal frames vary in light (gain, colour cast, a left-right
gradient), sensor noise and a 1-3 px camera shake. Every frame, normal or not,
carries a burned-in clock and camera name at the top left (not shaken, as a
camera draws it) whose digits change from frame to frame. Training frames are
stamped on one day; every test frame, normal or anomalous, on the next, drawn
from the same times, so the clock never tells a label.

Cases, each an anomalous class beside the same normal test frames:

  - middle:   intruders 1/8-1/5 of the frame's height, wholly in its middle third (both axes);
  - sides:    the same, wholly in the side bands x < 0.25 W or x > 0.75 W (outside a 16:9 center crop);
  - edges:    the same, wholly in the top or bottom 20 % of the frame;
  - small:    intruders 1/24-1/12 of the height, anywhere (off the clock);
  - position: the crate in the fire exit, as it stands in the store door, at least ``CRATE_GAP`` px
              from anywhere it stands in normal frames: anomalous by where it is. (With the crate
              only along the wall, a location-free patch memory caught it by its new context at
              ROC-AUC 99; with it in the store door half the time, 78. Position-aware: 100.)
  - clock:    normal scenes whose clock shows a date and hour never seen (another year, at night).
              Nothing in the scene is anomalous: with an ignore zone over the clock these should score
              as the normal test frames do (ROC-AUC near 50, no alarms); without one, they show what
              a clock alone does to the scores.

Written per case in the MVTec AD layout, which ``--dataset folder`` also reads::

    ROOT/CASE/train/good/*.jpg        (the same training frames in every case, hard links)
    ROOT/CASE/test/good/*.jpg         (the same normal test frames in every case)
    ROOT/CASE/test/CASE/*.jpg
    ROOT/CASE/ground_truth/CASE/NNN_mask.png   (the intruder, crate or clock pixels)
    ROOT/zones.json                   (clock, doorway, store door boxes as fractions of W and H)
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

W, H = 1280, 720
PAD = 4  # the scene is drawn this much larger on each side, so a shake never shows an edge
CASES = ("middle", "sides", "edges", "small", "position", "clock")
CAMERA = "CAM-07 YARD NORTH"
TRAIN_DAY = dt.datetime(2026, 12, 4, 6, 0, 0)
TEST_DAY = dt.datetime(2026, 12, 5, 6, 0, 0)
ODD_CLOCK = dt.datetime(2027, 8, 29, 21, 0, 0)

# Boxes in frame pixels (x0, y0, x1, y1), before the shake.
DOORWAY = (440, 216, 568, 403)  # the fire exit, where no crate ever stands
STORE_DOOR = (712, 216, 840, 403)
CRATE_SIZE = (92, 80)
CRATE_BOTTOM = 409  # the crate stands at the wall's foot
CRATE_SPOTS = ((160, 290), (626, 1030))  # ranges of its left edge when not in the store door
CRATE_GAP = 70  # px between the crate in the fire exit and anywhere it stands in normal frames

GLYPHS = {  # 5x7 dot-matrix font of a camera overlay
    "0": "01110 10001 10011 10101 11001 10001 01110", "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111", "3": "11110 00001 00001 01110 00001 00001 11110",
    "4": "00010 00110 01010 10010 11111 00010 00010", "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110", "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110", "9": "01110 10001 10001 01111 00001 00010 01100",
    "-": "00000 00000 00000 11111 00000 00000 00000", ":": "00000 01100 01100 00000 01100 01100 00000",
    " ": "00000 00000 00000 00000 00000 00000 00000", "A": "01110 10001 10001 11111 10001 10001 10001",
    "C": "01110 10001 10000 10000 10000 10001 01110", "D": "11110 10001 10001 10001 10001 10001 11110",
    "H": "10001 10001 10001 11111 10001 10001 10001", "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 11001 10101 10011 10001 10001 10001", "O": "01110 10001 10001 10001 10001 10001 01110",
    "R": "11110 10001 10001 11110 10100 10010 10001", "T": "11111 00100 00100 00100 00100 00100 00100",
    "Y": "10001 10001 01010 00100 00100 00100 00100",
}  # fmt: skip
CLOCK_AT, CLOCK_SCALE, CLOCK_MARGIN = (16, 12), 3, 6


@dataclass(frozen=True)
class Frame:
    image: Image.Image
    mask: np.ndarray  # (H, W) bool: the anomalous pixels (all False for normal frames)


# ---------------------------------------------------------------- the overlay


def _text_bitmap(text: str) -> np.ndarray:
    """(7, 6 * len - 1) bool dot matrix of ``text``."""
    cols = []
    for ch in text:
        rows = GLYPHS[ch].split()
        cols.append(np.array([[b == "1" for b in r] for r in rows]))
        cols.append(np.zeros((7, 1), bool))
    return np.concatenate(cols[:-1], axis=1)


def _overlay_lines(when: dt.datetime) -> list[str]:
    return [when.strftime("%Y-%m-%d %H:%M:%S"), CAMERA]


def clock_box() -> tuple[int, int, int, int]:
    """The overlay's box in frame pixels (the same for every time: fixed-width digits)."""
    lines = _overlay_lines(TRAIN_DAY)
    width = max(_text_bitmap(t).shape[1] for t in lines) * CLOCK_SCALE
    height = (len(lines) * 9 - 2) * CLOCK_SCALE
    x, y = CLOCK_AT
    return x - CLOCK_MARGIN, y - CLOCK_MARGIN, x + width + CLOCK_MARGIN, y + height + CLOCK_MARGIN


def burn_clock(arr: np.ndarray, when: dt.datetime) -> None:
    """Darken the overlay's box and write the time and camera name in white, in place."""
    x0, y0, x1, y1 = clock_box()
    arr[y0:y1, x0:x1] = arr[y0:y1, x0:x1] * 0.45
    for i, line in enumerate(_overlay_lines(when)):
        dots = np.kron(_text_bitmap(line), np.ones((CLOCK_SCALE, CLOCK_SCALE), bool))
        top, left = CLOCK_AT[1] + i * 9 * CLOCK_SCALE, CLOCK_AT[0]
        arr[top : top + dots.shape[0], left : left + dots.shape[1]][dots] = 235.0


# ---------------------------------------------------------------- the scene


def _p(box: tuple[int, int, int, int]) -> list[int]:
    """A frame-pixel box on the padded canvas."""
    return [v + PAD for v in box]


def background(seed: int) -> np.ndarray:
    """The static yard on the padded canvas: (H + 2 PAD, W + 2 PAD, 3) float32."""
    rng = np.random.default_rng([seed, 99])
    img = Image.new("RGB", (W + 2 * PAD, H + 2 * PAD))
    d = ImageDraw.Draw(img)
    for y in range(0, 110 + PAD):  # sky
        c = 135 + y // 2
        d.line([(0, y), (W + 2 * PAD, y)], fill=(c - 30, c - 5, c + 25))
    for x in range(0, W + 2 * PAD, 14):  # tree line
        top = 62 + int(18 * np.sin(x / 37.0) + rng.integers(0, 14))
        d.ellipse([x - 16, top, x + 20, 125], fill=(48 + int(rng.integers(0, 18)), 78, 46))
    d.rectangle(_p((0, 110, W, 420)), fill=(112, 116, 104))  # far ground behind the fences
    d.rectangle(_p((150, 100, 1130, 403)), fill=(156, 132, 112))  # wall
    for y in range(112, 403, 14):  # brick courses
        d.line(_p((150, y, 1130, y)), fill=(136, 114, 96), width=2)
        for x in range(150 + (y // 14 % 2) * 20, 1130, 40):
            d.line(_p((x, y, x, y + 14)), fill=(136, 114, 96), width=2)
    d.rectangle(_p((140, 92, 1140, 104)), fill=(90, 88, 86))  # roof edge
    for x0 in (200, 300, 900, 1000):  # windows
        d.rectangle(_p((x0, 160, x0 + 80, 230)), fill=(70, 90, 110), outline=(210, 210, 200), width=4)
    for door in (DOORWAY, STORE_DOOR):
        d.rectangle(_p((door[0] - 8, door[1] - 8, door[2] + 8, door[3])), fill=(200, 200, 190))
        d.rectangle(_p(door), fill=(38, 40, 46))
    d.rectangle(_p((0, 403, W, H)), fill=(92, 93, 96))  # asphalt
    for x in range(-300, W + 300, 190):  # bay lines, in perspective
        d.line(_p((640 + (x - 640) // 3, 420, x, H)), fill=(200, 200, 196), width=5)
    for xs in ((0, 150), (1130, W)):  # fence runs beside the building
        for x in range(xs[0], xs[1] + 1, 32):
            d.line(_p((x, 300, x, 412)), fill=(80, 84, 88), width=5)
        for y in (308, 350, 396):
            d.line(_p((xs[0], y, xs[1], y)), fill=(90, 94, 98), width=3)
    d.rectangle(_p((22, 132, 32, 560)), fill=(60, 62, 66))  # lamp post at the left edge
    d.rectangle(_p((8, 116, 70, 134)), fill=(70, 72, 76))
    d.rectangle(_p((60, 470, 150, 600)), fill=(96, 112, 98), outline=(60, 70, 60), width=3)  # cabinet
    d.rectangle(_p((1150, 300, W, 520)), fill=(150, 60, 44))  # container at the right edge
    for x in range(1156, W, 18):
        d.line(_p((x, 300, x, 520)), fill=(120, 48, 36), width=3)
    d.rectangle(_p((1060, 560, 1170, 660)), fill=(40, 84, 52), outline=(24, 50, 30), width=3)  # bin
    for x in (300, 980):  # bollards near the bottom
        d.rectangle(_p((x, 640, x + 26, 712)), fill=(220, 200, 40))
    arr = np.asarray(img).astype(np.float32)
    return arr + rng.normal(0, 5, arr.shape).astype(np.float32)  # fixed surface texture


def _draw_crate(d: ImageDraw.ImageDraw, x: int, bottom: int) -> tuple[int, int, int, int]:
    w, h = CRATE_SIZE
    box = (x, bottom - h, x + w, bottom)
    d.rectangle(_p(box), fill=(164, 122, 72), outline=(108, 78, 40), width=4)
    for y in (bottom - h * 2 // 3, bottom - h // 3):
        d.line(_p((x, y, x + w, y)), fill=(108, 78, 40), width=3)
    d.line(_p((x, bottom - h, x + w, bottom)), fill=(120, 88, 48), width=4)
    return box


# ---------------------------------------------------------------- intruders


def _person(d: ImageDraw.ImageDraw, x: int, y: int, h: int, rng: np.random.Generator) -> None:
    """A standing figure whose box is (x, y) .. (x + 0.4 h, y + h)."""
    shirt = tuple(int(c) for c in rng.integers(20, 240, 3))
    legs = tuple(int(c) for c in rng.integers(15, 90, 3))
    skin = [(224, 182, 150), (176, 124, 90), (110, 74, 52)][int(rng.integers(3))]
    u = h / 100.0
    cx = x + 20 * u
    d.ellipse(_p((int(cx - 7 * u), y, int(cx + 7 * u), int(y + 14 * u))), fill=skin)
    d.rectangle(_p((int(cx - 13 * u), int(y + 15 * u), int(cx + 13 * u), int(y + 55 * u))), fill=shirt)
    d.rectangle(_p((int(cx - 20 * u), int(y + 17 * u), int(cx - 14 * u), int(y + 50 * u))), fill=shirt)
    d.rectangle(_p((int(cx + 14 * u), int(y + 17 * u), int(cx + 20 * u), int(y + 50 * u))), fill=shirt)
    spread = int(rng.integers(0, 6) * u)
    d.rectangle(_p((int(cx - 12 * u) - spread, int(y + 55 * u), int(cx - 2 * u), y + h)), fill=legs)
    d.rectangle(_p((int(cx + 2 * u), int(y + 55 * u), int(cx + 12 * u) + spread, y + h)), fill=legs)


def _dog(d: ImageDraw.ImageDraw, x: int, y: int, h: int, rng: np.random.Generator) -> None:
    """A four-legged animal whose box is (x, y) .. (x + 1.5 h, y + h)."""
    fur = tuple(int(c) for c in rng.integers(40, 200) * np.array([1.0, 0.8, 0.6]))
    u = h / 100.0
    d.ellipse(_p((int(x + 20 * u), int(y + 30 * u), int(x + 130 * u), int(y + 75 * u))), fill=fur)
    d.ellipse(_p((int(x + 105 * u), y, int(x + 150 * u), int(y + 42 * u))), fill=fur)
    for lx in (30, 50, 100, 118):
        d.rectangle(_p((int(x + lx * u), int(y + 60 * u), int(x + (lx + 10) * u), y + h)), fill=fur)


def _drone(d: ImageDraw.ImageDraw, x: int, y: int, h: int, rng: np.random.Generator) -> None:
    """A quadcopter whose box is (x, y) .. (x + 2 h, y + h)."""
    body = tuple(int(c) for c in rng.integers(10, 80, 3))
    u = h / 100.0
    d.rectangle(_p((int(x + 70 * u), int(y + 35 * u), int(x + 130 * u), int(y + 70 * u))), fill=body)
    d.line(
        _p((int(x + 25 * u), int(y + 20 * u), int(x + 175 * u), int(y + 85 * u))),
        fill=body,
        width=max(2, int(6 * u)),
    )
    d.line(
        _p((int(x + 25 * u), int(y + 85 * u), int(x + 175 * u), int(y + 20 * u))),
        fill=body,
        width=max(2, int(6 * u)),
    )
    for px, py in ((0, 0), (150, 0), (0, 70), (150, 70)):
        d.ellipse(
            _p((int(x + px * u), int(y + py * u), int(x + (px + 50) * u), int(y + (py + 30) * u))),
            fill=(200, 200, 205),
        )


SHAPES: dict[str, tuple[Callable[..., None], float]] = {
    "person": (_person, 0.4),
    "dog": (_dog, 1.5),
    "drone": (_drone, 2.0),
}


def _place(rng: np.random.Generator, case: str) -> tuple[str, int, int, int]:
    """(shape, x, y, height) with the shape's box wholly inside the case's region."""
    cx0, cy0, cx1, cy1 = clock_box()
    while True:
        small = case == "small"
        h = int(rng.uniform(H / 24, H / 12) if small else rng.uniform(H / 8, H / 5))
        top_band = case == "edges" and rng.random() < 0.5
        shape = str(rng.choice(["drone", "person"] if top_band else ["person", "person", "dog"]))
        w = int(h * SHAPES[shape][1])
        if case == "middle":
            x0, x1, y0, y1 = W / 3, 2 * W / 3, H / 3, 2 * H / 3
        elif case == "sides":
            x0, x1 = (0, 0.25 * W) if rng.random() < 0.5 else (0.75 * W, W)
            y0, y1 = 0.2 * H, 0.8 * H
        elif case == "edges":
            x0, x1, y0, y1 = 0, W, *((0, 0.2 * H) if top_band else (0.8 * H, H))
        else:
            x0, x1, y0, y1 = 0, W, 0, H
        x0, x1, y0, y1 = x0 + PAD, x1 - PAD, y0 + PAD, y1 - PAD  # still inside after the shake
        if x1 - x0 < w or y1 - y0 < h:
            continue
        x, y = int(rng.uniform(x0, x1 - w)), int(rng.uniform(y0, y1 - h))
        off_clock = x > cx1 + 8 or y > cy1 + 8 or x + w < cx0 - 8
        if off_clock:
            return shape, x, y, h


# ---------------------------------------------------------------- frames


def render(bg: np.ndarray, rng: np.random.Generator, when: dt.datetime, case: str = "") -> Frame:
    """One frame: the scene (plus the case's anomaly), shaken, lit, noisy, then the clock burned in."""
    scene = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8))
    mask = Image.new("L", scene.size, 0)
    d, m = ImageDraw.Draw(scene), ImageDraw.Draw(mask)
    spot = CRATE_SPOTS[int(rng.integers(2))]
    crate_x = int(rng.integers(spot[0], spot[1] + 1))
    if rng.random() < 0.5:  # half the time in the store door, as it will stand in the fire exit
        crate_x = (STORE_DOOR[0] + STORE_DOOR[2] - CRATE_SIZE[0]) // 2 + int(rng.integers(-6, 7))
    if case == "position":  # in the fire exit instead
        crate_x = (DOORWAY[0] + DOORWAY[2] - CRATE_SIZE[0]) // 2 + int(rng.integers(-6, 7))
    crate = _draw_crate(d, crate_x, CRATE_BOTTOM + int(rng.integers(-2, 3)))
    if case in ("middle", "sides", "edges", "small"):
        shape, x, y, h = _place(rng, case)
        layer = Image.new("RGBA", scene.size, (0, 0, 0, 0))
        SHAPES[shape][0](ImageDraw.Draw(layer), x, y, h, rng)
        scene.paste(layer, (0, 0), layer)
        mask = layer.getchannel("A")
    elif case == "position":
        m.rectangle(_p(crate), fill=255)
    dx, dy = (int(v) for v in rng.integers(-3, 4, size=2))
    crop = (PAD + dx, PAD + dy, PAD + dx + W, PAD + dy + H)
    arr = np.asarray(scene.crop(crop)).astype(np.float32)
    gain = (
        rng.uniform(0.8, 1.2)
        * rng.uniform(0.96, 1.04, 3)
        * np.linspace(*rng.uniform(0.9, 1.1, 2), W)[:, None]
    )
    arr = arr * gain.astype(np.float32) + rng.normal(0, rng.uniform(2, 6), arr.shape).astype(np.float32)
    burn_clock(arr, when)
    frame_mask = np.asarray(mask.crop(crop)) > 0
    if case == "clock":
        x0, y0, x1, y1 = clock_box()
        frame_mask[y0:y1, x0:x1] = True
    return Frame(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)), frame_mask)


def stamp(day: dt.datetime, rng: np.random.Generator) -> dt.datetime:
    """A time on ``day`` between 06:00 and 20:00 (the test day's times are drawn alike for every label)."""
    return day + dt.timedelta(seconds=int(rng.integers(0, 14 * 3600)))


# ---------------------------------------------------------------- the folders


def zones() -> dict[str, list[float]]:
    """Boxes as fractions of the frame's width and height (x0, y0, x1, y1), for ``--ignore``."""

    def frac(box: tuple[int, int, int, int]) -> list[float]:
        return [round(box[0] / W, 4), round(box[1] / H, 4), round(box[2] / W, 4), round(box[3] / H, 4)]

    return {"clock": frac(clock_box()), "doorway": frac(DOORWAY), "store_door": frac(STORE_DOOR)}


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_wide_camera(
    root: str | Path,
    n_train: int = 120,
    n_normal: int = 60,
    n_case: int = 30,
    seed: int = 0,
    quality: int = 92,
) -> Path:
    """Write the set under ``root`` (see the module docstring); returns ``root``."""
    root = Path(root)
    bg = background(seed)
    shared = {"train": [], "good": []}
    for split, n, day in (("train", n_train, TRAIN_DAY), ("good", n_normal, TEST_DAY)):
        rng = np.random.default_rng([seed, 1 if split == "train" else 2])
        for i in range(n):
            path = root / CASES[0] / ("train/good" if split == "train" else "test/good") / f"{i:03d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            render(bg, rng, stamp(day, rng)).image.save(path, quality=quality)
            shared[split].append(path)
    for c, case in enumerate(CASES):
        for src in shared["train"] + shared["good"]:
            if case != CASES[0]:
                _link(src, root / case / src.relative_to(root / CASES[0]))
        rng = np.random.default_rng([seed, 10 + c])
        for i in range(n_case):
            when = (
                (ODD_CLOCK + dt.timedelta(seconds=int(rng.integers(0, 3 * 3600))))
                if case == "clock"
                else stamp(TEST_DAY, rng)
            )
            frame = render(bg, rng, when, case)
            path = root / case / "test" / case / f"{i:03d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.image.save(path, quality=quality)
            gt = root / case / "ground_truth" / case / f"{i:03d}_mask.png"
            gt.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((frame.mask * 255).astype(np.uint8)).save(gt)
    (root / "zones.json").write_text(json.dumps(zones(), indent=2) + "\n")
    return root
