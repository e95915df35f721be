"""Embedding whole image sets, streamed in batches, with an on-disk feature cache.

``embed_dataset`` never holds more than one batch of images: it pulls PIL
images from an iterable, preprocesses each with the embedder's own
``preprocess`` (the same path the worker uses) and writes each batch's
features into one preallocated float32 array: (N, D) for a global spec,
(N, h, w, D) for a patch spec.

``FeatureCache`` stores one image set's embeddings as ``KEY.npy`` plus a JSON
sidecar ``KEY.json``, where KEY hashes (spec fingerprint, image-set identity).
A rerun with the same spec and the same images loads instead of embedding.
Nothing is pickled (``np.save/np.load`` with ``allow_pickle=False``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Protocol

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from evaluation.datasets import ImageSet
from index_store.embedder import Embedder
from index_store.errors import IndexStoreError
from index_store.spec import EmbedderSpec

log = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "framewatch" / "features"


class FeatureSpec(Protocol):
    """What the cache needs of a way of making features: an EmbedderSpec, or a PixelSpec."""

    @property
    def dim(self) -> int: ...

    def fingerprint(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PixelSpec:
    """Raw-pixel features: the image resized to ``size`` x ``size`` RGB, flattened, scaled to [0, 1]."""

    size: int = 32

    @property
    def dim(self) -> int:
        return self.size * self.size * 3

    def fingerprint(self) -> str:
        return f"pixels{self.size}"

    def to_dict(self) -> dict[str, Any]:
        return {"pixels": self.size}


def configure_threads(n: Optional[int] = None) -> int:
    """Use ``n`` intra-op threads (default: every CPU this process may run on); returns the count."""
    if not n:
        n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(n)
    return n


def embed_dataset(
    embedder: Embedder,
    images: Iterable[Image.Image],
    n: int,
    batch_size: Optional[int] = None,
    desc: str = "embedding",
    progress: bool = True,
) -> np.ndarray:
    """Stream ``n`` images through the embedder -> (n, D) float32 (patch spec: (n, h, w, D)).

    Batches are made channels-last (what the CPU convolutions are fastest on).
    """
    bs = batch_size or embedder.batch_size
    out: Optional[np.ndarray] = None
    batch: list[torch.Tensor] = []
    filled = 0
    bar = tqdm(total=n, desc=desc, unit="img", file=sys.stderr, disable=not progress, smoothing=0.05)

    def flush() -> None:
        nonlocal filled, out
        x = torch.cat(batch).contiguous(memory_format=torch.channels_last)
        feats = embedder.embed_tensor(x)
        if out is None:
            out = np.empty((n, *feats.shape[1:]), dtype=np.float32)
        out[filled : filled + len(batch)] = feats
        filled += len(batch)
        bar.update(len(batch))
        batch.clear()

    try:
        for image in images:
            if filled + len(batch) >= n:
                raise IndexStoreError(f"more than the {n} images announced")
            batch.append(embedder.preprocess(image))
            if len(batch) == bs:
                flush()
        if batch:
            flush()
    finally:
        bar.close()
    if filled != n or out is None:
        raise IndexStoreError(f"expected {n} images, got {filled}")
    return out


@dataclass(frozen=True)
class CachedFeatures:
    """Embeddings of one image set: ``features`` (N, D) float32, and how they were obtained."""

    features: np.ndarray
    seconds: float  # time spent embedding (when first computed)
    from_cache: bool
    path: Optional[Path]


class FeatureCache:
    """Embeddings on disk under ``root`` (None = no caching)."""

    def __init__(self, root: Optional[str | os.PathLike[str]] = DEFAULT_CACHE_DIR) -> None:
        self.root = Path(root).expanduser() if root else None

    @staticmethod
    def key(spec: FeatureSpec, identity: str) -> str:
        blob = json.dumps({"spec": spec.fingerprint(), "images": identity}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:24]

    def contains(self, spec: FeatureSpec, images: ImageSet) -> bool:
        """Whether embeddings of these images under this spec are on disk (not validated)."""
        if self.root is None:
            return False
        key = self.key(spec, images.identity)
        return (self.root / f"{key}.npy").is_file() and (self.root / f"{key}.json").is_file()

    def load(self, spec: FeatureSpec, images: ImageSet) -> Optional[CachedFeatures]:
        if self.root is None:
            return None
        key = self.key(spec, images.identity)
        npy, meta_path = self.root / f"{key}.npy", self.root / f"{key}.json"
        if not (npy.is_file() and meta_path.is_file()):
            return None
        try:
            meta = json.loads(meta_path.read_text())
            feats = np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable cached features %s: %s", npy, e)
            return None
        if (
            feats.shape[0] != len(images)
            or feats.shape[-1] != spec.dim
            or meta.get("labels_sha256") != _labels_hash(images)
        ):
            log.warning("ignoring cached features %s: they do not match %s", npy, images.name)
            return None
        return CachedFeatures(
            feats.astype(np.float32, copy=False), float(meta.get("seconds", 0.0)), True, npy
        )

    def store(self, spec: FeatureSpec, images: ImageSet, feats: np.ndarray, seconds: float) -> Optional[Path]:
        if self.root is None:
            return None
        self.root.mkdir(parents=True, exist_ok=True)
        key = self.key(spec, images.identity)
        npy, meta_path = self.root / f"{key}.npy", self.root / f"{key}.json"
        tmp = self.root / f".{key}.{os.getpid()}.tmp.npy"
        np.save(tmp, np.ascontiguousarray(feats, dtype=np.float32), allow_pickle=False)
        os.replace(tmp, npy)
        meta = {
            "spec": spec.to_dict(),
            "spec_fingerprint": spec.fingerprint(),
            "images": images.name,
            "identity": images.identity,
            "n": int(feats.shape[0]),
            "dim": int(feats.shape[-1]),
            "shape": list(feats.shape),
            "labels_sha256": _labels_hash(images),
            "seconds": round(seconds, 3),
            "created_at": time.time(),
        }
        meta_path.write_text(json.dumps(meta, indent=1, sort_keys=True))
        return npy

    def get_or_compute(
        self, spec: FeatureSpec, images: ImageSet, compute: Callable[[], np.ndarray]
    ) -> CachedFeatures:
        """Cached features of ``images`` if present, else ``compute()`` them and store them."""
        hit = self.load(spec, images)
        if hit is not None:
            log.info("loaded %s features from %s", images.name, hit.path)
            return hit
        t0 = time.perf_counter()
        feats = compute()
        seconds = time.perf_counter() - t0
        return CachedFeatures(feats, seconds, False, self.store(spec, images, feats, seconds))

    def get_or_embed(
        self,
        spec: EmbedderSpec,
        images: ImageSet,
        make_embedder: Callable[[], Embedder],
        batch_size: Optional[int] = None,
        progress: bool = True,
    ) -> CachedFeatures:
        """Cached embeddings of ``images``, else embed them (building the embedder only then) and store."""
        return self.get_or_compute(
            spec,
            images,
            lambda: embed_dataset(
                make_embedder(), iter(images), len(images), batch_size, images.name, progress
            ),
        )

    def get_or_pixels(self, spec: PixelSpec, images: ImageSet, progress: bool = True) -> CachedFeatures:
        """Cached raw-pixel features of ``images``, else compute and store them."""
        return self.get_or_compute(spec, images, lambda: pixel_features(images, spec.size, progress))


def _labels_hash(images: ImageSet) -> str:
    return hashlib.sha256(np.ascontiguousarray(images.labels, dtype=np.int64).tobytes()).hexdigest()[:16]


def pixel_features(images: ImageSet, size: int = 32, progress: bool = True) -> np.ndarray:
    """Raw-pixel baseline: each image resized to ``size`` x ``size`` RGB, flattened, in [0, 1]:
    (N, size*size*3) float32."""
    out = np.empty((len(images), size * size * 3), dtype=np.float32)
    bar = tqdm(
        images,
        total=len(images),
        desc=f"{images.name} pixels",
        unit="img",
        file=sys.stderr,
        disable=not progress,
    )
    for i, im in enumerate(bar):
        im = im.convert("RGB").resize((size, size), Image.BILINEAR)
        out[i] = np.asarray(im, dtype=np.float32).reshape(-1) / 255.0
    return out
