"""Streaming embedding of image sets and the on-disk feature cache (with a stand-in embedder)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.datasets import ImageSet
from evaluation.features import FeatureCache, PixelSpec, embed_dataset, pixel_features
from index_store.errors import IndexStoreError
from index_store.spec import EmbedderSpec


class FakeEmbedder:
    """Feature = mean colour of the 8x8 RGB image, tiled to 4 dims; records batch sizes."""

    dim = 4
    batch_size = 3

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.modes: set[str] = set()

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        self.modes.add(image.mode)
        image = image.convert("RGB").resize((8, 8))
        return torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None] / 255  # (tiles, 3, h, w)

    def embed_tensor(self, batch: torch.Tensor) -> np.ndarray:
        self.batches.append(batch.shape[0])
        m = batch.mean(dim=(1, 2, 3)).numpy()
        return np.repeat(m[:, None], 4, axis=1).astype(np.float32)


def gray_set(n: int, ident: str = "gray") -> ImageSet:
    return ImageSet(
        name="gray",
        labels=np.arange(n) % 2,
        class_names=("even", "odd"),
        load=lambda i: Image.new("L", (28, 28), i * 10),
        identity=ident,
    )


def test_streams_in_batches_and_accepts_grayscale() -> None:
    emb = FakeEmbedder()
    images = gray_set(8)
    out = embed_dataset(emb, iter(images), len(images), progress=False)  # type: ignore[arg-type]
    assert out.shape == (8, 4) and out.dtype == np.float32
    assert emb.batches == [3, 3, 2]
    np.testing.assert_allclose(out[:, 0], np.arange(8) * 10 / 255, atol=1e-6)


def test_wrong_count_is_an_error() -> None:
    with pytest.raises(IndexStoreError):
        embed_dataset(FakeEmbedder(), iter(gray_set(5)), 4, progress=False)  # type: ignore[arg-type]
    with pytest.raises(IndexStoreError):
        embed_dataset(FakeEmbedder(), iter(gray_set(3)), 4, progress=False)  # type: ignore[arg-type]


def test_cache_round_trip_and_keys(tmp_path: Path) -> None:
    spec = EmbedderSpec("resnet18", "random:0")
    cache = FeatureCache(tmp_path)
    images = gray_set(5)
    built: list[FakeEmbedder] = []

    def make() -> FakeEmbedder:
        built.append(FakeEmbedder())
        return built[-1]

    # the stand-in's dim (4) is not resnet18's (512), so give the cache a matching spec dim
    spec4 = _Spec4(spec)
    first = cache.get_or_embed(spec4, images, make, progress=False)  # type: ignore[arg-type]
    assert not first.from_cache and len(built) == 1
    again = cache.get_or_embed(spec4, images, make, progress=False)  # type: ignore[arg-type]
    assert again.from_cache and len(built) == 1  # no embedder built the second time
    np.testing.assert_array_equal(again.features, first.features)
    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".npy"]
    # other images or another spec: a different key
    assert cache.load(spec4, gray_set(5, "other")) is None  # type: ignore[arg-type]
    assert FeatureCache.key(spec, "x") != FeatureCache.key(dataclasses.replace(spec, weights="random:1"), "x")


@dataclasses.dataclass(frozen=True)
class _Spec4:
    """A feature spec whose dimension matches the stand-in embedder."""

    spec: EmbedderSpec
    dim: int = 4

    def fingerprint(self) -> str:
        return self.spec.fingerprint()

    def to_dict(self) -> dict:  # type: ignore[type-arg]
        return self.spec.to_dict()


def test_no_cache_dir_means_no_files(tmp_path: Path) -> None:
    cache = FeatureCache(None)
    res = cache.get_or_embed(_Spec4(EmbedderSpec()), gray_set(2), FakeEmbedder, progress=False)  # type: ignore[arg-type]
    assert res.path is None and not res.from_cache


def test_pixel_features(tmp_path: Path) -> None:
    px = pixel_features(gray_set(3), size=4, progress=False)
    assert px.shape == (3, 48)
    np.testing.assert_allclose(px[2], 20 / 255, atol=1e-6)
    cache = FeatureCache(tmp_path)
    first = cache.get_or_pixels(PixelSpec(4), gray_set(3), progress=False)
    again = cache.get_or_pixels(PixelSpec(4), gray_set(3), progress=False)
    assert not first.from_cache and again.from_cache
    np.testing.assert_array_equal(again.features, px)
    assert cache.load(PixelSpec(8), gray_set(3)) is None
