"""TripoSR's framing of the cut-out object: crop, square, pad, grey background, 512×512.

The model was trained on objects that fill about 85 % of a grey square, so the official
pipeline (``run.py`` + ``tsr.utils.resize_foreground`` + ``TSR.image_processor``) is reproduced
here exactly, including its quirks: the bounding box drops the last foreground row and column,
and the grey composite truncates instead of rounding. Torch is not needed: the model's
``F.interpolate(bilinear, antialias=True)`` is a port of Pillow's resampling, so Pillow's
float ("F" mode) bilinear resize gives the same result.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from img2mesh.contract import CONDITION_SIZE, FOREGROUND_RATIO, FRAMED_SIZE
from img2mesh.errors import InvalidInput

_ROWS_PER_BLOCK = 256


def resize_foreground(rgba: np.ndarray, ratio: float) -> np.ndarray:
    """Crop to the foreground, pad to a square, then pad so the object fills ``ratio`` of the side.

    As ``tsr.utils.resize_foreground``: the box of ``alpha > 0`` is cropped with exclusive ends
    (``[y1:y2, x1:x2]`` where y2/x2 are the last foreground row/column, so those are dropped),
    padding is transparent black with any odd pixel on the bottom/right, and the final side is
    ``int(side / ratio)``. No resampling happens here.

    Raises:
        InvalidInput: no pixel has ``alpha > 0``, or the foreground is a single row or column.
    """
    rows, columns = np.nonzero(rgba[..., 3] > 0)
    if rows.size == 0:
        raise InvalidInput(
            "no foreground object found: background removal left every pixel transparent; "
            "photograph the product against a plain, contrasting background"
        )
    y1, y2, x1, x2 = rows.min(), rows.max(), columns.min(), columns.max()
    foreground = rgba[y1:y2, x1:x2]
    side = max(foreground.shape[0], foreground.shape[1])
    if side == 0:
        raise InvalidInput(
            "no foreground object found: the foreground is a single pixel wide and high; "
            "send a photo in which the product is clearly visible"
        )
    square = _pad_centered(foreground, side)
    return _pad_centered(square, int(side / ratio))


def composite_on_gray(rgba: np.ndarray) -> np.ndarray:
    """Blend the RGBA image onto 50 % grey, as ``run.py``: ``rgb·a + 0.5·(1 − a)``, truncated to uint8.

    The float32 arithmetic is the official one, done a block of rows at a time: a 40-megapixel
    frame as float32 RGBA would otherwise need over a gigabyte.
    """
    gray = np.empty((*rgba.shape[:2], 3), dtype=np.uint8)
    for start in range(0, rgba.shape[0], _ROWS_PER_BLOCK):
        block = rgba[start : start + _ROWS_PER_BLOCK].astype(np.float32) / 255.0
        alpha = block[:, :, 3:4]
        blended = block[:, :, :3] * alpha + (1 - alpha) * 0.5
        gray[start : start + _ROWS_PER_BLOCK] = (blended * 255.0).astype(np.uint8)
    return gray


def condition_image(
    rgba: np.ndarray,
    *,
    foreground_ratio: float = FOREGROUND_RATIO.default,
    size: int = CONDITION_SIZE,
) -> np.ndarray:
    """The TripoSR encoder input ``FP32 [3, size, size]`` in [0, 1] for a cut-out RGBA image.

    Frames the foreground, composites onto grey, then resizes like TripoSR's
    ``F.interpolate(mode="bilinear", antialias=True, align_corners=False)`` on ``uint8 / 255``.
    """
    return framed_condition(resize_foreground(rgba, foreground_ratio), size)


def framed_condition(framed: np.ndarray, size: int = CONDITION_SIZE) -> np.ndarray:
    """:func:`condition_image` of a cut-out already framed by :func:`resize_foreground`."""
    gray = composite_on_gray(framed)
    resized = [_resize_channel(gray[:, :, channel].astype(np.float32) / 255.0, size) for channel in range(3)]
    return np.stack(resized)


def framed_photo(framed: np.ndarray, size: int = FRAMED_SIZE) -> np.ndarray:
    """The cut-out framed by :func:`resize_foreground`, RGBA uint8 ``[size, size, 4]``: the photo and its
    mask (alpha) as TripoSR's square frames them, which the asset's front view is compared with.

    Pillow's bilinear resize weights the colours by alpha, so the background's black does not bleed
    into the product's edge.
    """
    return np.asarray(Image.fromarray(np.ascontiguousarray(framed)).resize((size, size), Image.Resampling.BILINEAR))


def _resize_channel(channel: np.ndarray, size: int) -> np.ndarray:
    """Antialiased bilinear resize of one float32 channel to ``size × size`` (Pillow "F" mode)."""
    return np.asarray(Image.fromarray(channel).resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)


def _pad_centered(image: np.ndarray, side: int) -> np.ndarray:
    """Pad ``image`` with transparent black to ``side × side``, the odd pixel going bottom/right."""
    height, width = image.shape[:2]
    top, left = (side - height) // 2, (side - width) // 2
    return np.pad(
        image,
        ((top, side - height - top), (left, side - width - left), (0, 0)),
        mode="constant",
    )
