"""Build a feature extractor for an EmbedderSpec: image batch -> global feature or patch-feature grid.

Global kind: the output of the backbone's global average pool, (N, 3, H, W)
-> (N, D), or with regions that pool over a grid, (N, D, R, C) (``regions.py``). Patch kind: the stride-8/16 taps turned into one grid,
(N, 3, H, W) -> (N, D, H/8, W/8) (``patch_features.PatchFeatures``). Which
backbones exist, their sizes and taps: ``registry.py``. ResNet weights come
from torchvision's enums and cache (TORCH_HOME), a local file, or a seeded
random init; EfficientNet-Lite weights from ``efficientnet_lite.py``.
Checkpoints are always loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Optional

import torch
from torch import nn

from index_store import adapted as adapted_weights
from index_store import efficientnet_lite
from index_store.errors import SpecMismatch, WeightsUnavailable
from index_store.patch_features import PatchFeatures
from index_store.regions import RegionFeatures
from index_store.registry import backbone
from index_store.spec import EmbedderSpec
from index_store.weights import file_sha256, load_checkpoint, seeded, spec_file

__all__ = ["build_backbone", "build_trunk", "file_sha256", "torchvision_cache_path"]


def _torchvision_weights(name: str, weights: str):  # type: ignore[no-untyped-def]
    from torchvision.models import get_weight

    enum_name = f"ResNet{name[len('resnet') :]}_Weights"
    try:
        return get_weight(f"{enum_name}.{weights}")
    except (ValueError, KeyError, AttributeError) as e:
        raise SpecMismatch(f"{enum_name} has no member {weights!r}") from e


def torchvision_cache_path(name: str, weights: str) -> Path:
    """Where torchvision keeps (or would download) these weights: $TORCH_HOME/hub/checkpoints/."""
    w = _torchvision_weights(name, weights)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)


def _torchvision_state_dict(name: str, weights: str) -> dict[str, torch.Tensor]:
    """Weights from torchvision's enum, read from its cache; downloaded only if possible."""
    w = _torchvision_weights(name, weights)
    cached = torchvision_cache_path(name, weights)
    if cached.exists():
        return load_checkpoint(cached)
    try:
        return w.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # network errors come in many types
        raise WeightsUnavailable(
            f"{name} {weights} weights are not cached at {cached} and could not be "
            f"downloaded ({e.__class__.__name__}: {e}).\n"
            f"  Get them on a machine with network: curl -L -o {cached.name} {w.url}\n"
            f"  then copy the file to {cached} (or set TORCH_HOME), or pass "
            f"--weights /path/to/{cached.name}.\n"
            f"  For a run without pretrained weights use --weights random (much weaker scores)."
        ) from e


def _resnet(spec: EmbedderSpec) -> nn.Module:
    import torchvision

    with seeded(spec):
        model: nn.Module = getattr(torchvision.models, spec.backbone)(weights=None)
    if not spec.is_random:
        if spec.weights.startswith("file:"):
            state = load_checkpoint(spec_file(spec))
        else:
            state = _torchvision_state_dict(spec.backbone, spec.weights)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise SpecMismatch(
                f"weights do not fit {spec.backbone}: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
    model.fc = nn.Identity()  # type: ignore[assignment]
    return model


FAMILIES = {"resnet": _resnet, "efficientnet_lite": efficientnet_lite.build}


def build_trunk(spec: EmbedderSpec) -> nn.Module:
    """The backbone with the spec's base weights, before any adapted weights or patch taps."""
    return FAMILIES[backbone(spec.backbone).family](spec).eval()


def build_backbone(spec: EmbedderSpec, adapted: Optional[Mapping[str, torch.Tensor]] = None) -> nn.Module:
    """An eval-mode module: (N, 3, crop, crop) float images -> (N, dim) or, patch kind, (N, dim, h, w).

    A fine-tuned spec needs its ``adapted`` tensors (``adapted.decode`` checked their sha256); they are
    loaded over the trunk before the patch taps are attached, and a global spec's output is L2-normalised.
    """
    dim = spec.dim  # SpecMismatch for an unknown backbone, kind or layer
    if spec.is_adapted and adapted is None:
        raise WeightsUnavailable(f"{spec.label()} is fine-tuned: its adapted weights (stored with the index "
                                 "version in Redis) were not given")  # fmt: skip
    trunk = build_trunk(spec)
    if adapted is not None:
        if not spec.is_adapted:
            raise SpecMismatch(f"{spec.label()} is not fine-tuned, yet adapted weights were given")
        adapted_weights.apply(trunk, adapted)
    model = adapted_weights.L2Normalized(trunk).eval() if spec.is_adapted and not spec.is_patch else trunk
    if spec.n_regions > 1:  # one vector per region, each L2-normalised (index_store/regions.py)
        model = RegionFeatures(trunk, spec.regions, dim).eval()
    if spec.is_patch:
        model = PatchFeatures(trunk, spec.layers, spec.proj_dim, spec.proj_seed).eval()
        if model.channels != spec.tap_channels:
            raise SpecMismatch(
                f"{spec.label()} taps give {model.channels} channels, the registry says {spec.tap_channels}"
            )
    with torch.no_grad():
        out = model(torch.zeros(1, 3, spec.crop, spec.crop))
    if out.shape[:2] != (1, dim) or out.dim() != (4 if spec.is_grid else 2):
        raise SpecMismatch(f"{spec.label()} gave features of shape {tuple(out.shape)}, expected dim {dim}")
    return model
