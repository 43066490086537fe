"""decode_image: every accepted format, orientation, alpha, odd modes, and each way to refuse."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from img2mesh.contract import MAX_IMAGE_PIXELS
from img2mesh.errors import InvalidInput
from img2mesh.image_decoding import decode_image, is_cut_out, inspect_image

RNG = np.random.default_rng(7)
PIXELS = RNG.integers(0, 256, (48, 64, 3), dtype=np.uint8)


def encode(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format, **options)
    return buffer.getvalue()


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, rows: bytes = b"") -> bytes:
    """A PNG written by hand: Pillow cannot write some variants, and a bomb must hold no pixels."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width × height`` RGBA pixels but holds none (no pixel is allocated)."""
    return png_bytes(width, height, 8, 6)


@pytest.mark.parametrize("format", ["PNG", "BMP", "WEBP"])
def test_lossless_formats_decode_exactly(format: str) -> None:
    options = {"lossless": True} if format == "WEBP" else {}
    rgba = decode_image(encode(Image.fromarray(PIXELS), format, **options))
    assert rgba.shape == (48, 64, 4) and rgba.dtype == np.uint8
    np.testing.assert_array_equal(rgba[..., :3], PIXELS)
    assert (rgba[..., 3] == 255).all()


def test_jpeg_decodes_close_to_the_original() -> None:
    smooth = np.repeat(np.linspace(0, 255, 64, dtype=np.uint8)[None, :, None], 48, axis=0).repeat(3, axis=2)
    rgba = decode_image(encode(Image.fromarray(smooth), "JPEG", quality=95))
    assert rgba.shape == (48, 64, 4)
    assert np.abs(rgba[..., :3].astype(int) - smooth).mean() < 2
    assert not is_cut_out(rgba)


def test_gif_first_frame_with_palette_transparency() -> None:
    frames = [Image.new("P", (8, 8), 1), Image.new("P", (8, 8), 2)]
    for frame in frames:
        frame.putpalette([255, 255, 255, 200, 0, 0, 0, 0, 200] + [0] * 759)
    frames[0].putpixel((0, 0), 0)
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], transparency=0)
    rgba = decode_image(data)
    assert tuple(rgba[4, 4]) == (200, 0, 0, 255)  # first frame's colour, not the second's
    assert rgba[0, 0, 3] == 0 and is_cut_out(rgba)


def test_exif_orientation_is_applied() -> None:
    # Stored 40 wide × 20 high: left half red, right half blue; orientation 6 = rotate 90° clockwise.
    stored = np.zeros((20, 40, 3), dtype=np.uint8)
    stored[:, :20] = (255, 0, 0)
    stored[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    rgba = decode_image(encode(Image.fromarray(stored), "JPEG", quality=95, exif=exif.tobytes()))
    assert rgba.shape == (40, 20, 4)
    assert rgba[5, 10, 0] > 200 and rgba[5, 10, 2] < 50  # the stored left (red) is now on top
    assert rgba[35, 10, 2] > 200 and rgba[35, 10, 0] < 50


def test_alpha_channel_is_kept() -> None:
    rgba_in = np.concatenate([PIXELS, RNG.integers(0, 256, (48, 64, 1), dtype=np.uint8)], axis=2)
    for format, options in (("PNG", {}), ("WEBP", {"lossless": True, "exact": True})):
        rgba = decode_image(encode(Image.fromarray(rgba_in), format, **options))
        np.testing.assert_array_equal(rgba, rgba_in)
        assert is_cut_out(rgba)


def test_grey_alpha_png() -> None:
    grey_alpha = Image.merge("LA", (Image.new("L", (4, 3), 90), Image.new("L", (4, 3), 30)))
    rgba = decode_image(encode(grey_alpha, "PNG"))
    assert (rgba[..., :3] == 90).all() and (rgba[..., 3] == 30).all()


def test_sixteen_bit_grey_png_is_scaled_not_clipped() -> None:
    levels = np.array([[0, 257 * 64, 32768, 65535]], dtype=np.uint16)
    rgba = decode_image(encode(Image.fromarray(levels), "PNG"))
    np.testing.assert_array_equal(rgba[0, :, 0], [0, 64, 128, 255])
    assert (rgba[0, :, 0] == rgba[0, :, 2]).all() and (rgba[..., 3] == 255).all()


def test_sixteen_bit_rgb_png_keeps_the_high_byte() -> None:
    pixels = np.array([[[65535, 32768, 0], [257 * 10, 257 * 200, 300]]], dtype=">u2")
    rows = b"".join(b"\x00" + row.tobytes() for row in pixels)  # filter type 0 per row
    rgba = decode_image(png_bytes(2, 1, 16, 2, rows))
    np.testing.assert_array_equal(rgba[0, :, :3], [[255, 128, 0], [10, 200, 1]])


def test_cmyk_jpeg_becomes_rgb() -> None:
    red_in_cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))
    rgba = decode_image(encode(red_in_cmyk, "JPEG", quality=95))
    red, green, blue, alpha = (int(value) for value in rgba[8, 8])
    assert red > 230 and green < 25 and blue < 25 and alpha == 255


def test_pillow_still_refuses_truncated_images() -> None:
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", r"the file is empty \(0 bytes\)"),
        (b"hello, this is not a picture", "not an image in an accepted format: send a JPEG, PNG or WebP"),
        (b"\x00\x01\x02\x03 binary", "not an image in an accepted format: send a JPEG, PNG or WebP"),
        (encode(Image.fromarray(PIXELS), "TIFF"), "^TIFF images are not supported: save the photo as JPEG"),
        (encode(Image.fromarray(PIXELS), "TIFF", compression="tiff_lzw"), "^TIFF images are not supported"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "^HEIC/HEIF images are not supported"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1", "^AVIF images are not supported"),
        (encode(Image.fromarray(PIXELS), "JPEG2000"), "^JPEG 2000 images are not supported"),
        (b"8BPS\x00\x01", r"^Photoshop \(PSD\) files are not supported"),
        (b"%PDF-1.7\n", "^PDF documents are not supported"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "^SVG drawings are not supported"),
        (b"<!DOCTYPE html><html><body>moved</body></html>", r"web page \(HTML\), not an image"),
        (png_header_only(0, 10), "zero width/height"),
    ],
    ids=["zero-bytes", "text", "binary", "tiff", "tiff-lzw", "heic", "avif", "jpeg2000", "psd", "pdf", "svg", "html",
         "zero-width-png"],
)
def test_refusals_say_what_is_wrong(data: bytes, expected: str) -> None:
    with pytest.raises(InvalidInput, match=expected):
        decode_image(data)


@pytest.mark.parametrize("format", ["JPEG", "PNG"])
def test_truncated_file_is_refused(format: str) -> None:
    data = encode(Image.fromarray(PIXELS), format)
    with pytest.raises(InvalidInput, match=f"the {format} file is truncated or corrupt"):
        decode_image(data[: len(data) * 2 // 3])


@pytest.mark.parametrize(
    ("width", "height", "expected"),
    [(50_000, 50_000, "too many pixels"), (10_000, 5_000, f"10000×5000 = 50000000 pixels, more than the limit of {MAX_IMAGE_PIXELS}")],
)
def test_pixel_bomb_is_refused_from_the_header(width: int, height: int, expected: str) -> None:
    data = png_header_only(width, height)
    tracemalloc.start()
    with pytest.raises(InvalidInput, match=expected):
        decode_image(data)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 1_000_000, f"refusing a header-only bomb allocated {peak} bytes"


def test_max_pixels_is_configurable() -> None:
    data = encode(Image.fromarray(PIXELS), "PNG")
    with pytest.raises(InvalidInput, match="more than the limit of 1000"):
        decode_image(data, max_pixels=1000)


@pytest.mark.parametrize("format", ["JPEG", "PNG", "WEBP", "GIF"])
def test_every_cut_through_the_header_is_an_invalid_input(format: str) -> None:
    data = encode(Image.fromarray(PIXELS), format)
    for length in range(1, min(len(data), 400), 7):
        with pytest.raises(InvalidInput, match="corrupt|not an image"):
            decode_image(data[:length])


def test_inspection_reports_the_upright_size_and_refuses_what_decoding_refuses() -> None:
    turned = Image.fromarray(PIXELS)
    exif = turned.getexif()
    exif[0x0112] = 6  # rotate 90° on display
    data = encode(turned, "JPEG", exif=exif)
    assert inspect_image(data) == ("JPEG", 48, 64)
    assert decode_image(data).shape[:2] == (64, 48)
    assert inspect_image(encode(Image.fromarray(PIXELS), "PNG")) == ("PNG", 64, 48)
    for cut in (encode(Image.fromarray(PIXELS), "JPEG"), encode(Image.fromarray(PIXELS), "PNG")):
        with pytest.raises(InvalidInput, match="truncated or corrupt"):
            inspect_image(cut[: len(cut) * 2 // 3])
    with pytest.raises(InvalidInput, match="more than the limit of 1000"):
        inspect_image(data, max_pixels=1000)


def test_inspecting_a_36_megapixel_jpeg_holds_a_fraction_of_its_pixels(tmp_path: Path) -> None:
    """Measured in a fresh interpreter that only reads the file: the peak resident memory of
    inspecting it, and of decoding it."""
    ramp = np.linspace(0, 255, 7360, dtype=np.uint8)[None, :].repeat(4912, 0)
    photo = tmp_path / "36mp.jpg"
    Image.fromarray(np.stack([ramp, ramp[::-1], ramp], -1)).save(photo, "JPEG", quality=80)
    # VmHWM, not ru_maxrss: a child's ru_maxrss starts at its parent's size at fork (pytest's).
    program = """
import sys
from pathlib import Path
from img2mesh.image_decoding import decode_image, inspect_image

def peak_kib():
    return int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])

data = Path(sys.argv[2]).read_bytes()
before = peak_kib()
assert (inspect_image if sys.argv[1] == "inspect" else decode_image)(data) is not None
print(peak_kib() - before)
"""

    def growth_kib(how: str) -> int:
        done = subprocess.run([sys.executable, "-c", program, how, str(photo)], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).resolve().parents[2])
        return int(done.stdout.strip())

    assert growth_kib("inspect") < 20_000, "inspecting a 36 MP JPEG should need a few MB"
    assert growth_kib("decode") > 100_000, "the comparison is meaningful: a full decode needs over 100 MB"
