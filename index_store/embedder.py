"""The embedder: PIL images -> (N, D) float32 features, as named by an EmbedderSpec.

DN2 preprocessing: resize the shorter side to ``spec.resize``, center-crop
``spec.crop``, the backbone's normalisation; the feature is the global-pool
output (global kind) or a grid of patch features (patch kind). Fitting,
evaluation and the worker all embed through this class, so a frame gets the
same features wherever it is embedded.
On CUDA it runs in half precision (fp16, or bf16 where supported) and
channels-last; on CPU in float32.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image

from index_store import adapted as adapted_weights
from index_store.backbones import build_backbone
from index_store.preprocess import to_tensor
from index_store.spec import EmbedderSpec

log = logging.getLogger(__name__)


def pick_device(requested: str = "auto") -> torch.device:
    """``auto`` = CUDA when present, else CPU; otherwise any torch device string."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


class Embedder:
    """Embeds images in batches of at most ``batch_size``.

    >>> emb = Embedder(EmbedderSpec("resnet18", "random:0"))  # doctest: +SKIP
    >>> emb.embed([Image.new("RGB", (320, 240))]).shape       # doctest: +SKIP
    (1, 512)
    """

    def __init__(
        self,
        spec: EmbedderSpec,
        device: str = "auto",
        precision: str = "auto",
        batch_size: int = 32,
        adapted: Optional[bytes] = None,
    ) -> None:
        """``adapted``: the safetensors blob of a fine-tuned spec, checked against ``spec.adapted_sha256``."""
        self.spec = spec
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.dtype = self._pick_dtype(precision)
        state = adapted_weights.decode(adapted, spec.adapted_sha256) if adapted is not None else None
        model = build_backbone(spec, state)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(self.device, dtype=self.dtype)

    @property
    def dim(self) -> int:
        return self.spec.dim

    def _pick_dtype(self, precision: str) -> torch.dtype:
        if precision == "auto":
            if self.device.type != "cuda":
                return torch.float32
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]

    def _empty(self) -> np.ndarray:
        return np.zeros((0, 0, 0, self.dim) if self.spec.is_patch else (0, self.dim), dtype=np.float32)

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB PIL image -> (3, crop, crop) normalised float32 tensor (index_store.preprocess, shared)."""
        return to_tensor(image, self.spec)

    @torch.inference_mode()
    def embed_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """(N, 3, crop, crop) preprocessed batch -> (N, D) float32 array; patch kind (N, h, w, D)."""
        out = []
        for start in range(0, batch.shape[0], self.batch_size):
            x = batch[start : start + self.batch_size]
            if self.device.type == "cuda":  # pinned host memory, copied while the last batch still runs
                x = x if x.is_cuda else x.pin_memory()
                x = x.to(self.device, dtype=self.dtype, non_blocking=True).contiguous(memory_format=torch.channels_last)
            else:
                x = x.to(self.device, dtype=self.dtype)
            feats = self.model(x).float().cpu()
            out.append(feats.permute(0, 2, 3, 1) if self.spec.is_patch else feats)
        if not out:
            return self._empty()
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """RGB PIL images of any size -> (N, D) float32 array; patch kind (N, h, w, D)."""
        if not images:
            return self._empty()
        return self.embed_tensor(torch.stack([self.preprocess(im) for im in images]))


def set_cpu_threads(n: Optional[int]) -> None:
    """Limit torch's intra-op threads (None leaves torch's default)."""
    if n:
        torch.set_num_threads(n)
