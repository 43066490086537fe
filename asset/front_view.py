"""The asset's front view as TripoSR's camera sees it, rasterised in vectorised numpy.

The view the photo was taken from (docs/facts.md, "TripoSR's camera"): a pinhole at
``(CAMERA_DISTANCE, 0, 0)`` of the TripoSR world frame looking towards −X, image-right +Y, up +Z.
Only triangles that face the camera by their winding are drawn, as a viewer draws the asset's
single-sided material, and the nearest one wins each pixel (a z-buffer); a pixel is covered when
its centre lies inside a triangle, and takes the colour of the texel (or the blend of the vertex
colours) at that point. No lighting: the colours are the file's, as the photo's are the photo's.

How large and where the object appears is the network's choice (TripoSR places and scales it in
its world as it learned to; the camera's field of view only scales the picture), so the view is
framed as TripoSR frames a photo: by the object's box, its larger side onto the larger side of a
given box, centred on it. The box is taken from the triangles the caller names (the product's, not
its loose flakes') and ignores the outermost ``FRAME_QUANTILE`` of their area on each side, so a
sliver at the edge does not reframe the whole view.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from img2mesh.contract import CAMERA_DISTANCE

FRAME_QUANTILE = 0.005
"""The share of the object's area, on each side, that the framing box leaves out."""
_QUANTILE_BINS = 4096


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in pixel coordinates (x right, y down; a pixel's centre is at +0.5)."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def centre(self) -> tuple[float, float]:
        return (self.left + self.right) / 2, (self.top + self.bottom) / 2

    @property
    def side(self) -> float:
        return max(self.right - self.left, self.bottom - self.top)


@dataclass(frozen=True)
class FrontView:
    """``covered`` bool [S, S]: the pixels the asset covers; ``colors`` uint8 sRGB [S, S, 3] there (0 elsewhere)."""

    covered: np.ndarray
    colors: np.ndarray


def mask_box(mask: np.ndarray) -> Box:
    """The framing box of a mask (bool [H, W]): its pixels' extent without ``FRAME_QUANTILE`` on each side.

    Raises:
        ValueError: the mask is empty.
    """
    rows, columns = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("the mask is empty")
    top, bottom = np.quantile(rows, [FRAME_QUANTILE, 1 - FRAME_QUANTILE])
    left, right = np.quantile(columns, [FRAME_QUANTILE, 1 - FRAME_QUANTILE])
    return Box(float(left), float(top), float(right) + 1, float(bottom) + 1)


def front_view(
    vertices: np.ndarray,
    triangles: np.ndarray,
    frame: Box,
    size: int,
    *,
    uvs: np.ndarray | None = None,
    texture: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    framing: np.ndarray | None = None,
) -> FrontView:
    """The front view (``size`` pixels a side) of a mesh in the TripoSR world frame, framed onto ``frame``
    by the triangles ``framing`` (bool [F]; default: all).

    Colour comes from ``uvs`` and ``texture`` (glTF convention) or else ``colors`` (sRGB per vertex);
    with neither, the covered pixels stay black. A mesh with no triangle facing the camera covers nothing.
    """
    points = np.asarray(vertices, dtype=np.float64)
    depth = CAMERA_DISTANCE - points[:, 0]
    screen_x, screen_y = points[:, 1] / depth, -points[:, 2] / depth
    faces = np.asarray(triangles, dtype=np.int64)
    xa, xb, xc = screen_x[faces[:, 0]], screen_x[faces[:, 1]], screen_x[faces[:, 2]]
    ya, yb, yc = screen_y[faces[:, 0]], screen_y[faces[:, 1]], screen_y[faces[:, 2]]
    doubled_area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
    facing = np.nonzero(doubled_area < 0)[0]  # counter-clockwise from outside is clockwise on a y-down screen
    covered = np.zeros(size * size, dtype=bool)
    shaded = np.zeros((size * size, 3), dtype=np.uint8)
    framed_by = doubled_area < 0 if framing is None else (doubled_area < 0) & framing
    if framed_by.any():
        xs = (xa[facing], xb[facing], xc[facing])
        ys = (ya[facing], yb[facing], yc[facing])
        scale, offset_x, offset_y = _framing(xs, ys, np.where(framed_by[facing], -doubled_area[facing], 0.0), frame)
        pixel_xs = tuple(x * scale + offset_x for x in xs)
        pixel_ys = tuple(y * scale + offset_y for y in ys)
        pixel, face, weights = _nearest(pixel_xs, pixel_ys, depth[faces[facing]], size)
        covered[pixel] = True
        shaded[pixel] = _colours(faces[facing[face]], weights, uvs, texture, colors)
    return FrontView(covered.reshape(size, size), shaded.reshape(size, size, 3))


Corners = tuple[np.ndarray, np.ndarray, np.ndarray]
"""One coordinate of the three corners of each triangle."""


def _framing(xs: Corners, ys: Corners, areas: np.ndarray, frame: Box) -> tuple[float, float, float]:
    """Scale and offsets that put the object's framing box onto ``frame``: its area's quantiles, each
    triangle's area shared among its corners (exact at a large triangle's corners, and for small ones
    as good as their centres)."""
    weights = np.concatenate([areas, areas, areas])
    left, right = _weighted_quantiles(np.concatenate(xs), weights)
    top, bottom = _weighted_quantiles(np.concatenate(ys), weights)
    own = Box(left, top, right, bottom)
    scale = frame.side / own.side
    (x, y), (own_x, own_y) = frame.centre, own.centre
    return scale, x - own_x * scale, y - own_y * scale


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """The ``FRAME_QUANTILE`` and 1 − ``FRAME_QUANTILE`` quantiles of ``values`` weighted by ``weights``,
    to a ``_QUANTILE_BINS``-th of their range (a histogram: no sort)."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return low, high
    step = (high - low) / _QUANTILE_BINS
    bins = np.minimum(((values - low) / step).astype(np.int64), _QUANTILE_BINS - 1)
    cumulative = np.cumsum(np.bincount(bins, weights=weights, minlength=_QUANTILE_BINS))
    first, last = np.searchsorted(cumulative, [FRAME_QUANTILE * cumulative[-1], (1 - FRAME_QUANTILE) * cumulative[-1]])
    return low + first * step, low + (last + 1) * step


def _nearest(xs: Corners, ys: Corners, depths: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each covered pixel: its flat index, the nearest triangle there and the point's barycentric weights.

    Every triangle proposes the pixel centres of its bounding box; those inside it (by barycentric
    weights) compete by interpolated depth.
    """
    low_x = np.clip(np.ceil(np.minimum(np.minimum(*xs[:2]), xs[2]) - 0.5), 0, size).astype(np.int64)
    high_x = np.clip(np.floor(np.maximum(np.maximum(*xs[:2]), xs[2]) - 0.5), -1, size - 1).astype(np.int64)
    low_y = np.clip(np.ceil(np.minimum(np.minimum(*ys[:2]), ys[2]) - 0.5), 0, size).astype(np.int64)
    high_y = np.clip(np.floor(np.maximum(np.maximum(*ys[:2]), ys[2]) - 0.5), -1, size - 1).astype(np.int64)
    widths, heights = high_x - low_x + 1, high_y - low_y + 1
    counts = np.where((widths > 0) & (heights > 0), widths * heights, 0)
    face = np.repeat(np.arange(len(counts)), counts)
    local = np.arange(face.size) - np.repeat(np.cumsum(counts) - counts, counts)
    row, column = np.divmod(local, widths[face])
    row += low_y[face]
    column += low_x[face]
    x, y = column + 0.5, row + 0.5
    (xa, xb, xc), (ya, yb, yc) = (corner[face] for corner in xs), (corner[face] for corner in ys)
    doubled_area = (xb - xa) * (yc - ya) - (xc - xa) * (yb - ya)
    weight_a = ((xb - x) * (yc - y) - (xc - x) * (yb - y)) / doubled_area
    weight_b = ((xc - x) * (ya - y) - (xa - x) * (yc - y)) / doubled_area
    weight_c = 1.0 - weight_a - weight_b
    inside = np.flatnonzero((weight_a >= 0) & (weight_b >= 0) & (weight_c >= 0))
    weights = np.stack([weight_a[inside], weight_b[inside], weight_c[inside]], axis=1)
    face, pixel = face[inside], row[inside] * size + column[inside]
    corner_depths = depths[face]
    depth = (weights[:, 0] * corner_depths[:, 0] + weights[:, 1] * corner_depths[:, 1]
             + weights[:, 2] * corner_depths[:, 2])
    nearest = np.full(size * size, np.inf)
    np.minimum.at(nearest, pixel, depth)
    wins = depth <= nearest[pixel]
    return pixel[wins], face[wins], weights[wins]


def _colours(corners: np.ndarray, weights: np.ndarray, uvs: np.ndarray | None, texture: np.ndarray | None,
             colors: np.ndarray | None) -> np.ndarray:
    """The colour at each point (barycentric ``weights`` in triangles ``corners`` [N, 3] of vertex indices)."""
    if uvs is not None and texture is not None:
        uv = np.einsum("ij,ijk->ik", weights, np.asarray(uvs, dtype=np.float64)[corners])
        height, width = texture.shape[:2]
        rows = np.clip((uv[:, 1] * height).astype(np.int64), 0, height - 1)
        columns = np.clip((uv[:, 0] * width).astype(np.int64), 0, width - 1)
        return texture[rows, columns]
    if colors is not None:
        blended = np.einsum("ij,ijk->ik", weights, np.asarray(colors, dtype=np.float64)[corners])
        return np.round(blended).astype(np.uint8)
    return np.zeros((len(corners), 3), dtype=np.uint8)
