"""Bad and unusual-but-valid frames, shared by the decode unit tests and the fault tests.

Each bad frame names the dead-letter reason the worker must give it (the
reasons are listed in worker/decode.py). The limits used with this corpus are
``CORPUS_LIMITS``: a message over ``max_bytes`` is "message-too-large".
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image

from worker.decode import DecodeLimits

CORPUS_LIMITS = DecodeLimits(
    max_bytes=300_000, min_side=32, max_pixels=40_000_000, max_decode_bytes=128 * 1024 * 1024
)
SCRIPT = "<script>alert(document.cookie)</script>"


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes
    content_type: str  # the content-type header ("" = none sent)
    reason: str = ""  # expected dead-letter reason; "" = valid, must decode
    mode: str = ""  # PIL mode of the encoded image (valid samples)


def _encode(image: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _rgb(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` RGB pixels (a decompression bomb's header)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width * 3 + 1) * 2)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def png_16_bit(width: int, height: int, colour: int = 0) -> bytes:
    """A real 16-bit PNG of zeros, built row by row: grayscale (colour 0; 6300x6300: 77 kB, 79 MB decoded,
    265 MiB on the way to RGB), RGB (2) or RGBA (6)."""
    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    squeeze = zlib.compressobj(9)
    row = b"\0" * (1 + width * 2 * {0: 1, 2: 3, 4: 2, 6: 4}[colour])
    rows = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b"")


def bad_samples() -> list[Sample]:
    jpeg = _encode(_rgb(1), "JPEG", quality=90)
    png = _encode(_rgb(2), "PNG")
    big = _encode(_rgb(3, (400, 300)), "PNG")  # random pixels do not compress: ~360 kB
    assert len(big) > CORPUS_LIMITS.max_bytes
    return [
        Sample("random-bytes", np.random.default_rng(4).bytes(4000), "image/jpeg", "undecodable"),
        Sample("text", b"this is not an image at all", "", "undecodable"),
        Sample("zero-bytes", b"", "image/png", "empty-value"),
        Sample("truncated-jpeg", jpeg[: len(jpeg) // 2], "image/jpeg", "truncated"),
        Sample("truncated-png", png[: len(png) // 2], "image/png", "truncated"),
        Sample("png-header-bomb-30000", png_claiming(30000, 30000), "image/png", "image-too-large"),
        # 48 M pixels of zeros: ~50 kB compressed, 144 MB as RGB if anyone decoded it
        Sample("png-compressed-bomb", _encode(Image.new("L", (8000, 6000)), "PNG"), "image/png", "image-too-large"),
        Sample("over-max-bytes", big, "image/png", "message-too-large"),
        Sample("too-small", _encode(_rgb(5, (16, 16)), "PNG"), "image/png", "image-too-small"),
        Sample("thin", _encode(_rgb(6, (640, 8)), "JPEG"), "image/jpeg", "image-too-small"),
        Sample("gif-declared", _encode(_rgb(7), "GIF"), "image/gif", "unsupported-content-type"),
        Sample("png-declared-as-text", png, "text/plain", "unsupported-content-type"),
        Sample("bmp-undeclared", _encode(_rgb(8), "BMP"), "", "unsupported-content-type"),
        # 77 kB that decode to 79 MB (and 278 MB on the way to RGB): under max_pixels, over the memory limit
        Sample("png-16-bit-bomb", png_16_bit(6300, 6300), "image/png", "image-too-large"),
        # response splitting: the part before ";" is a valid type, what follows would become HTML
        Sample(
            "content-type-crlf",
            png,
            f"image/jpeg;\r\nContent-Type: text/html\r\n\r\n{SCRIPT}",
            "malformed-header",
        ),
        Sample("content-type-nul", png, "image/png\x00", "malformed-header"),
        Sample("content-type-c1", png, "image/png;\x85x=1", "malformed-header"),  # NEL, a C1 line break
    ]


def valid_samples() -> list[Sample]:
    rgb = _rgb(10)
    gray16 = np.random.default_rng(11).integers(0, 65535, (72, 96)).astype(np.uint16)
    return [
        Sample("grayscale-jpeg", _encode(rgb.convert("L"), "JPEG"), "image/jpeg", mode="L"),
        Sample("cmyk-jpeg", _encode(rgb.convert("CMYK"), "JPEG"), "image/jpeg", mode="CMYK"),
        Sample("progressive-jpeg", _encode(rgb, "JPEG", progressive=True), "image/jpeg", mode="RGB"),
        Sample("png-16-bit", _encode(Image.fromarray(gray16), "PNG"), "image/png", mode="I;16"),
        Sample("rgba-png", _encode(rgb.convert("RGBA"), "PNG"), "image/png", mode="RGBA"),
        Sample("gray-alpha-png", _encode(rgb.convert("LA"), "PNG"), "image/png", mode="LA"),
        Sample("palette-png", _encode(rgb.convert("P"), "PNG"), "image/png", mode="P"),
        Sample("palette-transparent-png", _encode(rgb.convert("P"), "PNG", transparency=0), "image/png", mode="P"),
        Sample("bilevel-png", _encode(rgb.convert("1"), "PNG"), "image/png", mode="1"),
        Sample("no-content-type", _encode(rgb, "PNG"), "", mode="RGB"),
        Sample("content-type-params", _encode(rgb, "JPEG"), "Image/JPEG; q=0.9", mode="RGB"),
    ]


@dataclass(frozen=True)
class HeaderSample:
    """A valid image whose headers are hostile: ``headers`` replace (or add to) a well-formed frame's."""

    name: str
    headers: dict[str, bytes]
    reason: str = (
        ""  # expected dead-letter reason; "" = scored (an absurd capture time is replaced, not refused)
    )


def hostile_headers() -> list[HeaderSample]:
    crlf = b"\r\nSet-Cookie: reviewer=mallory\r\n\r\n" + SCRIPT.encode()
    return [
        HeaderSample("frame-id-crlf", {"fw-frame-id": b"f1" + crlf}, "malformed-header"),
        HeaderSample("source-escape-sequence", {"fw-source": b"cam\x1b[2J\x1b[31mOK"}, "malformed-header"),
        HeaderSample("origin-crlf", {"fw-origin": b"a.png" + crlf}, "malformed-header"),
        HeaderSample("origin-del", {"fw-origin": b"a\x7f.png"}, "malformed-header"),
        HeaderSample("origin-line-separator", {"fw-origin": "a\u2028b.png".encode()}, "malformed-header"),
        HeaderSample(
            "content-type-too-long", {"content-type": b"image/png;" + b"x" * 300}, "malformed-header"
        ),
        HeaderSample("seq-400-digits", {"fw-seq": b"9" * 400}, "malformed-header"),
        HeaderSample("seq-over-int64", {"fw-seq": str(2**63).encode()}, "malformed-header"),
        HeaderSample("seq-underscores", {"fw-seq": b"1_000"}, "malformed-header"),
        HeaderSample("seq-spaces", {"fw-seq": b" 7 "}, "malformed-header"),
        HeaderSample("schema-negative", {"fw-schema": b"-1"}, "malformed-header"),
        HeaderSample("capture-time-inf", {"fw-capture-time": b"1e999"}, "malformed-header"),
        HeaderSample("capture-time-infinity", {"fw-capture-time": b"Infinity"}, "malformed-header"),
        HeaderSample("capture-time-nan", {"fw-capture-time": b"nan"}, "malformed-header"),
        HeaderSample("capture-time-400-digits", {"fw-capture-time": b"1" * 400}, "malformed-header"),
        # scored, with the capture time replaced by the message timestamp (or the reader's clock)
        HeaderSample("capture-time-1e300", {"fw-capture-time": b"1e300"}),
        HeaderSample("capture-time-minus-1e300", {"fw-capture-time": b"-1e300"}),
        HeaderSample("capture-time-zero", {"fw-capture-time": b"0"}),
        HeaderSample("capture-time-year-2100", {"fw-capture-time": b"4102444800"}),
    ]


def with_headers(headers: list[tuple[str, bytes]], replace: dict[str, bytes]) -> list[tuple[str, bytes]]:
    """``headers`` with the values of ``replace`` put in (in place, or added at the end)."""
    kept = [(k, replace.get(k, v)) for k, v in headers]
    return kept + [(k, v) for k, v in replace.items() if k not in dict(headers)]
