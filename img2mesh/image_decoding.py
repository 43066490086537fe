"""Turn the bytes a client uploaded into an RGBA array, refusing anything we cannot trust.

Every later step (rembg's U²-Net input, TripoSR framing) works on one representation: an
``H×W×4`` uint8 RGBA array with EXIF orientation applied. Alpha is kept when the file has it,
because TripoSR skips background removal for images that are already cut out.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from img2mesh.contract import MAX_IMAGE_PIXELS
from img2mesh.errors import InvalidInput

#: Pillow format names we open, and the order they are tried in. Restricting the plugins keeps
#: the attack surface small (no EPS/ghostscript, no TIFF codecs).
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")
ACCEPTED_FORMATS_TEXT = "JPEG, PNG or WebP (GIF and BMP also work)"
MIME_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "GIF": "image/gif", "BMP": "image/bmp"}

# File signatures of the accepted formats (WebP is RIFF....WEBP, see `accepted_format`).
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)

# Formats people send that we do not open, by their signatures, so a refusal can name them.
_UNSUPPORTED = (
    ((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"), "TIFF images"),
    ((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51"), "JPEG 2000 images"),
    ((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n"), "JPEG XL images"),
    ((b"8BPS",), "Photoshop (PSD) files"),
    ((b"%PDF",), "PDF documents"),
    ((b"%!PS", b"\xc5\xd0\xd3\xc6"), "PostScript/EPS files"),
    ((b"\x00\x00\x01\x00",), "ICO icons"),
)
# ISO base media files (HEIC, AVIF, MP4...): bytes 4–8 are "ftyp", then the brand.
_FTYP_BRANDS = {
    **dict.fromkeys((b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"), "HEIC/HEIF images"),
    **dict.fromkeys((b"avif", b"avis"), "AVIF images"),
}

# 16-bit greyscale PNGs open in one of these modes; Pillow's own conversion to RGBA clips them
# at 255 instead of scaling, which would turn almost every pixel white.
_SIXTEEN_BIT_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")

#: EXIF orientations that turn the picture by 90° (width and height swap).
_QUARTER_TURNS = (5, 6, 7, 8)


def decode_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode a JPEG, PNG or WebP (or GIF/BMP) file into an ``H×W×4`` uint8 RGBA array.

    The declared size is checked against ``max_pixels`` from the header, before any pixel is
    decoded, so a small file declaring a huge image costs nothing. The whole image is then
    decoded (a truncated file is refused, not padded with grey), EXIF orientation is applied,
    and an animated file yields its first frame.

    Raises:
        InvalidInput: empty data, not an image, an unsupported format, a truncated or corrupt
            file, a zero-size image, or more than ``max_pixels`` pixels.
    """
    with _opened(data, max_pixels) as image:
        _load(image)
        try:
            upright = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError) as error:
            raise InvalidInput(_corrupt(image.format)) from error
        return _to_rgba(upright)


def inspect_image(data: bytes, *, max_pixels: int = MAX_IMAGE_PIXELS) -> tuple[str, int, int]:
    """Check that a file decodes completely, as `decode_image` does, without holding its pixels.

    Returns its format (a Pillow name of ``ACCEPTED_FORMATS``) and upright width and height. A
    JPEG is decoded at an eighth of its size (libjpeg's DCT scaling still reads every block, so a
    truncated file is refused all the same), so a 36-megapixel photo costs about 2 MB, not 150.

    Raises:
        InvalidInput: as `decode_image`.
    """
    with _opened(data, max_pixels) as image:
        width, height = image.size
        image_format = str(image.format)
        if image_format == "JPEG":
            image.draft(image.mode, (1, 1))
        _load(image)
        orientation = image.getexif().get(0x0112)
    return (image_format, height, width) if orientation in _QUARTER_TURNS else (image_format, width, height)


def accepted_format(data: bytes) -> str | None:
    """The accepted format (Pillow's name) that ``data`` starts like, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for signature, name in _SIGNATURES if data.startswith(signature)), None)


def refusal(data: bytes) -> str:
    """Why ``data``, which is no accepted image, is refused: naming what it is when we can tell."""
    if not data:
        return f"the file is empty (0 bytes): send the bytes of a {ACCEPTED_FORMATS_TEXT} file"
    named = _unsupported_name(data)
    if named is not None:
        return f"{named} are not supported: save the photo as JPEG, PNG or WebP and send that"
    head = data[:512].lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if head.startswith((b"<!doctype html", b"<html")) or b"<head" in head or b"<body" in head:
        return "the link returned a web page (HTML), not an image: link the image file itself"
    if head.startswith((b"<?xml", b"<svg")) and b"<svg" in data[:4096].lower():
        return "SVG drawings are not supported: save the photo as JPEG, PNG or WebP and send that"
    try:
        data[:4096].decode("utf-8")
    except UnicodeDecodeError:
        return f"the data is not an image in an accepted format: send a {ACCEPTED_FORMATS_TEXT} file"
    return f"the data is text, not an image in an accepted format: send a {ACCEPTED_FORMATS_TEXT} file"


def _unsupported_name(data: bytes) -> str | None:
    if data[4:8] == b"ftyp":
        return _FTYP_BRANDS.get(data[8:12], "video and other ISO media files")
    return next((name for signatures, name in _UNSUPPORTED if data.startswith(signatures)), None)


def _opened(data: bytes, max_pixels: int) -> Image.Image:
    """Open ``data`` with one of the accepted plugins and check its declared size (no pixels yet)."""
    if not data:
        raise InvalidInput(refusal(data))
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as error:
        # Pillow's own guard (about 179 M pixels) fires inside open(), before ours can.
        raise InvalidInput(
            f"the image declares far too many pixels; the limit is {max_pixels} pixels: "
            "downscale it (the model works at 512×512) and send it again"
        ) from error
    except UnidentifiedImageError as error:
        raise InvalidInput(_unidentified_message(data)) from error
    except (OSError, ValueError) as error:
        # A recognised format whose header is cut short or damaged (Pillow raises these from open()).
        raise InvalidInput(
            "the image file is truncated or corrupt and cannot be read: upload the complete file again"
        ) from error
    width, height = image.size
    if width <= 0 or height <= 0:
        image.close()
        raise InvalidInput(f"the image has a zero size ({width}×{height}): send an image with pixels")
    if width * height > max_pixels:
        image.close()
        raise InvalidInput(
            f"the image is {width}×{height} = {width * height} pixels, more than the limit of "
            f"{max_pixels}: downscale it (the model works at 512×512) and send it again"
        )
    return image


def _load(image: Image.Image) -> None:
    """Decode every pixel, refusing a file that ends early or is damaged."""
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise InvalidInput(_corrupt(image.format)) from error


def _corrupt(image_format: str | None) -> str:
    return (f"the {image_format} file is truncated or corrupt and cannot be fully decoded: "
            "upload the complete file again")


CUT_OUT_ALPHA = 128
"""A pixel whose alpha is below this is more background than product: the cut-out removed it."""
CUT_OUT_MIN_SHARE = 0.001
"""An alpha channel is a cut-out when at least this share of the pixels (one in a thousand) is more
background than product. Official TripoSR trusts any alpha below 255 (``tsr.utils.remove_background``),
so a PNG that is opaque but for a few anti-aliased corner pixels (scikit-image's ``horse.png``: 4 of
131,200 below 128) became a "cut-out" whose product was the whole rectangle. Every real cut-out
removes far more: a disc cropped to its own bounding box still leaves a fifth of the square."""


def is_cut_out(rgba: np.ndarray) -> bool:
    """True when the image's alpha cuts its product out (``CUT_OUT_MIN_SHARE``): TripoSR's framing
    and the photo check then trust that alpha; otherwise U²-Net cuts the product out."""
    return bool((rgba[..., 3] < CUT_OUT_ALPHA).mean() >= CUT_OUT_MIN_SHARE)


def _to_rgba(image: Image.Image) -> np.ndarray:
    """Convert any decoded mode to RGBA uint8, scaling 16-bit greyscale instead of clipping it."""
    if image.mode in _SIXTEEN_BIT_GREY_MODES:
        wide = np.asarray(image).astype(np.int64)
        grey = np.round(np.clip(wide, 0, 65535) / 257.0).astype(np.uint8)
        alpha = np.full_like(grey, 255)
        transparent_value = image.info.get("transparency")
        if isinstance(transparent_value, int):
            alpha[wide == transparent_value] = 0
        return np.ascontiguousarray(np.stack([grey, grey, grey, alpha], axis=-1))
    return np.array(image.convert("RGBA"), dtype=np.uint8)


def _unidentified_message(data: bytes) -> str:
    """Explain an unreadable file: a recognised signature means a corrupt or zero-size file."""
    name = accepted_format(data)
    if name is not None:
        return (
            f"the {'WebP' if name == 'WEBP' else name} file has a corrupt header or a zero width/height and "
            "cannot be read: re-export the image and upload it again"
        )
    return refusal(data)
