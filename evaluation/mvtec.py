"""MVTec AD / VisA layout reader and protocol: image ROC-AUC per category, pixel ROC-AUC where masks exist.

Layout (MVTec AD; VisA converted to the same layout)::

    ROOT/CATEGORY/train/good/*.png
    ROOT/CATEGORY/test/good/*.png
    ROOT/CATEGORY/test/DEFECT/*.png
    ROOT/CATEGORY/ground_truth/DEFECT/NAME_mask.png   (optional; VisA: NAME.png)

Per category: fit on train/good, score every test image (label = not good),
image ROC-AUC per method. With patch features and masks, the anomaly maps are
upsampled (bilinear) to ``PIXEL_GRID`` x ``PIXEL_GRID`` over the model's input
crop, the masks get the same resize and centre crop as the images, and pixel
ROC-AUC is taken over every pixel of every test image.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from evaluation.datasets import IMAGE_SUFFIXES, ImageSet, _folder_set
from evaluation.errors import DatasetUnavailable
from evaluation.evaluate import ClassResult, FeatureResult, Method, roc_auc
from index_store import anomaly_maps, fitting
from index_store.spec import EmbedderSpec

PIXEL_GRID = 64  # pixel ROC-AUC resolution over the model's input crop


@dataclass(frozen=True)
class Category:
    name: str
    train: ImageSet  # train/good, all label 0
    test: ImageSet  # label 0 = good, 1 = defective
    masks: tuple[Optional[Path], ...]  # per test image: its ground-truth mask, if any

    @property
    def has_masks(self) -> bool:
        return any(m is not None for m in self.masks)


def _images(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _mask_for(root: Path, defect: str, image: Path) -> Optional[Path]:
    for name in (f"{image.stem}_mask.png", f"{image.stem}.png"):
        path = root / "ground_truth" / defect / name
        if path.is_file():
            return path
    return None


def category_names(root: str | os.PathLike[str]) -> list[str]:
    """Sub-folders of ROOT that hold train/good (DatasetUnavailable if none)."""
    root = Path(root)
    names = sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir()) if root.is_dir() else []
    if not names:
        raise DatasetUnavailable(
            f"no MVTec-style categories under {root}: expected {root}/CATEGORY/train/good/*.png and "
            f"{root}/CATEGORY/test/{{good,DEFECT}}/*.png (MVTec AD: unpack mvtec_anomaly_detection.tar.xz there)"
        )
    return names


def load_category(root: str | os.PathLike[str], name: str) -> Category:
    base = Path(root) / name
    train_files = _images(base / "train" / "good")
    test_files: list[Path] = []
    labels: list[int] = []
    masks: list[Optional[Path]] = []
    test_dir = base / "test"
    defects = sorted(p.name for p in test_dir.iterdir() if p.is_dir()) if test_dir.is_dir() else []
    for defect in defects:
        for f in _images(test_dir / defect):
            test_files.append(f)
            labels.append(0 if defect == "good" else 1)
            masks.append(None if defect == "good" else _mask_for(base, defect, f))
    if not train_files or 0 not in labels or 1 not in labels:
        raise DatasetUnavailable(f"{base} needs train/good images and test images both good and defective")
    classes = ("good", "defect")
    return Category(
        name,
        _folder_set("train", base, train_files, [0] * len(train_files), classes),
        _folder_set("test", base, test_files, labels, classes),
        tuple(masks),
    )


def load(root: str | os.PathLike[str], names: Optional[Sequence[str]] = None) -> list[Category]:
    known = category_names(root)
    for n in names or ():
        if n not in known:
            raise DatasetUnavailable(f"no category {n!r} under {root} (categories: {', '.join(known)})")
    return [load_category(root, n) for n in (names or known)]


def mask_grid(path: Optional[Path], spec: EmbedderSpec, size: int = PIXEL_GRID) -> np.ndarray:
    """A ground-truth mask over what the model sees (the whole frame in the full view, else the resize +
    centre crop), at ``size`` x ``size``: bool."""
    from torchvision.transforms import functional as TF

    if path is None:
        return np.zeros((size, size), dtype=bool)
    with Image.open(path) as im:
        mask = im.convert("L")
    if spec.is_full:
        return np.asarray(mask.resize((size, size), Image.NEAREST)) > 127
    mask = TF.resize(mask, spec.resize, interpolation=TF.InterpolationMode.NEAREST)
    mask = TF.center_crop(mask, [spec.crop, spec.crop]).resize((size, size), Image.NEAREST)
    return np.asarray(mask) > 127


def upsample(maps: np.ndarray, size: int = PIXEL_GRID) -> np.ndarray:
    """(N, h, w) anomaly maps -> (N, size, size), bilinear over the same crop."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[:, 0].numpy()


def evaluate_category(
    cat: Category,
    train: np.ndarray,
    test: np.ndarray,
    methods: Sequence[Method],
    spec: EmbedderSpec,
    seed: int = 0,
) -> ClassResult:
    """Image ROC-AUC per method; pixel ROC-AUC per method too for patch features with masks."""
    labels = cat.test.labels.astype(bool)
    res = ClassResult(0, cat.name, int(len(train)))
    truth = np.stack([mask_grid(m, spec) for m in cat.masks]) if test.ndim == 4 and cat.has_masks else None
    if truth is not None and (spec.n_tiles > 1 or truth.all() or not truth.any()):
        truth = None  # tiled maps are not one grid over the frame; a crop can leave no anomalous pixel at all
    for m in methods:
        t0 = time.perf_counter()
        index = fitting.build(train, m.config(seed), spec)
        t1 = time.perf_counter()
        if test.ndim == 4:
            scores, maps = anomaly_maps.score_maps(index, test, spec)
        else:
            scores, maps = index.score(test), None
        res.auc[m.name] = roc_auc(labels, scores)
        res.fit_seconds[m.name] = round(t1 - t0, 4)
        res.score_seconds[m.name] = round(time.perf_counter() - t1, 4)
        if truth is not None and maps is not None:
            res.pixel_auc[m.name] = roc_auc(truth, upsample(maps))
    return res


def result(features: str, methods: Sequence[Method], per_category: list[ClassResult]) -> FeatureResult:
    for i, c in enumerate(per_category):
        c.index = i
    return FeatureResult(features, [m.name for m in methods], per_category)


def render_markdown(report: dict, main: FeatureResult) -> str:  # type: ignore[type-arg]
    """Image (and pixel) ROC-AUC % per category and method."""
    cols = list(main.methods)
    has_pixels = any(c.pixel_auc for c in main.classes)
    header = "| category | " + " | ".join(f"image {m}" for m in cols)
    header += (" | " + " | ".join(f"pixel {m}" for m in cols)) if has_pixels else ""
    n_cols = len(cols) * (2 if has_pixels else 1)
    lines = [
        f"## MVTec-style ROC-AUC: {report['dataset']['name']} ({report['spec_label']})",
        "",
        header + " |",
        "|---|" + "---:|" * n_cols,
    ]

    def pct(x: Optional[float]) -> str:
        return "" if x is None else f"{100 * x:.1f}"

    for c in main.classes:
        cells = [pct(c.auc.get(m)) for m in cols] + (
            [pct(c.pixel_auc.get(m)) for m in cols] if has_pixels else []
        )
        lines.append(f"| {c.name} | " + " | ".join(cells) + " |")
    means = [f"**{pct(main.mean(m))}**" for m in cols]
    if has_pixels:
        means += [f"**{pct(main.mean_pixel(m))}**" for m in cols]
    lines.append("| **mean** | " + " | ".join(means) + " |")
    t = report["timings"]
    lines += [
        "",
        f"Timings: embedding {t['embed_s']:.1f} s, evaluation {t['eval_s']:.1f} s, total {t['total_s']:.1f} s.",
    ]
    return "\n".join(lines) + "\n"
