"""MSC fine-tuning (model tests: small torch models at 64 px on CPU)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from framewatch import eval_cmd
from index_store.backbones import build_trunk
from index_store.embedder import Embedder
from index_store.errors import CorruptIndex, WeightsUnavailable
from index_store.finetune import FinetuneConfig, finetune, freeze_early, msc_loss, trainable_prefixes
from index_store.registry import BACKBONES
from index_store.spec import EmbedderSpec
from tests.unit.test_eval_cmd import CLASSES, shape_image

SMALL = EmbedderSpec("resnet18", "random:0", resize=64, crop=64)


def toy_scene(i: int) -> Image.Image:
    """A 'camera' view: the same background, a red box at a random place."""
    rng = np.random.default_rng(i)
    im = Image.new("RGB", (64, 64), (90, 110, 90))
    x, y = (int(v) for v in rng.integers(8, 40, 2))
    ImageDraw.Draw(im).rectangle([x, y, x + 16, y + 16], fill=(200, 60, 60))
    return im


@pytest.fixture(scope="module")
def tuned():  # type: ignore[no-untyped-def]
    images = [toy_scene(i) for i in range(16)]
    cfg = FinetuneConfig(epochs=4, lr=1e-3, batch=8, device="cpu")
    return images, finetune(SMALL, lambda i: images[i], len(images), cfg, progress=False)


def test_the_loss_decreases_on_a_toy_set(tuned) -> None:  # type: ignore[no-untyped-def]
    _, result = tuned
    assert len(result.losses) == 4
    assert result.losses[-1] < result.losses[0]


def test_msc_loss_rewards_views_that_agree() -> None:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(8, 32, generator=gen)
    centre = torch.nn.functional.normalize(torch.randn(32, generator=gen), dim=0)
    close = msc_loss(z, z + 0.01 * torch.randn(8, 32, generator=gen), centre)
    shuffled = msc_loss(z, z[torch.randperm(8, generator=gen)], centre)
    assert float(close) < float(shuffled)


def test_adapted_weights_are_safetensors_and_pinned_by_their_sha256(tuned) -> None:  # type: ignore[no-untyped-def]
    images, result = tuned
    blob = result.weights
    header_len = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + header_len])
    assert header["__metadata__"]["method"] == "msc"
    assert all(k.startswith(("layer3.", "layer4.")) for k in header if k != "__metadata__")
    assert result.spec.label().startswith("resnet18/random:0/msc:")

    adapted = result.embedder("cpu").embed(images[:4])
    np.testing.assert_allclose(np.linalg.norm(adapted, axis=1), 1.0, rtol=1e-5)  # cosine kNN afterwards
    base = Embedder(SMALL, "cpu").embed(images[:4])
    assert not np.allclose(adapted, base / np.linalg.norm(base, axis=1, keepdims=True), atol=1e-4)

    tampered = bytearray(blob)
    tampered[-1] ^= 0xFF
    with pytest.raises(CorruptIndex, match="sha256"):
        Embedder(result.spec, "cpu", adapted=bytes(tampered))
    with pytest.raises(WeightsUnavailable, match="adapted weights"):
        Embedder(result.spec, "cpu")


def test_the_adapted_spec_is_a_different_embedder_and_round_trips() -> None:
    spec = dataclasses.replace(SMALL, adapted_sha256="ab" * 32)
    assert spec.fingerprint() != SMALL.fingerprint()
    assert EmbedderSpec.from_dict(spec.to_dict()) == spec
    assert EmbedderSpec.from_dict(SMALL.to_dict()).fingerprint() == SMALL.fingerprint()
    # a plain spec is written without the field, so workers that predate fine-tuning still serve it
    assert "adapted_sha256" not in SMALL.to_dict() and spec.to_dict()["adapted_sha256"] == "ab" * 32


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_trains_its_later_stages_only(name: str) -> None:
    trunk = build_trunk(dataclasses.replace(EmbedderSpec(name, "random:0"), kind="global"))
    trained = freeze_early(trunk, trainable_prefixes(EmbedderSpec(name)))
    frozen = [n for n, p in trunk.named_parameters() if not p.requires_grad]
    assert trained and frozen
    first = next(n for n, _ in trunk.named_parameters())
    assert first in frozen  # the stem never trains


def test_eval_finetune_per_class_and_cached(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for cls, (colour, shape) in CLASSES.items():
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for i in range(4):
                shape_image(colour, shape, rng).save(tmp_path / "data" / split / cls / f"{i}.png")
    out = tmp_path / "r.json"
    argv = ["eval", "--dataset", "folder", "--data", str(tmp_path / "data"), "--backbone", "resnet18",
            "--weights", "random:0", "--crop", "64", "--clusters", "2", "--finetune", "msc", "--epochs", "1",
            "--batch", "4", "--cache-dir", str(tmp_path / "cache"), "--out-json", str(out), "--no-progress"]  # fmt: skip
    parser = argparse.ArgumentParser()
    eval_cmd.add_parser(parser.add_subparsers())
    assert eval_cmd.run(parser.parse_args(argv)) == 0
    report = json.loads(out.read_text())
    assert report["results"]["features"].endswith("/msc")
    assert set(report["finetune"]["per_class"]) == set(CLASSES)
    assert all(len(c["losses"]) == 1 for c in report["finetune"]["per_class"].values())
    assert set(report["results"]["mean_auc"]) == {"exact", "C=2"}
    assert eval_cmd.run(parser.parse_args(argv)) == 0  # the adapted features come from the cache
    again = json.loads(out.read_text())
    assert again["timings"]["from_cache"] is True
    assert again["results"]["mean_auc"] == report["results"]["mean_auc"]
