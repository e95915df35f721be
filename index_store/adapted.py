"""Adapted (fine-tuned) weights: a safetensors blob, its sha256, and loading it over a built backbone.

The blob holds only the tensors fine-tuning changed (the trainable stages of
``registry.Backbone.trainable``); the frozen rest comes from the spec's
``weights`` as before. Safetensors is a flat header plus raw tensor bytes:
reading it cannot run code, unlike a pickled ``torch.save`` file, which is why
weights that travel through Redis are never anything else.
"""

from __future__ import annotations

import hashlib
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from index_store.errors import CorruptIndex, SpecMismatch


def sha256_hex(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()


def encode(state: Mapping[str, torch.Tensor], method: str = "msc") -> bytes:
    """Tensors -> safetensors bytes (contiguous float32 copies on CPU; the same tensors give the same bytes)."""
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in sorted(state.items())}
    return st_save(tensors, metadata={"format": "pt", "method": method})


def decode(blob: bytes, expected_sha256: str) -> dict[str, torch.Tensor]:
    """Safetensors bytes -> tensors, after checking them against ``expected_sha256`` (CorruptIndex if not)."""
    actual = sha256_hex(blob)
    if actual != expected_sha256:
        raise CorruptIndex(
            f"adapted weights fail their sha256: stored {actual[:12]}..., the index was fitted with "
            f"{expected_sha256[:12]}...; refusing to embed with weights other than the fitted ones"
        )
    try:
        return st_load(blob)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CorruptIndex(f"adapted weights are not a readable safetensors blob: {e}") from e


def apply(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load ``state`` over ``model`` in place; every tensor must name a parameter or buffer of the same shape."""
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    if unknown:
        raise SpecMismatch(f"adapted weights name tensors this backbone lacks: {unknown[:3]}")
    wrong = [k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        raise SpecMismatch(f"adapted weights have other shapes than this backbone for {wrong[:3]}")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)


class L2Normalized(nn.Module):
    """(N, D) features -> the same, unit length: a fine-tuned global spec's output."""

    def __init__(self, trunk: nn.Module) -> None:
        super().__init__()
        self.trunk = trunk

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.trunk(x), dim=-1)
