"""Drawn product photos whose outline and colours are known, for fidelity checks of the whole pipeline.

Each product is asymmetric left/right and top/bottom, in saturated colours far from both the white
studio background (which U²-Net removes) and TripoSR's grey (which the ``silhouette``
weights read as "no product"). Drawn at 4× and LANCZOS-downsampled, so edges are anti-aliased like a
photo's. The set covers a JPEG on white, a PNG with alpha (background removal is skipped) and a
photo much wider than tall.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageOps

RED, BLUE, GREEN, YELLOW, ORANGE = (200, 40, 40), (40, 60, 200), (40, 160, 60), (230, 190, 30), (230, 110, 20)
WHITE = (255, 255, 255)
SUPERSAMPLING = 4

Drawing = Callable[[ImageDraw.ImageDraw, int, int], None]


def _boot(draw: ImageDraw.ImageDraw, width: int, height: int) -> None:
    """A boot: red shaft on the left, blue foot pointing right, a yellow toe cap."""
    draw.rectangle((0.30 * width, 0.12 * height, 0.48 * width, 0.70 * height), fill=RED)
    draw.rectangle((0.30 * width, 0.62 * height, 0.70 * width, 0.86 * height), fill=BLUE)
    draw.ellipse((0.62 * width, 0.62 * height, 0.78 * width, 0.86 * height), fill=YELLOW)


def _lamp(draw: ImageDraw.ImageDraw, width: int, height: int) -> None:
    """A desk lamp: blue base at the bottom left, an orange arm leaning right, a green shade top right."""
    draw.ellipse((0.15 * width, 0.80 * height, 0.55 * width, 0.92 * height), fill=BLUE)
    draw.polygon([(0.26 * width, 0.86 * height), (0.42 * width, 0.86 * height), (0.70 * width, 0.32 * height),
                  (0.56 * width, 0.24 * height)], fill=ORANGE)
    draw.polygon([(0.50 * width, 0.10 * height), (0.72 * width, 0.16 * height), (0.86 * width, 0.42 * height),
                  (0.52 * width, 0.34 * height)], fill=GREEN)


def _sofa(draw: ImageDraw.ImageDraw, width: int, height: int) -> None:
    """A long sofa: yellow seat, a red backrest over its left two thirds, a blue armrest on the right."""
    draw.rectangle((0.08 * width, 0.50 * height, 0.90 * width, 0.80 * height), fill=YELLOW)
    draw.rectangle((0.08 * width, 0.18 * height, 0.62 * width, 0.52 * height), fill=RED)
    draw.rectangle((0.82 * width, 0.36 * height, 0.94 * width, 0.90 * height), fill=BLUE)


@dataclass(frozen=True)
class DrawnPhoto:
    """A drawn product: ``rgba`` has the product's outline as alpha; ``format`` is how a client sends it."""

    name: str
    rgba: Image.Image
    format: str  # "JPEG" (composited onto white) or "PNG" (with the alpha)

    def encoded(self) -> bytes:
        buffer = io.BytesIO()
        if self.format == "JPEG":
            white = Image.new("RGBA", self.rgba.size, (*WHITE, 255))
            Image.alpha_composite(white, self.rgba).convert("RGB").save(buffer, "JPEG", quality=92)
        else:
            self.rgba.save(buffer, "PNG")
        return buffer.getvalue()

    def foreground(self) -> np.ndarray:
        """The product's pixels (bool [H, W]): where the drawing is at least half opaque."""
        return np.asarray(self.rgba)[..., 3] >= 128

    def mirrored(self) -> DrawnPhoto:
        """The same product flipped left-right: a negative control for orientation checks."""
        return DrawnPhoto(f"{self.name}-mirrored", ImageOps.mirror(self.rgba), self.format)

    def upside_down(self) -> DrawnPhoto:
        """The same product flipped top-bottom: a negative control for orientation checks."""
        return DrawnPhoto(f"{self.name}-upside-down", ImageOps.flip(self.rgba), self.format)

    def array(self) -> np.ndarray:
        """The drawing as RGBA uint8 [H, W, 4]: the truth the asset is compared with."""
        return np.asarray(self.rgba)


def draw_photo(name: str, size: tuple[int, int], drawing: Drawing, format: str) -> DrawnPhoto:
    """Draw ``drawing`` at ``SUPERSAMPLING``× on a transparent canvas of ``size`` (width, height)."""
    width, height = size[0] * SUPERSAMPLING, size[1] * SUPERSAMPLING
    canvas = Image.new("RGBA", (width, height), (*WHITE, 0))
    drawing(ImageDraw.Draw(canvas), width, height)
    return DrawnPhoto(name, canvas.resize(size, Image.Resampling.LANCZOS), format)


def drawn_photos() -> list[DrawnPhoto]:
    """The fidelity set: a JPEG boot, a PNG lamp with alpha, a wide JPEG sofa (3:1)."""
    return [
        draw_photo("boot", (640, 480), _boot, "JPEG"),
        draw_photo("lamp", (480, 560), _lamp, "PNG"),
        draw_photo("sofa", (960, 320), _sofa, "JPEG"),
    ]
