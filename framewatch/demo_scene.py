"""A synthetic fixed-camera scene for the demo: normal frames and frames with foreign objects.

Normal frames: the same scene (a loading bay: sky, wall, door, floor, a
crate on the floor at a varying place) under varying light, sensor noise and
a few pixels of camera shake. Anomalies: the same, plus a foreign object
pasted in (a person-like figure, a bright ball, a tool, smoke). Deterministic
for a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

W, H = 320, 240


@dataclass(frozen=True)
class DemoSet:
    train: list[Path]
    holdout: list[Path]
    stream: list[Path]  # normal and anomalous, interleaved
    anomalies: set[str]  # names of the anomalous stream files


def _background(rng: np.random.Generator) -> Image.Image:
    img = Image.new("RGB", (W, H))
    d = ImageDraw.Draw(img)
    for y in range(90):  # sky gradient
        c = int(150 + y * 0.8)
        d.line([(0, y), (W, y)], fill=(c - 40, c - 10, c))
    d.rectangle([0, 60, W, 170], fill=(150, 140, 125))  # wall
    for x in range(0, W, 40):
        d.line([(x, 60), (x, 170)], fill=(135, 125, 112), width=2)
    d.rectangle([190, 85, 280, 170], fill=(90, 95, 105))  # door
    d.rectangle([0, 170, W, H], fill=(105, 105, 100))  # floor
    for x in range(-200, W, 30):
        d.line([(x, H), (x + 120, 170)], fill=(95, 95, 92), width=1)
    arr = np.asarray(img).astype(np.float32) + rng.normal(0, 3, (H, W, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _normal(bg: Image.Image, rng: np.random.Generator) -> Image.Image:
    img = bg.copy()
    d = ImageDraw.Draw(img)
    x = int(rng.integers(20, 150))
    d.rectangle([x, 150, x + 40, 185], fill=(160, 120, 70), outline=(110, 80, 40))  # the usual crate
    d.line([(x, 167), (x + 40, 167)], fill=(110, 80, 40), width=2)
    dx, dy = rng.integers(-3, 4, size=2)
    img = img.transform(img.size, Image.AFFINE, (1, 0, int(dx), 0, 1, int(dy)), fillcolor=(100, 100, 100))
    arr = np.asarray(img).astype(np.float32) * rng.uniform(0.85, 1.15) + rng.normal(0, 4, (H, W, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _paste_anomaly(img: Image.Image, kind: int, rng: np.random.Generator) -> Image.Image:
    img = img.copy()
    d = ImageDraw.Draw(img)
    x, y = int(rng.integers(30, 250)), int(rng.integers(100, 170))
    s = int(rng.integers(28, 48))
    if kind == 0:  # a person-like figure
        col = tuple(int(c) for c in rng.integers(0, 255, 3))
        d.ellipse([x, y - s, x + s // 2, y - s // 2], fill=(220, 180, 150))
        d.rectangle([x - s // 6, y - s // 2, x + s // 2 + s // 6, y + s // 2], fill=col)
        d.rectangle([x, y + s // 2, x + s // 2, y + s], fill=(40, 40, 60))
    elif kind == 1:  # a bright ball
        d.ellipse([x, y, x + s, y + s], fill=(230, 30, 40), outline=(255, 240, 0), width=3)
    elif kind == 2:  # a fallen ladder / tool
        d.line([(x, y), (x + 2 * s, y + s // 2)], fill=(240, 200, 0), width=6)
        d.line([(x, y + 12), (x + 2 * s, y + s // 2 + 12)], fill=(240, 200, 0), width=6)
    else:  # smoke
        smoke = Image.new("L", img.size, 0)
        ImageDraw.Draw(smoke).ellipse([x - s, y - 2 * s, x + 2 * s, y + s // 2], fill=200)
        smoke = smoke.filter(ImageFilter.GaussianBlur(12))
        img = Image.composite(Image.new("RGB", img.size, (235, 235, 235)), img, smoke)
    return img


def build_demo_set(out: Path, n_train: int, n_holdout: int, n_normal: int, n_anomalies: int, seed: int = 0) -> DemoSet:
    """Write PNGs under out/{train,holdout,stream} and return their paths."""
    rng = np.random.default_rng(seed)
    bg = _background(rng)
    for sub in ("train", "holdout", "stream"):
        (out / sub).mkdir(parents=True, exist_ok=True)

    def save(img: Image.Image, path: Path) -> Path:
        img.save(path, format="PNG")
        return path

    train = [save(_normal(bg, rng), out / "train" / f"normal_{i:04d}.png") for i in range(n_train)]
    holdout = [save(_normal(bg, rng), out / "holdout" / f"normal_{i:04d}.png") for i in range(n_holdout)]
    kinds = ["normal"] * n_normal + ["anomaly"] * n_anomalies
    order = rng.permutation(len(kinds))
    stream, anomalies = [], set()
    for pos, idx in enumerate(order):
        img = _normal(bg, rng)
        if kinds[idx] == "anomaly":
            img = _paste_anomaly(img, int(idx) % 4, rng)
            name = f"{pos:04d}_anomaly.png"
            anomalies.add(name)
        else:
            name = f"{pos:04d}_normal.png"
        stream.append(save(img, out / "stream" / name))
    return DemoSet(train, holdout, stream, anomalies)
