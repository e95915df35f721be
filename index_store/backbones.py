"""Build a feature extractor (image batch -> pooled embedding) for an EmbedderSpec.

Every backbone returns the output of its global average pool: (N, 3, H, W)
-> (N, D). Weights come from torchvision's enums and cache (TORCH_HOME), a
local file, a Python package, or a seeded random init; checkpoints are always
loaded with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from index_store.errors import SpecMismatch, WeightsUnavailable
from index_store.spec import BACKBONE_DIMS, EmbedderSpec

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a state dict safely (no arbitrary unpickling)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise SpecMismatch(f"{path} does not hold a state dict")
    return obj


def _torchvision_weights(backbone: str, weights: str):  # type: ignore[no-untyped-def]
    from torchvision.models import get_weight

    enum_name = f"ResNet{backbone[len('resnet'):]}_Weights"
    try:
        return get_weight(f"{enum_name}.{weights}")
    except (ValueError, KeyError, AttributeError) as e:
        raise SpecMismatch(f"{enum_name} has no member {weights!r}") from e


def torchvision_cache_path(backbone: str, weights: str) -> Path:
    """Where torchvision keeps (or would download) these weights: $TORCH_HOME/hub/checkpoints/."""
    w = _torchvision_weights(backbone, weights)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)


def _torchvision_state_dict(backbone: str, weights: str) -> dict[str, torch.Tensor]:
    """Weights from torchvision's enum, read from its cache; downloaded only if possible."""
    w = _torchvision_weights(backbone, weights)
    cached = torchvision_cache_path(backbone, weights)
    if cached.exists():
        return load_checkpoint(cached)
    try:
        return w.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # network errors come in many types
        raise WeightsUnavailable(
            f"{backbone} {weights} weights are not cached at {cached} and could not be "
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
        state = _state_dict_for(spec)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]
        if missing or unexpected:
            raise SpecMismatch(
                f"weights do not fit {spec.backbone}: missing {missing[:3]}, unexpected {unexpected[:3]}"
            )
    model.fc = nn.Identity()  # type: ignore[assignment]
    return model


def _state_dict_for(spec: EmbedderSpec) -> dict[str, torch.Tensor]:
    if spec.weights.startswith("file:"):
        path = spec.weights[len("file:") :]
        if not os.path.exists(path):
            raise WeightsUnavailable(f"weights file {path} does not exist")
        if spec.weights_sha256 and file_sha256(path) != spec.weights_sha256:
            raise SpecMismatch(
                f"weights file {path} differs from the one the index was built with "
                f"(sha256 {spec.weights_sha256[:12]}...)"
            )
        return load_checkpoint(path)
    return _torchvision_state_dict(spec.backbone, spec.weights)


@contextlib.contextmanager
def seeded(spec: EmbedderSpec) -> Iterator[None]:
    """Build a model under a fixed seed for ``random:SEED`` (leaves the global RNG as it was)."""
    if not spec.is_random:
        yield
        return
    _, _, seed = spec.weights.partition(":")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed or 0))
        yield


BUILDERS: dict[str, Callable[[EmbedderSpec], nn.Module]] = {name: _resnet for name in RESNETS}


def register(name: str, builder: Callable[[EmbedderSpec], nn.Module]) -> None:
    """Add a backbone family (its dimension must be in spec.BACKBONE_DIMS)."""
    BUILDERS[name] = builder


def build_backbone(spec: EmbedderSpec) -> nn.Module:
    """An eval-mode module mapping (N, 3, crop, crop) float images to (N, spec.dim) features."""
    if spec.backbone not in BUILDERS:
        known = ", ".join(sorted(BUILDERS))
        raise SpecMismatch(f"unknown backbone {spec.backbone!r} (known: {known})")
    model = BUILDERS[spec.backbone](spec)
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, spec.crop, spec.crop))
    if out.shape != (1, BACKBONE_DIMS[spec.backbone]):
        raise SpecMismatch(f"{spec.backbone} gave features of shape {tuple(out.shape)}")
    return model


# Backbone families in their own modules register themselves on import.
from index_store import efficientnet_lite  # noqa: E402,F401  (efficientnet_lite0, efficientnet_lite2)
