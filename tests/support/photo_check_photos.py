"""Drawn product photos for the photo check: one clean shot and one of each problem it names.

Each photo is a shaded product (a can-like body with a lid) on white, drawn at 4× and
LANCZOS-downsampled for photo-like edges, which the real u2netp cuts out cleanly; only where and
how large the products are differs (real photographs: bench/real_photos.py). ``PROBLEM_OF`` says which problem code
the check must find in each unusable photo.
"""

from __future__ import annotations

import io

from PIL import Image, ImageDraw

from img2mesh.photo_measures import CUT_OFF, NO_OBJECT, SEVERAL_OBJECTS, TOO_SMALL

SUPERSAMPLING = 4
RED, BLUE = (196, 48, 40), (40, 70, 190)

Box = tuple[float, float, float, float]
"""left, top, right, bottom in fractions of the photo's width and height (may reach outside it)."""


def _product(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], color: tuple[int, int, int]) -> None:
    left, top, right, bottom = box
    lid = max(2, (bottom - top) // 10)
    for x in range(left, right):
        shade = 0.65 + 0.35 * (1 - abs((x - left) / max(right - left, 1) * 2 - 1))
        draw.line([(x, top + lid), (x, bottom - lid)], fill=tuple(int(c * shade) for c in color))
    draw.ellipse((left, bottom - 2 * lid, right, bottom), fill=tuple(int(c * 0.75) for c in color))
    draw.ellipse((left, top, right, top + 2 * lid), fill=tuple(int(c * 0.45) for c in color))


def drawn_photo(size: tuple[int, int], boxes: tuple[Box, ...], *, transparent: bool = False,
                color: tuple[int, int, int] = RED) -> bytes:
    """A photo ``size`` (width, height) with a product in each box: a JPEG on white, or a PNG on
    transparency."""
    width, height = size[0] * SUPERSAMPLING, size[1] * SUPERSAMPLING
    background = (255, 255, 255, 0) if transparent else (255, 255, 255, 255)
    canvas = Image.new("RGBA", (width, height), background)
    draw = ImageDraw.Draw(canvas)
    for left, top, right, bottom in boxes:
        _product(draw, (int(left * width), int(top * height), int(right * width), int(bottom * height)), color)
    photo = canvas.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if transparent:
        photo.save(buffer, "PNG")
    else:
        photo.convert("RGB").save(buffer, "JPEG", quality=92)
    return buffer.getvalue()


def clean() -> bytes:
    return drawn_photo((800, 600), ((0.38, 0.18, 0.62, 0.82),))


def cut_off_right() -> bytes:
    """The same product, half of it beyond the right edge."""
    return drawn_photo((800, 600), ((0.85, 0.18, 1.09, 0.82),))


def two_products() -> bytes:
    return drawn_photo((800, 600), ((0.14, 0.18, 0.38, 0.82), (0.62, 0.18, 0.86, 0.82)), color=BLUE)


def tiny() -> bytes:
    """A product 90 pixels tall in a 1600 × 1200 frame."""
    return drawn_photo((1600, 1200), ((0.485, 0.4625, 0.515, 0.5375),))


def empty() -> bytes:
    return drawn_photo((800, 600), ())


def transparent() -> bytes:
    """The clean product on a transparent background (its alpha is the mask)."""
    return drawn_photo((800, 600), ((0.38, 0.18, 0.62, 0.82),), transparent=True)


UNUSABLE = {"cut_off_right": cut_off_right, "two_products": two_products, "tiny": tiny, "empty": empty}
PROBLEM_OF = {"cut_off_right": CUT_OFF, "two_products": SEVERAL_OBJECTS, "tiny": TOO_SMALL, "empty": NO_OBJECT}
