"""A small-local-defect set in the MVTec AD layout, made from texture photos.

Each texture (a 2-D grayscale array, e.g. scikit-image's ``brick``, ``grass``,
``gravel``) gives square crops: training crops from the top part of the photo,
test crops from the bottom part (no pixel is shared between train and test).
Half the test crops get one small defect, with its mask:

  - scratch: a thin straight line, darker or brighter than its surroundings;
  - stain: a soft-edged blob that darkens or lightens the texture;
  - patch: a square cut from another texture, pasted in.

Each defect covers ``DEFECT_AREA`` (1-4 %) of the crop. Written as
``ROOT/TEXTURE/train/good``, ``ROOT/TEXTURE/test/{good,scratch,stain,patch}``
and ``ROOT/TEXTURE/ground_truth/DEFECT/NAME_mask.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

DEFECTS = ("scratch", "stain", "patch")
DEFECT_AREA = (0.01, 0.04)
TRAIN_ROWS = 0.6  # training crops come from the top 60 % of each photo, test crops from the rest


def _crop(photo: np.ndarray, size: int, rows: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    y = int(rng.integers(rows[0], rows[1] - size + 1))
    x = int(rng.integers(0, photo.shape[1] - size + 1))
    out = photo[y : y + size, x : x + size]
    return out[:, ::-1] if rng.random() < 0.5 else out


def _scratch(size: int, rng: np.random.Generator) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    width = max(2, size // 40)
    length = rng.uniform(*DEFECT_AREA) * size * size / width
    cx, cy = rng.uniform(0.2, 0.8, 2) * size
    angle = rng.uniform(0, np.pi)
    dx, dy = np.cos(angle) * length / 2, np.sin(angle) * length / 2
    ImageDraw.Draw(mask).line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=255, width=width)
    return mask


def _blob(size: int, rng: np.random.Generator) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    area = rng.uniform(*DEFECT_AREA) * size * size
    ratio = rng.uniform(0.6, 1.6)
    rx = np.sqrt(area / np.pi * ratio)
    ry = area / np.pi / rx
    cx, cy = rng.uniform(0.2, 0.8, 2) * size
    ImageDraw.Draw(mask).ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
    return mask


def _square(size: int, rng: np.random.Generator) -> Image.Image:
    mask = Image.new("L", (size, size), 0)
    side = np.sqrt(rng.uniform(*DEFECT_AREA)) * size
    x, y = rng.uniform(0.1, 0.9, 2) * size - side / 2
    ImageDraw.Draw(mask).rectangle([x, y, x + side, y + side], fill=255)
    return mask


def add_defect(
    crop: np.ndarray, kind: str, other: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(defective crop, bool mask). ``other``: a same-size crop of another texture (for ``patch``)."""
    size = crop.shape[0]
    img = crop.astype(np.float32)
    if kind == "scratch":
        mask = np.asarray(_scratch(size, rng)) > 0
        img[mask] = np.clip(img[mask] + rng.choice([-1, 1]) * rng.uniform(60, 110), 0, 255)
    elif kind == "stain":
        hard = _blob(size, rng)
        soft = np.asarray(hard.filter(ImageFilter.GaussianBlur(size / 60)), dtype=np.float32) / 255.0
        mask = np.asarray(hard) > 0
        shift = rng.choice([-1, 1]) * rng.uniform(50, 90)
        img = np.clip(img + soft * shift, 0, 255)
    elif kind == "patch":
        mask = np.asarray(_square(size, rng)) > 0
        img[mask] = other.astype(np.float32)[mask]
    else:
        raise ValueError(f"unknown defect {kind!r} (known: {', '.join(DEFECTS)})")
    return img.astype(np.uint8), mask


def _save(arr: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).convert("RGB").save(path)


def write_defect_set(
    root: str | Path,
    photos: Mapping[str, np.ndarray],
    n_train: int = 30,
    n_good: int = 15,
    n_defect: int = 15,
    size: int = 160,
    seed: int = 0,
) -> Path:
    """Write the MVTec-style tree under ``root`` (one category per photo); returns ``root``."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    names = sorted(photos)
    for name in names:
        photo = np.asarray(photos[name], dtype=np.uint8)
        split = int(photo.shape[0] * TRAIN_ROWS)
        train_rows, test_rows = (0, split), (split, photo.shape[0])
        others = [np.asarray(photos[o], dtype=np.uint8) for o in names if o != name] or [255 - photo]
        for i in range(n_train):
            _save(_crop(photo, size, train_rows, rng), root / name / "train" / "good" / f"{i:03d}.png")
        for i in range(n_good):
            _save(_crop(photo, size, test_rows, rng), root / name / "test" / "good" / f"{i:03d}.png")
        for i in range(n_defect):
            kind = DEFECTS[i % len(DEFECTS)]
            other = others[i % len(others)]
            other_crop = _crop(other, size, (0, other.shape[0]), rng)
            img, mask = add_defect(_crop(photo, size, test_rows, rng), kind, other_crop, rng)
            _save(img, root / name / "test" / kind / f"{i:03d}.png")
            gt = root / name / "ground_truth" / kind / f"{i:03d}_mask.png"
            gt.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((mask * 255).astype(np.uint8)).save(gt)
    return root
