"""Image bytes -> RGB PIL image, with the checks that turn bad input into dead letters.

Reasons (dead-letter header and metric label): empty-value, message-too-large,
unsupported-content-type, undecodable, truncated, image-too-small,
image-too-large (decompression-bomb guard: pixel count is checked from the
header before any pixel is decoded).
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from wire.errors import FrameDecodeError

ACCEPTED_TYPES = {"image/jpeg", "image/jpg", "image/png", ""}
FORMATS = {"JPEG", "PNG"}


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = 20 * 1024 * 1024
    min_side: int = 32
    max_pixels: int = 40_000_000  # ~ 8K x 5K


def decode_image(data: bytes, content_type: str = "", limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """Decode a JPEG or PNG frame into an RGB image, or raise FrameDecodeError(reason, message)."""
    if not data:
        raise FrameDecodeError("empty-value", "frame has no bytes")
    if len(data) > limits.max_bytes:
        raise FrameDecodeError("message-too-large", f"{len(data)} bytes > limit {limits.max_bytes}")
    ctype = content_type.lower().split(";")[0].strip()
    if ctype not in ACCEPTED_TYPES:
        raise FrameDecodeError("unsupported-content-type", f"content type {content_type!r} is not JPEG or PNG")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise FrameDecodeError("image-too-large", str(e)) from e
    except UnidentifiedImageError as e:  # its message holds a BytesIO repr, useless in a dead letter
        raise FrameDecodeError("undecodable", f"not a readable image: no known image signature in {len(data)} bytes") from e
    except (OSError, ValueError, SyntaxError, struct.error) as e:
        reason = "truncated" if "truncated" in str(e).lower() else "undecodable"
        raise FrameDecodeError(reason, f"not a readable image: {e}") from e
    if image.format not in FORMATS:
        raise FrameDecodeError("unsupported-content-type", f"image format {image.format} is not JPEG or PNG")
    width, height = image.size
    if width * height > limits.max_pixels:
        raise FrameDecodeError("image-too-large", f"{width}x{height} exceeds {limits.max_pixels} pixels")
    if min(width, height) < limits.min_side:
        raise FrameDecodeError("image-too-small", f"{width}x{height} is below {limits.min_side} pixels a side")
    try:
        image.load()
    except OSError as e:
        reason = "truncated" if "truncated" in str(e).lower() else "undecodable"
        raise FrameDecodeError(reason, f"image data is damaged: {e}") from e
    except (ValueError, SyntaxError, struct.error, EOFError, Image.DecompressionBombError) as e:
        raise FrameDecodeError("undecodable", f"image data is damaged: {e}") from e
    return to_rgb(image)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (grayscale, 16-bit, CMYK, palette, alpha) -> 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        image = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    elif image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")
