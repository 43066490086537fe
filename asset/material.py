"""The one material every file of the asset carries, and how its colour texture is encoded.

Every writer (``glb``, ``usdz``) takes a :class:`Material`, so a product looks the same in
model-viewer, Scene Viewer and AR Quick Look
(docs/facts.md, "Product models for the web and AR"):

* **Metallic 0.** Products photographed for a shop are dielectrics (plastic, ceramic, paper,
  fabric, painted surfaces); with metallic 1, glTF's default, they render dark and mirror-like.
* **Roughness 0.7 by default.** The colours come from a photo, so the product's own shading is
  already in them; a glossy surface (roughness below about 0.5) would add a second, sharp
  highlight from the viewer's environment on top of it. Roughness 1 (glTF's default, and
  what the GLB used before) looks chalky: no sheen at all, not even at grazing angles.
  0.7 keeps a broad, soft highlight that reads as a real surface without fighting the baked
  shading. Callers that know their material better pass another value.
* **Base colour.** A baked sRGB texture on UVs when the mesh has one, else the vertex colours.
  The texture is stored as PNG (lossless) or JPEG (about ten times smaller for photographic
  content); JPEG is written at quality 90 without chroma subsampling, because the colour
  edges of labels and logos are exactly what 4:2:0 subsampling blurs.
"""

from __future__ import annotations

import enum
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

DEFAULT_ROUGHNESS = 0.7
METALLIC = 0.0
JPEG_QUALITY = 90


class TextureFormat(enum.Enum):
    """How the colour texture is stored inside the GLB and the USDZ."""

    PNG = "png"
    JPEG = "jpeg"

    @property
    def mime_type(self) -> str:
        return f"image/{self.value}"

    @property
    def extension(self) -> str:
        """The file name extension inside a USDZ package (AR Quick Look reads .png and .jpg)."""
        return ".png" if self is TextureFormat.PNG else ".jpg"


@dataclass(frozen=True)
class Material:
    """The asset's PBR material: metallic 0, this roughness, the texture stored in this format."""

    roughness: float = DEFAULT_ROUGHNESS
    texture_format: TextureFormat = TextureFormat.PNG

    def __post_init__(self) -> None:
        if not 0.0 <= self.roughness <= 1.0:
            raise ValueError(f"roughness must be within 0 … 1, got {self.roughness}")

    def encode_texture(self, texture: np.ndarray) -> bytes:
        """The texture (uint8 sRGB [H, W, 3]) as an image file in ``texture_format``."""
        buffer = io.BytesIO()
        image = Image.fromarray(np.ascontiguousarray(texture))
        if self.texture_format is TextureFormat.PNG:
            image.save(buffer, format="PNG")
        else:
            image.save(buffer, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
        return buffer.getvalue()


DEFAULT_MATERIAL = Material()
"""Metallic 0, roughness ``DEFAULT_ROUGHNESS``, PNG texture."""


def srgb_to_linear(colors: np.ndarray) -> np.ndarray:
    """8-bit sRGB colours as linear floats in [0, 1]: the sRGB transfer function inverted
    (IEC 61966-2-1). glTF vertex colours and USD colour values are linear."""
    srgb = np.asarray(colors, dtype=np.float64) / 255.0
    return np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(colors: np.ndarray) -> np.ndarray:
    """Linear floats in [0, 1] as 8-bit sRGB colours: :func:`srgb_to_linear` inverted, rounded."""
    linear = np.clip(np.asarray(colors, dtype=np.float64), 0.0, 1.0)
    srgb = np.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear ** (1 / 2.4) - 0.055)
    return np.round(srgb * 255.0).astype(np.uint8)
