"""What the worker's stages run on a frame: ``prepare`` (decode pool) and ``embed`` (the embed stage).

``prepare`` turns one frame's bytes into what ``embed`` takes, in a pool
thread (PIL releases the GIL while it decodes); it raises FrameDecodeError for
bad input, which becomes a dead letter. ``embed`` turns a batch of prepared
items into (N, D) float32 embeddings.

``ImageExtractor`` wraps an index_store Embedder. On CPU a frame is decoded
(JPEG at reduced DCT scale) and preprocessed to a tensor in the pool, the
same path index fitting takes. On CUDA a JPEG is only checked in the pool
(header, size limits) and its bytes are decoded with the rest of its batch on
the device (nvJPEG); PNG is decoded in the pool. ``NullExtractor`` does
neither (``framewatch bench``: the framework's own ceiling).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any, Optional, Protocol, Sequence

import numpy as np

from wire.errors import FrameDecodeError
from wire.records import FrameRecord
from worker.decode import DecodeLimits, decode_image
from worker.decode_budget import DecodeBudget

log = logging.getLogger(__name__)


class Extractor(Protocol):
    def prepare(self, record: FrameRecord) -> Any: ...

    def embed(self, prepared: Sequence[Any]) -> np.ndarray: ...


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` returns: the embed stage's input and the frame's (width, height) as sent."""

    data: Any
    size: tuple[int, int]


@dataclass(frozen=True)
class JpegBytes:
    """A checked JPEG left for the device to decode with its batch."""

    data: bytes


class ImageExtractor:
    def __init__(
        self, embedder: Any, limits: Optional[DecodeLimits] = None, budget: Optional[DecodeBudget] = None
    ) -> None:
        """``budget``: the memory all decodes share (worker/decode_budget.py); each frame holds its cost
        until preprocessed."""
        self.embedder = embedder
        self.limits = limits or DecodeLimits()
        self.budget = budget or DecodeBudget(max(self.limits.max_decode_bytes, 1))
        self.spec = embedder.spec
        self.on_device = getattr(embedder, "device", None) is not None and embedder.device.type == "cuda"
        if not self.on_device and hasattr(embedder, "warm"):
            embedder.warm()  # OpenVINO compiles for the input shape now, not on the first frames

    def prepare(self, record: FrameRecord) -> Prepared:
        if self.on_device and _is_jpeg(record.image):
            size = _check_jpeg(record.image, record.content_type, self.limits)
            return Prepared(JpegBytes(record.image), size)
        with self.budget.lease() as lease:
            image = decode_image(
                record.image, record.content_type, self.limits, resize=self.spec.draft_side, lease=lease
            )
            return Prepared(self.embedder.preprocess(image), image.info.get("full_size", image.size))

    def embed(self, prepared: Sequence[Any]) -> np.ndarray:
        """A batch of prepared frames -> features, T model inputs (tiles) per frame."""
        import torch

        prepared = [p.data if isinstance(p, Prepared) else p for p in prepared]
        if not any(isinstance(p, JpegBytes) for p in prepared):
            return self.embedder.embed_tensor(torch.cat(list(prepared)))
        from index_store.preprocess import gpu_batch

        device, dtype, t = self.embedder.device, self.embedder.dtype, self.spec.n_tiles
        jpeg_rows = [i for i, p in enumerate(prepared) if isinstance(p, JpegBytes)]
        decoded = gpu_batch([prepared[i].data for i in jpeg_rows], self.spec, device, dtype)
        batch = torch.empty((len(prepared) * t, *decoded.shape[1:]), device=device, dtype=dtype)
        batch = batch.contiguous(memory_format=torch.channels_last)
        for j, i in enumerate(jpeg_rows):
            batch[i * t : (i + 1) * t] = decoded[j * t : (j + 1) * t]
        for i, p in enumerate(prepared):
            if not isinstance(p, JpegBytes):  # PNG, decoded in the pool
                batch[i * t : (i + 1) * t] = p.pin_memory().to(device, dtype=dtype, non_blocking=True)
        return self.embedder.embed_tensor(batch)


class NullExtractor:
    """No decode, no embedding: zeros of the index's dimension (to measure everything else). ``grid``: the
    (h, w) of each frame's features when the index holds a grid per frame (positional: regions, tiles)."""

    def __init__(self, dim: int, grid: tuple[int, ...] = ()) -> None:
        self.dim, self.grid = dim, tuple(grid)

    def prepare(self, record: FrameRecord) -> Any:
        return None

    def embed(self, prepared: Sequence[Any]) -> np.ndarray:
        return np.zeros((len(prepared), *self.grid, self.dim), dtype=np.float32)


class PilExtractor:
    """For an embedder that only embeds PIL images: frames decoded in full in the pool, embedded as images."""

    def __init__(
        self, embedder: Any, limits: Optional[DecodeLimits] = None, budget: Optional[DecodeBudget] = None
    ) -> None:
        self.embedder = embedder
        self.limits = limits or DecodeLimits()
        self.budget = budget

    def prepare(self, record: FrameRecord) -> Prepared:
        """The decoded image is kept whole until embedded, so only the decode itself holds the budget."""
        if self.budget is None:
            image = decode_image(record.image, record.content_type, self.limits)
        else:
            with self.budget.lease() as lease:
                image = decode_image(record.image, record.content_type, self.limits, lease=lease)
        return Prepared(image, image.size)

    def embed(self, prepared: Sequence[Any]) -> np.ndarray:
        return self.embedder.embed([p.data if isinstance(p, Prepared) else p for p in prepared])  # type: ignore[no-any-return]


def as_extractor(made: Any, limits: DecodeLimits, budget: Optional[DecodeBudget] = None) -> Extractor:
    """What an embedder factory made, as an Extractor: an index_store Embedder (preprocess, embed_tensor)
    is wrapped by ImageExtractor, anything else with ``embed(images)`` by PilExtractor."""
    if hasattr(made, "prepare") and hasattr(made, "embed"):
        return made  # type: ignore[no-any-return]
    if hasattr(made, "preprocess") and hasattr(made, "embed_tensor") and hasattr(made, "spec"):
        return ImageExtractor(made, limits, budget=budget)
    return PilExtractor(made, limits, budget)


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def _check_jpeg(data: bytes, content_type: str, limits: DecodeLimits) -> tuple[int, int]:
    """The checks decode_image makes before decoding pixels (size, type, pixel count), for the device path."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > limits.max_bytes:
        raise FrameDecodeError("message-too-large", f"{len(data)} bytes > limit {limits.max_bytes}")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise FrameDecodeError("undecodable", f"not a readable image: {e}") from e
    if width * height > limits.max_pixels:
        raise FrameDecodeError("image-too-large", f"{width}x{height} exceeds {limits.max_pixels} pixels")
    if width * height * 3 > limits.max_decode_bytes:  # nvJPEG: 3 bytes a pixel, in device memory
        raise FrameDecodeError("image-too-large", f"{width}x{height} needs {width * height * 3 >> 20} MiB to "
                               f"decode, over the limit of {limits.max_decode_bytes >> 20} MiB per frame")  # fmt: skip
    if min(width, height) < limits.min_side:
        raise FrameDecodeError(
            "image-too-small", f"{width}x{height} is below {limits.min_side} pixels a side"
        )
    ctype = content_type.lower().split(";")[0].strip()
    if ctype not in ("image/jpeg", "image/jpg", ""):
        raise FrameDecodeError(
            "unsupported-content-type", f"content type {content_type!r} is not JPEG or PNG"
        )
    return width, height
