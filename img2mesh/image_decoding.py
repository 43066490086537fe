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

# File signatures of the accepted formats: used only to tell "not an image" apart from
# "an accepted format that Pillow could not read" (corrupt header, zero width or height).
_SIGNATURES = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
)

# 16-bit greyscale PNGs open in one of these modes; Pillow's own conversion to RGBA clips them
# at 255 instead of scaling, which would turn almost every pixel white.
_SIXTEEN_BIT_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


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
    if not data:
        raise InvalidInput(f"the image is empty (0 bytes): send the bytes of a {ACCEPTED_FORMATS_TEXT} file")
    try:
        image = Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS)
    except Image.DecompressionBombError as error:
        # Pillow's own guard (about 179 M pixels) fires inside open(), before ours can.
        raise InvalidInput(
            f"the image declares too many pixels ({error}); the limit is {max_pixels} pixels: "
            "downscale it (the model works at 512×512) and send it again"
        ) from error
    except UnidentifiedImageError as error:
        raise InvalidInput(_unidentified_message(data)) from error
    except (OSError, ValueError) as error:
        # A recognised format whose header is cut short or damaged (Pillow raises these from open()).
        raise InvalidInput(
            f"the image file is truncated or corrupt and cannot be read ({error}): upload the complete file again"
        ) from error
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise InvalidInput(f"the image has a zero size ({width}×{height}): send an image with pixels")
        if width * height > max_pixels:
            raise InvalidInput(
                f"the image is {width}×{height} = {width * height} pixels, more than the limit of "
                f"{max_pixels}: downscale it (the model works at 512×512) and send it again"
            )
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            raise InvalidInput(
                f"the {image.format} file is truncated or corrupt and cannot be fully decoded ({error}): "
                "upload the complete file again"
            ) from error
        return _to_rgba(upright)


def has_transparency(rgba: np.ndarray) -> bool:
    """True when any pixel is not fully opaque: TripoSR then trusts the image's own cut-out."""
    return bool((rgba[..., 3] < 255).any())


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
    for signature, name in _SIGNATURES:
        if data.startswith(signature):
            return (
                f"the {name} file has a corrupt header or a zero width/height and cannot be read: "
                "re-export the image and upload it again"
            )
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return (
            "the WebP file has a corrupt header or a zero width/height and cannot be read: "
            "re-export the image and upload it again"
        )
    return f"the data is not an image in an accepted format: send a {ACCEPTED_FORMATS_TEXT} file"
