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
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from index_store.preprocess import DraftSide, reduce_on_load
from wire.errors import FrameDecodeError

ACCEPTED_TYPES = {"image/jpeg", "image/jpg", "image/png", ""}
FORMATS = {"JPEG", "PNG", "MPO"}  # MPO: a JPEG with an MPF preview (phones, stereo cameras): its first image


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = 20 * 1024 * 1024
    min_side: int = 32
    max_pixels: int = 40_000_000  # ~ 8K x 5K


def decode_image(
    data: bytes, content_type: str = "", limits: DecodeLimits = DecodeLimits(), resize: DraftSide = 0
) -> Image.Image:
    """Decode a JPEG or PNG frame into an RGB image, or raise FrameDecodeError(reason, message).

    With ``resize`` > 0 (or a function of the image's size giving it, ``EmbedderSpec.draft_side``) a JPEG
    is decoded at the smallest DCT scale whose shorter side is not below it
    (index_store.preprocess.reduce_on_load, the path index fitting uses too).
    """
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
        image.info["full_size"] = (width, height)  # the size as sent, whatever scale it is decoded at
        reduce_on_load(image, resize)
        image.load()
    except OSError as e:
        reason = "truncated" if "truncated" in str(e).lower() else "undecodable"
        raise FrameDecodeError(reason, f"image data is damaged: {e}") from e
    except (ValueError, SyntaxError, struct.error, EOFError, Image.DecompressionBombError) as e:
        raise FrameDecodeError("undecodable", f"image data is damaged: {e}") from e
    if image.format == "PNG" and not png_stream_complete(data, width, height, image.mode, image.info):
        raise FrameDecodeError("truncated", "PNG image data ends before the last row (the zlib stream is short)")
    return to_rgb(image)


_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type -> samples per pixel
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def png_stream_complete(data: bytes, width: int, height: int, mode: str, info: dict) -> bool:  # type: ignore[type-arg]
    """True when the PNG's IDAT stream holds every row. PIL leaves missing rows black without a word
    when the zlib stream ends cleanly but early, which would score as a giant anomaly."""
    pos, idat, header = 8, [], b""
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
        pos += 12 + length
    if len(header) < 13:
        return False
    depth, colour, interlace = header[8], header[9], header[12]
    bits = depth * _PNG_CHANNELS.get(colour, 4)
    row = lambda w: 1 + (w * bits + 7) // 8 if w else 0  # noqa: E731 - filter byte + packed samples
    if interlace:
        expected = sum(row((width - x0 + dx - 1) // dx) * ((height - y0 + dy - 1) // dy)
                       for x0, y0, dx, dy in _ADAM7 if width > x0 and height > y0)  # fmt: skip
    else:
        expected = row(width) * height
    inflater = zlib.decompressobj()
    got = 0
    try:
        for chunk in idat:  # the pixel-count guard has already bounded what this inflates
            got += len(inflater.decompress(chunk))
    except zlib.error as e:
        raise FrameDecodeError("undecodable", f"PNG image data is damaged: {e}") from e
    return got >= expected


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
