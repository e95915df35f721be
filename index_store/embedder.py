"""The embedder: PIL images -> (N, D) float32 features, as named by an EmbedderSpec.

DN2 preprocessing: resize the shorter side to ``spec.resize``, center-crop
``spec.crop``, ImageNet normalisation; the feature is the global-pool output.
On CUDA it runs in half precision (fp16, or bf16 where supported) and
channels-last; on CPU in float32.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from index_store.backbones import build_backbone
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
    ) -> None:
        self.spec = spec
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.dtype = self._pick_dtype(precision)
        model = build_backbone(spec)
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        self.model = model.to(self.device, dtype=self.dtype)
        self._mean = torch.tensor(spec.mean).view(3, 1, 1)
        self._std = torch.tensor(spec.std).view(3, 1, 1)

    @property
    def dim(self) -> int:
        return self.spec.dim

    def _pick_dtype(self, precision: str) -> torch.dtype:
        if precision == "auto":
            if self.device.type != "cuda":
                return torch.float32
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[precision]

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """One RGB PIL image -> (3, crop, crop) normalised float32 tensor."""
        if image.mode != "RGB":
            image = image.convert("RGB")
        image = TF.resize(image, self.spec.resize, interpolation=TF.InterpolationMode.BILINEAR)
        image = TF.center_crop(image, [self.spec.crop, self.spec.crop])
        x = TF.pil_to_tensor(image).float().div_(255.0)
        return (x - self._mean) / self._std

    @torch.inference_mode()
    def embed_tensor(self, batch: torch.Tensor) -> np.ndarray:
        """(N, 3, crop, crop) preprocessed batch -> (N, D) float32 array."""
        out = []
        for start in range(0, batch.shape[0], self.batch_size):
            x = batch[start : start + self.batch_size].to(self.device, dtype=self.dtype)
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            out.append(self.model(x).float().cpu())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return torch.cat(out).numpy().astype(np.float32, copy=False)

    def embed(self, images: Sequence[Image.Image]) -> np.ndarray:
        """RGB PIL images of any size -> (N, D) float32 array."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.embed_tensor(torch.stack([self.preprocess(im) for im in images]))


def set_cpu_threads(n: Optional[int]) -> None:
    """Limit torch's intra-op threads (None leaves torch's default)."""
    if n:
        torch.set_num_threads(n)
