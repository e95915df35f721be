"""The one preprocessing path shared by index fitting and the worker: image -> normalised tensors.

Where the model looks is the spec's geometry (index_store/geometry.py): the
whole frame (or each of its tiles) resized to the index's input shape (full
view), or DN2's resize-the-shorter-side-to ``spec.resize`` and center-crop
``spec.crop`` (center view); then the spec's mean/std normalisation, and the
ignore zones painted with the mean (zero once normalised).
A JPEG is decoded at a reduced DCT scale (PIL's draft mode: 1/2, 1/4 or 1/8),
the smallest scale that still gives the model input its full resolution
(``EmbedderSpec.draft_side``); libjpeg then skips most of the inverse DCT
work, so a 1280x720 frame for a 224-pixel input is decoded at 640x360. Fitting and the worker both decode
through :func:`reduce_on_load`, so an image gets the same embedding (and the
same score) whichever of them decoded it.

The CUDA path (:func:`gpu_batch`) decodes a batch of JPEGs on the device with
nvJPEG and does the same boxes, resize and normalisation there as tensor ops.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import functional as TF

from index_store import geometry
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


DraftSide = Union[int, Callable[[tuple[int, int]], int]]


def reduce_on_load(image: Image.Image, resize: DraftSide) -> Image.Image:
    """Ask a not-yet-loaded JPEG to decode at reduced scale (no-op for other formats). Returns ``image``.

    ``resize``: the shorter side to keep, or a function of the image's size giving it
    (``EmbedderSpec.draft_side``). The size as sent is kept in ``image.info["full_size"]``."""
    image.info.setdefault("full_size", image.size)
    side = resize(image.size) if callable(resize) else resize
    if image.format in DRAFT_FORMATS and side > 0:
        image.draft("RGB", draft_request(image.size, side))
    return image


def open_rgb(path: str | os.PathLike[str], resize: DraftSide) -> Image.Image:
    """An image file as RGB, JPEGs decoded at the reduced scale (the fitting side of the shared path)."""
    with Image.open(Path(path)) as im:
        reduce_on_load(im, resize)
        full_size = im.info["full_size"]
        rgb = im.convert("RGB")
        rgb.info["full_size"] = full_size
        return rgb


def full_size(image: Image.Image) -> tuple[int, int]:
    """(width, height) of the image as sent, whatever scale it was decoded at."""
    return tuple(image.info.get("full_size", image.size))  # type: ignore[return-value]


def to_tensors(image: Image.Image, spec: EmbedderSpec) -> torch.Tensor:
    """One PIL image -> (T, 3, h, w) normalised float32 model inputs, one per tile (T = 1 without tiles)."""
    if not spec.is_full:
        return to_tensor(image, spec).unsqueeze(0)
    if image.mode != "RGB":
        image = image.convert("RGB")
    fw, fh = full_size(image)
    spec = spec.resolved(fw, fh)
    h, w = spec.model_shape
    sx, sy = image.width / fw, image.height / fh
    out = []
    for box in spec.boxes(fw, fh):
        x0, y0, x1, y1 = box
        part = image.resize((w, h), Image.BILINEAR, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy))
        x = _normalised(part, spec)
        for r0, c0, r1, c1 in geometry.zone_pixels(spec.zones, box, (h, w), fw, fh):
            x[:, r0:r1, c0:c1] = 0.0  # the mean colour once normalised: what changes there is never seen
        out.append(x)
    return torch.stack(out)


def to_tensor(image: Image.Image, spec: EmbedderSpec) -> torch.Tensor:
    """One PIL image -> (3, crop, crop) normalised float32 tensor: DN2's center view."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    image = TF.resize(image, spec.resize, interpolation=TF.InterpolationMode.BILINEAR)
    image = TF.center_crop(image, [spec.crop, spec.crop])
    return _normalised(image, spec)


def _normalised(image: Image.Image, spec: EmbedderSpec) -> torch.Tensor:
    """An RGB image -> (3, h, w) float32, normalised with the spec's mean and std."""
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
    """JPEG bytes -> (N*T, 3, h, w) normalised batch on ``device`` (CUDA), channels-last, in ``dtype``.

    nvJPEG decodes the whole list in one call; each image is then cut to the
    spec's boxes (the whole frame, its tiles, or the center crop), resized
    (bilinear, antialiased like PIL) and normalised on the device, with the
    ignore zones painted as on the CPU path. The byte buffers are staged
    in pinned memory.
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
        if not spec.is_full:
            scale = spec.resize / min(h, w)
            size = [max(spec.crop, round(h * scale)), max(spec.crop, round(w * scale))]
            x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
            out.append((TF.center_crop(x, [spec.crop, spec.crop]) - mean) / std)
            continue
        fspec = spec.resolved(w, h)
        mh, mw = fspec.model_shape
        for box in fspec.boxes(w, h):
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            part = torch.nn.functional.interpolate(
                x[..., y0:y1, x0:x1], size=[mh, mw], mode="bilinear", antialias=True, align_corners=False
            )
            part = (part - mean) / std
            for r0, c0, r1, c1 in geometry.zone_pixels(spec.zones, box, (mh, mw), w, h):
                part[..., r0:r1, c0:c1] = 0.0
            out.append(part)
    return torch.cat(out).to(dtype=dtype).contiguous(memory_format=torch.channels_last)
