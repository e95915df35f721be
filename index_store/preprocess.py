"""The one preprocessing path shared by index fitting and the worker: image -> normalised tensor.

DN2 preprocessing: resize the shorter side to ``spec.resize`` (bilinear),
center-crop ``spec.crop``, normalise with the spec's mean/std. A JPEG is
decoded at a reduced DCT scale (PIL's draft mode: 1/2, 1/4 or 1/8), the
smallest scale whose shorter side is not below ``spec.resize``; libjpeg then
skips most of the inverse DCT work, so a 1280x720 frame for a 256 resize is
decoded at 640x360, about twice as fast. Fitting and the worker both decode
through :func:`reduce_on_load`, so an image gets the same embedding (and the
same score) whichever of them decoded it.

The CUDA path (:func:`gpu_batch`) decodes a batch of JPEGs on the device with
nvJPEG and does the resize, crop and normalisation there as tensor ops.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from index_store.spec import EmbedderSpec

DRAFT_FORMATS = ("JPEG", "MPO")  # MPO: a JPEG with a preview image; its first image is a JPEG


def draft_request(size: tuple[int, int], resize: int) -> tuple[int, int]:
    """The size to ask PIL's draft mode for: the image scaled so its shorter side is ``resize``.

    PIL picks the largest DCT reduction whose result is still at least this
    size, i.e. the smallest decoded image not below the resize.
    """
    width, height = size
    scale = min(1.0, resize / max(1, min(width, height)))
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def reduce_on_load(image: Image.Image, resize: int) -> Image.Image:
    """Ask a not-yet-loaded JPEG to decode at reduced scale (no-op for other formats). Returns ``image``."""
    if image.format in DRAFT_FORMATS and resize > 0:
        image.draft("RGB", draft_request(image.size, resize))
    return image


def open_rgb(path: str | os.PathLike[str], resize: int) -> Image.Image:
    """An image file as RGB, JPEGs decoded at the reduced scale (the fitting side of the shared path)."""
    with Image.open(Path(path)) as im:
        reduce_on_load(im, resize)
        return im.convert("RGB")


def to_tensor(image: Image.Image, spec: EmbedderSpec) -> torch.Tensor:
    """One PIL image -> (3, crop, crop) normalised float32 tensor."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    image = TF.resize(image, spec.resize, interpolation=TF.InterpolationMode.BILINEAR)
    image = TF.center_crop(image, [spec.crop, spec.crop])
    # Normalised in numpy, not torch: this runs in the worker's decode threads, and torch would
    # split each of these small element-wise ops over its intra-op (OpenMP) threads: a team per
    # decode thread, spinning against the embed stage's team for the same cores. Same float32
    # operations in the same order, so the same values.
    x = np.asarray(image, dtype=np.float32) / np.float32(255.0)
    x -= np.asarray(spec.mean, dtype=np.float32)
    x /= np.asarray(spec.std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


def gpu_batch(
    jpegs: Sequence[bytes], spec: EmbedderSpec, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """JPEG bytes -> (N, 3, crop, crop) normalised batch on ``device`` (CUDA), channels-last, in ``dtype``.

    nvJPEG decodes the whole list in one call; each image is then resized
    (bilinear, antialiased like PIL), center-cropped and normalised on the
    device. The byte buffers are staged in pinned memory.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8).pin_memory() for b in jpegs]
    decoded = decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    out = []
    for img in decoded:
        x = img.unsqueeze(0).float().div_(255.0)
        h, w = x.shape[-2:]
        scale = spec.resize / min(h, w)
        size = [max(spec.crop, round(h * scale)), max(spec.crop, round(w * scale))]
        x = torch.nn.functional.interpolate(
            x, size=size, mode="bilinear", antialias=True, align_corners=False
        )
        out.append(TF.center_crop(x, [spec.crop, spec.crop]))
    batch = (torch.cat(out) - mean) / std
    return batch.to(dtype=dtype).contiguous(memory_format=torch.channels_last)
