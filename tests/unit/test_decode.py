"""worker/decode.py on the bad/unusual frame corpus, without services."""

from __future__ import annotations

import io
import resource

import numpy as np
import pytest
from PIL import Image

from tests.frame_corpus import CORPUS_LIMITS, bad_samples, png_16_bit, png_claiming, valid_samples
from wire.errors import FrameDecodeError
from worker.decode import DecodeLimits, decode_image, to_rgb
from worker.decode_budget import DecodeBudget

BAD = bad_samples()
VALID = valid_samples()


@pytest.mark.parametrize("sample", BAD, ids=[s.name for s in BAD])
def test_bad_frame_raises_its_reason(sample):
    with pytest.raises(FrameDecodeError) as err:
        decode_image(sample.data, sample.content_type, CORPUS_LIMITS)
    assert err.value.reason == sample.reason, err.value.message
    assert err.value.message  # a human-readable detail for the dead letter


@pytest.mark.parametrize("sample", VALID, ids=[s.name for s in VALID])
def test_unusual_valid_frame_becomes_8_bit_rgb(sample):
    assert Image.open(io.BytesIO(sample.data)).mode == sample.mode  # the corpus holds what it says
    image = decode_image(sample.data, sample.content_type, CORPUS_LIMITS)
    assert image.mode == "RGB"
    assert image.size == (96, 72)
    assert np.asarray(image).dtype == np.uint8


def test_every_documented_reason_is_covered_by_the_corpus():
    import worker.decode

    documented = {
        "empty-value", "message-too-large", "unsupported-content-type", "undecodable",
        "truncated", "image-too-small", "image-too-large", "malformed-header",
    }  # fmt: skip
    for reason in documented:
        assert reason in (worker.decode.__doc__ or "")
    assert {s.reason for s in BAD} == documented


def test_bomb_is_refused_from_its_header_without_decoding_pixels():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(3):
        with pytest.raises(FrameDecodeError, match="image-too-large"):
            decode_image(png_claiming(30000, 30000))
    # 30000 x 30000 RGB would be 2.7 GB; refusing from the header allocates next to nothing
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 * 1024  # KiB


def test_pixel_limit_is_configurable():
    data = png_claiming(2000, 2000)
    with pytest.raises(FrameDecodeError, match="image-too-large"):
        decode_image(data, "image/png", DecodeLimits(max_pixels=1_000_000))


def test_16_bit_is_scaled_not_clipped():
    arr = np.full((40, 40), 65535, dtype=np.uint16)
    arr[:20] = 0
    image = to_rgb(Image.fromarray(arr))
    out = np.asarray(image)
    assert out[:20].max() == 0 and out[20:].min() == 255


def test_transparent_pixels_become_white():
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    assert np.asarray(to_rgb(rgba)).min() == 255


def test_cmyk_white_stays_white():
    cmyk = Image.new("CMYK", (40, 40), (0, 0, 0, 0))
    assert np.asarray(to_rgb(cmyk)).min() == 255


def test_detail_does_not_leak_object_reprs():
    with pytest.raises(FrameDecodeError) as err:
        decode_image(b"not an image", "")
    assert "object at 0x" not in err.value.message


def test_damaged_bytes_only_ever_raise_frame_decode_error():
    """Random byte flips and cuts of valid frames: decoded, or a FrameDecodeError; nothing else escapes."""
    rng = np.random.default_rng(0)
    seeds = [s.data for s in VALID]
    reasons = set()
    for i in range(600):
        data = bytearray(seeds[i % len(seeds)])
        for _ in range(int(rng.integers(1, 8))):
            data[int(rng.integers(0, len(data)))] = int(rng.integers(0, 256))
        if rng.random() < 0.3:
            data = data[: int(rng.integers(1, len(data)))]
        try:
            assert decode_image(bytes(data)).mode == "RGB"
        except FrameDecodeError as e:
            reasons.add(e.reason)
    assert reasons <= {"undecodable", "truncated", "image-too-small", "image-too-large", "unsupported-content-type"}


def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    import struct

    pos, out = 8, []
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]))
        pos += 12 + n
    return out


def test_png_whose_zlib_stream_ends_cleanly_but_early_is_truncated_not_a_black_frame():
    import struct
    import zlib

    from tests.conftest import png_bytes

    data = png_bytes(3, size=(120, 90))
    chunks = _png_chunks(data)
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = next(body for kind, body in chunks if kind == b"IHDR")
    short = data[:8] + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw[: len(raw) // 2])) + chunk(b"IEND", b"")
    with pytest.raises(FrameDecodeError) as e:
        decode_image(short, "image/png")
    assert e.value.reason == "truncated"
    assert decode_image(data, "image/png").size == (120, 90)  # the whole stream still decodes


def test_jpeg_with_an_mpf_preview_is_scored_from_its_primary_image():
    import io

    import numpy as np
    from PIL import Image

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, format="MPO", save_all=True, append_images=[img.resize((40, 30))])
    decoded = decode_image(buf.getvalue(), "image/jpeg")
    assert decoded.size == (120, 90) and decoded.mode == "RGB"


def _peak_growth_mib(run) -> float:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


def test_a_16_bit_6300_square_png_decodes_without_float64_copies():
    data = png_16_bit(6300, 6300)  # 77 kB
    assert len(data) < 100_000
    out = []
    # the decode's own cost: 79 MB of 16-bit pixels + 40 MB of 8-bit + 159 MB of RGB = 265 MiB (was ~1 GB)
    growth = _peak_growth_mib(
        lambda: out.append(decode_image(data, "image/png", DecodeLimits(max_decode_bytes=300 << 20)))
    )
    assert out[0].mode == "RGB" and out[0].size == (6300, 6300)
    assert growth < 400, f"peak grew {growth:.0f} MiB"


def test_decoded_bytes_are_limited_not_only_pixels():
    data = png_16_bit(3000, 3000)  # 9 M pixels, far under max_pixels; 9 MB*2 + 9 MB + 36 MB = 63 MB
    decode_image(data, "image/png", DecodeLimits(max_decode_bytes=64 << 20))
    with pytest.raises(FrameDecodeError) as err:
        decode_image(data, "image/png", DecodeLimits(max_decode_bytes=32 << 20))
    assert err.value.reason == "image-too-large"
    assert "3000x3000 I;16 needs 60 MiB to decode, over the limit of 32 MiB per frame" in err.value.message


def test_a_lease_holds_the_frames_cost_until_released_and_refuses_more_than_the_budget():
    budget = DecodeBudget(100 << 20)
    data = png_16_bit(3000, 3000)
    with budget.lease() as lease:
        decode_image(data, "image/png", DecodeLimits(), lease=lease)
        assert budget.in_use() == 63_000_000  # held while the caller preprocesses the image
    assert budget.in_use() == 0
    small = DecodeBudget(32 << 20)
    with (
        pytest.raises(FrameDecodeError, match="more than the decode budget of 32 MiB"),
        small.lease() as lease,
    ):
        decode_image(data, "image/png", DecodeLimits(), lease=lease)
    assert small.in_use() == 0


def test_the_budget_bounds_decodes_running_at_once_and_serves_them_in_order():
    import threading

    budget = DecodeBudget(100)
    order: list[str] = []
    first = budget.lease()
    lease = first.__enter__()
    lease.take(80)

    def want(name: str, nbytes: int) -> None:
        with budget.lease() as mine:
            mine.take(nbytes)
            order.append(name)

    big = threading.Thread(target=want, args=("big", 90))
    big.start()
    while not budget.waiting():  # the big request is waiting
        big.join(0.01)
    small = threading.Thread(target=want, args=("small", 10))  # would fit now, but must not overtake
    small.start()
    small.join(0.2)
    assert order == [] and budget.in_use() == 80
    first.__exit__(None, None, None)
    big.join(5)
    small.join(5)
    assert order == ["big", "small"] and budget.in_use() == 0


def test_float_and_32_bit_images_are_scaled_to_their_maximum():
    f = Image.fromarray(np.array([[np.nan, -1.0, 2.0, 4.0]] * 40, dtype=np.float32).repeat(10, axis=1))
    assert list(np.asarray(to_rgb(f))[0, ::10, 0]) == [0, 0, 127, 255]
    i = Image.fromarray(np.array([[0, 500, 1000]] * 40, dtype=np.int32).repeat(10, axis=1))
    assert i.mode == "I" and list(np.asarray(to_rgb(i))[0, ::10, 0]) == [0, 127, 255]
