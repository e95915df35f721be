"""Image bytes -> RGB PIL image, with the checks that turn bad input into dead letters.

Reasons (dead-letter header and metric label): empty-value, message-too-large,
unsupported-content-type, malformed-header (a content type holding control
characters), undecodable, truncated, image-too-small, image-too-large
(decompression-bomb guard: the pixel count and the memory the decode will
hold are checked from the header before any pixel is decoded).

Memory: a frame's cost (``decode_cost``) is the bytes its pixels take as PIL
holds them at the scale they are decoded at, plus the 8-bit copies made to
reach RGB. A frame whose cost is over ``DecodeLimits.max_decode_bytes`` is
refused; with a ``Lease`` (worker/decode_budget.py) the cost is also taken
from the worker's shared budget before decoding, so many frames at once
cannot add up to more. High-bit-depth images (16-bit PNG: I;16, I, F) are
reduced to 8 bits in strips of rows, never through a float64 copy of the
whole image.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass
from typing import Optional

import numpy as np
from PIL import Image, UnidentifiedImageError

from index_store.preprocess import DraftSide, reduce_on_load
from wire.errors import FrameDecodeError
from wire.fields import has_control
from worker.decode_budget import MIB, Lease

ACCEPTED_TYPES = {"image/jpeg", "image/jpg", "image/png", ""}
FORMATS = {"JPEG", "PNG", "MPO"}  # MPO: a JPEG with an MPF preview (phones, stereo cameras): its first image


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = 20 * 1024 * 1024
    min_side: int = 32
    max_pixels: int = 40_000_000  # ~ 8K x 5K
    # Memory one frame's decode may hold (decode_cost): an 8-bit RGB frame of max_pixels costs 160 MB,
    # a 16-bit grayscale one 280 MB. A frame over it is refused before any pixel is decoded.
    max_decode_bytes: int = 320 * MIB


def decode_image(
    data: bytes,
    content_type: str = "",
    limits: DecodeLimits = DecodeLimits(),
    resize: DraftSide = 0,
    lease: Optional[Lease] = None,
) -> Image.Image:
    """Decode a JPEG or PNG frame into an RGB image, or raise FrameDecodeError(reason, message).

    With ``resize`` > 0 (or a function of the image's size giving it, ``EmbedderSpec.draft_side``) a JPEG
    is decoded at the smallest DCT scale whose shorter side is not below it
    (index_store.preprocess.reduce_on_load, the path index fitting uses too).
    With ``lease``, the frame's cost is taken from its budget before any pixel
    is decoded (this may wait); the caller gives it back when done with the image.
    """
    if not data:
        raise FrameDecodeError("empty-value", "frame has no bytes")
    if len(data) > limits.max_bytes:
        raise FrameDecodeError("message-too-large", f"{len(data)} bytes > limit {limits.max_bytes}")
    if has_control(content_type):
        raise FrameDecodeError(
            "malformed-header", f"content type {content_type[:80]!r} holds control characters"
        )
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
        _reserve(image, limits, lease)
        image.load()
    except OSError as e:
        reason = "truncated" if "truncated" in str(e).lower() else "undecodable"
        raise FrameDecodeError(reason, f"image data is damaged: {e}") from e
    except (ValueError, SyntaxError, struct.error, EOFError, Image.DecompressionBombError) as e:
        raise FrameDecodeError("undecodable", f"image data is damaged: {e}") from e
    if image.format == "PNG" and not png_stream_complete(data, width, height, image.mode, image.info):
        raise FrameDecodeError("truncated", "PNG image data ends before the last row (the zlib stream is short)")
    return to_rgb(image)


_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_PIXEL_BYTES = {
    "1": 1,
    "L": 1,
    "P": 1,
    "I;16": 2,
    "I;16B": 2,
    "I;16L": 2,
    "I;16N": 2,
}  # PIL: 4 for every other mode


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)


def decode_cost(image: Image.Image) -> int:
    """Bytes decoding ``image`` (opened, not loaded) will hold at its peak, up to the RGB result.

    Its pixels as PIL holds them (1 byte per pixel for L/P/1, 2 for 16-bit
    gray, 4 for every other mode, RGB included), plus what ``to_rgb`` makes:
    an 8-bit gray copy of a high-bit-depth image, an RGBA copy of a
    transparent one, and the RGB image itself.
    """
    width, height = image.size
    pixels = width * height
    held = pixels * _PIXEL_BYTES.get(image.mode, 4)
    if image.mode == "RGB":
        return held
    if image.mode in _HIGH_DEPTH:
        return held + pixels + 4 * pixels
    if _has_alpha(image) and image.mode != "RGBA":
        return held + 8 * pixels
    return held + 4 * pixels


def _reserve(image: Image.Image, limits: DecodeLimits, lease: Optional[Lease]) -> None:
    cost = decode_cost(image)
    what = f"{image.size[0]}x{image.size[1]} {image.mode}"
    if cost > limits.max_decode_bytes:
        raise FrameDecodeError("image-too-large", f"{what} needs {cost / MIB:.0f} MiB to decode, over the "
                               f"limit of {limits.max_decode_bytes / MIB:.0f} MiB per frame")  # fmt: skip
    if lease is not None:
        lease.take(cost, what)


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
    if image.mode in _HIGH_DEPTH:
        image = to_8_bit(image)
    elif _has_alpha(image):
        rgba = image if image.mode == "RGBA" else image.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba)  # over white, as alpha_composite would, without two more RGBA copies
        return flat
    return image.convert("RGB")


_STRIP_PIXELS = 1 << 20  # rows converted at once: ~1 M pixels, a few MB of temporaries whatever the image


def to_8_bit(image: Image.Image) -> Image.Image:
    """A 16-bit (I;16*) or 32-bit (I, F) grayscale image as 8-bit L, scaled, not clipped.

    16-bit: v * 255 / 65535 rounded down (v // 257). I and F: scaled so
    the image's maximum is 255 (negatives and NaN are 0). Converted in strips of
    rows, so the temporaries stay a few MB even for a 40-megapixel image.
    """
    width, height = image.size
    out = np.empty((height, width), dtype=np.uint8)
    sixteen = image.mode.startswith("I;16")
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    strips = [(0, y, width, min(height, y + rows)) for y in range(0, height, rows)]
    top = 65535.0 if sixteen else max([1.0] + [_finite_max(np.asarray(image.crop(box))) for box in strips])
    for box in strips:
        y = box[1]
        strip = np.asarray(image.crop(box))
        if sixteen:
            np.floor_divide(strip, 257, out=out[y : y + rows], casting="unsafe")
        else:
            scaled = np.nan_to_num(strip.astype(np.float32) * np.float32(255.0 / top), nan=0.0)
            np.clip(scaled, 0, 255, out=scaled)
            out[y : y + rows] = scaled
    return Image.fromarray(out)  # 2-D uint8: mode L


def _finite_max(strip: np.ndarray) -> float:
    finite = strip[np.isfinite(strip)] if strip.dtype.kind == "f" else strip
    return float(finite.max()) if finite.size else 0.0
