"""JPEG frames are decoded at the smallest DCT scale not below the spec's resize; other formats in full."""

from __future__ import annotations

import io

from PIL import Image

from worker.decode import decode_image


def encoded(fmt: str, size: tuple[int, int] = (1280, 720)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 120, 150)).save(buf, fmt)
    return buf.getvalue()


def test_a_720p_jpeg_is_decoded_at_half_scale_for_a_256_resize():
    assert decode_image(encoded("JPEG"), resize=256).size == (640, 360)


def test_the_scale_never_goes_below_the_resize():
    assert decode_image(encoded("JPEG"), resize=64).size == (160, 90)  # 1/8: shorter side 90 >= 64
    assert decode_image(encoded("JPEG"), resize=400).size == (1280, 720)  # 1/2 would give 360 < 400


def test_without_a_resize_or_for_png_the_full_image_is_decoded():
    assert decode_image(encoded("JPEG")).size == (1280, 720)
    assert decode_image(encoded("PNG"), resize=64).size == (1280, 720)
