"""A UV atlas from projections along the six axis directions, packed into one square: cost follows the mesh.

xatlas grows charts face by face and flattens each with an iterative solver: at the budgets of the
presets that was most of the mesher's time, and the hundreds of small charts it needed to stay
affordable interleaved colours in the atlas, which showed as seams in model-viewer. Stable Fast 3D
unwraps by projection instead (its ``uv_unwrapper``), and so does this module:

1. **Directions.** Each face goes to the one of ±x, ±y, ±z its normal points along most, the
   normal first averaged over its corners' neighbourhoods (so that a noisy marching-cubes surface
   does not split into specks) unless that would tilt the face past ``MIN_TILT`` from the direction.
2. **Charts.** Connected faces (sharing an edge) of one direction form a chart.
3. **Projection.** A chart is projected onto the plane across its mean normal (less stretch than
   the axis plane for a slanted chart) when every face of it faces that normal by at least
   ``MIN_TILT``, else onto its axis plane; either way no face flips. Each chart is turned so that
   its principal axis runs along u, and lies flat (wider than tall).
4. **Packing.** All charts share one scale (texels per unit of surface, as xatlas'
   ``texels_per_unit``), the largest at which shelf packing of their boxes, tallest first with
   ``CHART_PADDING`` texels around each, fits the square. (A product has tens to hundreds of
   charts; a noise field's thousands of specks that could not all have boxes get one texel each.)
5. **Overlaps.** A chart can still cover itself (a surface that winds around its direction, like a
   ramp, or a decimated mesh folding at a sharp rim); texel centres that lie strictly inside two
   triangles of the packed atlas show it. Those triangles leave their charts, each becoming a
   chart of its own (one triangle cannot cover itself), and the atlas is packed again, at most
   ``MAX_OVERLAP_ROUNDS`` times (the new scale can make another sliver hold a centre). A sliver
   of overlap that holds no texel centre is left: no texel shows two surface points.

Vertices are split where charts meet: ``mapping`` gives the original vertex of each atlas vertex.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from img2mesh.atlas_rasterization import overlapping_triangles

CHART_PADDING = 2
"""Texels kept free around every chart's box: bilinear filtering at a chart's edge reads one texel
beyond it, and the padding step fills the gap with the chart's own colour."""
MIN_TILT = 0.2
"""Smallest cosine between a face's normal and the direction it is projected along: stretch stays
below 5× across, and no face can flip."""
MAX_OVERLAP_ROUNDS = 4
"""Times the atlas is packed again after overlapping triangles left their charts; measured on the
bench's mug at every preset, one round is all it takes (a centre the last atlas still shares is
shown by one of its two triangles)."""

_DIRECTIONS = np.concatenate([np.eye(3), -np.eye(3)])


def unwrap(vertices: np.ndarray, faces: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mesh's atlas for a ``size``² texture: ``(original vertex of each new vertex, new faces, uvs in [0, 1])``.

    Raises:
        ValueError: more charts than the atlas has texels (see ``_specks``).
    """
    positions = np.asarray(vertices, dtype=np.float64)
    triangles = np.asarray(faces, dtype=np.int64)
    normals, areas = _face_normals(positions, triangles)
    direction = _directions(positions, triangles, normals, areas)
    adjacent = _edge_neighbours(triangles)
    charts = _components(len(triangles), adjacent[direction[adjacent[:, 0]] == direction[adjacent[:, 1]]])
    corners = np.arange(3 * len(triangles)).reshape(-1, 3)  # each face with its own three UVs
    for round_ in range(MAX_OVERLAP_ROUNDS + 1):
        uvs = _pack(_flatten(positions, triangles, normals, areas, charts, direction), charts, size)
        overlapping = overlapping_triangles(uvs.reshape(-1, 2), corners, size)
        if len(overlapping) == 0 or round_ == MAX_OVERLAP_ROUNDS:
            break
        charts = charts.copy()
        charts[overlapping] = charts.max() + 1 + np.arange(len(overlapping))
        charts = np.unique(charts, return_inverse=True)[1]  # no label left without faces
    keys = charts[:, None] * len(positions) + triangles
    unique_keys, first, inverse = np.unique(keys.reshape(-1), return_index=True, return_inverse=True)
    mapping = unique_keys % len(positions)
    return mapping, inverse.reshape(-1, 3).astype(np.int32), uvs.reshape(-1, 2)[first].astype(np.float32)


def _face_normals(positions: np.ndarray, triangles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit face normals (+z for a face without area) and face areas."""
    corners = positions[triangles]
    cross = np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    doubled = np.linalg.norm(cross, axis=1)
    normals = np.where(doubled[:, None] > 0, cross / np.maximum(doubled, 1e-300)[:, None], [0.0, 0.0, 1.0])
    return normals, doubled / 2


def _directions(positions: np.ndarray, triangles: np.ndarray, normals: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """Index into ``_DIRECTIONS`` of each face: its smoothed normal's, unless its own faces that way too little."""
    weighted = np.repeat(normals * areas[:, None], 3, axis=0)  # one row per corner, as triangles.ravel()
    vertex_normals = _sums(triangles.reshape(-1), weighted, len(positions))
    smoothed = vertex_normals[triangles[:, 0]] + vertex_normals[triangles[:, 1]] + vertex_normals[triangles[:, 2]]
    # The components along +x, +y, +z, −x, −y, −z (``_DIRECTIONS``' order), without a matrix
    # product: numpy would hand that to a BLAS thread pool, which fights parallel mesher instances.
    direction = np.argmax(np.concatenate([smoothed, -smoothed], axis=1), axis=1)
    own = np.argmax(np.concatenate([normals, -normals], axis=1), axis=1)
    tilted = (normals * _DIRECTIONS[direction]).sum(axis=1) < MIN_TILT
    direction[tilted] = own[tilted]
    return direction


def _edge_neighbours(triangles: np.ndarray) -> np.ndarray:
    """Pairs of faces that share an edge ``[P, 2]`` (on a non-manifold edge, consecutive faces around it)."""
    edges = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    edges.sort(axis=1)
    keys = edges[:, 0] * (int(triangles.max()) + 1) + edges[:, 1]
    face = np.tile(np.arange(len(triangles)), 3)
    order = np.argsort(keys, kind="stable")
    keys, face = keys[order], face[order]
    same = keys[1:] == keys[:-1]
    return np.stack([face[:-1][same], face[1:][same]], axis=1)


def _sums(labels: np.ndarray, values: np.ndarray, count: int) -> np.ndarray:
    """Per label, the sum of the rows of ``values`` [N, K] that carry it: ``[count, K]``."""
    return np.stack([np.bincount(labels, weights=values[:, k], minlength=count) for k in range(values.shape[1])], 1)


def _components(count: int, pairs: np.ndarray) -> np.ndarray:
    """Connected component label of each of ``count`` faces joined by ``pairs``."""
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])), shape=(count, count))
    return connected_components(graph, directed=False)[1]


def _flatten(positions: np.ndarray, triangles: np.ndarray, normals: np.ndarray, areas: np.ndarray,
             charts: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Each face's corners in its chart's plane ``[F, 3, 2]``, in surface units, principal axis along u."""
    chart_count = int(charts.max()) + 1
    mean_normal = _sums(charts, normals * areas[:, None], chart_count)
    length = np.linalg.norm(mean_normal, axis=1, keepdims=True)
    chart_direction = np.zeros(chart_count, dtype=np.int64)
    chart_direction[charts] = direction  # one direction per chart: charts never cross directions
    axis = _DIRECTIONS[chart_direction]
    plane = np.where(length > 0, mean_normal / np.maximum(length, 1e-300), axis)
    # A chart whose mean normal leaves a face too tilted is projected along its direction instead.
    tilted = (normals * plane[charts]).sum(axis=1) < MIN_TILT
    too_tilted = np.bincount(charts, weights=tilted, minlength=chart_count) > 0
    plane[too_tilted] = axis[too_tilted]
    helper = np.where(np.abs(plane[:, [0]]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    tangent = np.cross(helper, plane)
    tangent /= np.linalg.norm(tangent, axis=1, keepdims=True)
    bitangent = np.cross(plane, tangent)
    corners = positions[triangles]  # [F, 3, 3]
    u = (corners * tangent[charts][:, None]).sum(axis=2)
    v = (corners * bitangent[charts][:, None]).sum(axis=2)
    return _principal(np.stack([u, v], axis=2), charts, areas, chart_count)


def _principal(flat: np.ndarray, charts: np.ndarray, areas: np.ndarray, chart_count: int) -> np.ndarray:
    """Each chart turned so that its principal axis (of the area-weighted face centroids) runs along u."""
    centroid = flat.mean(axis=1)
    weight = np.bincount(charts, weights=areas, minlength=chart_count) + 1e-300
    mean = _sums(charts, areas[:, None] * centroid, chart_count) / weight[:, None]
    offset = centroid - mean[charts]
    sxx, syy, sxy = (np.bincount(charts, weights=areas * a * b, minlength=chart_count)
                     for a, b in ((offset[:, 0], offset[:, 0]), (offset[:, 1], offset[:, 1]),
                                  (offset[:, 0], offset[:, 1])))
    angle = 0.5 * np.arctan2(2 * sxy, sxx - syy)
    cos, sin = np.cos(angle)[charts][:, None], np.sin(angle)[charts][:, None]
    x, y = flat[..., 0], flat[..., 1]
    # A rotation by −angle, so orientation (and so every face's winding) is kept.
    return np.stack([cos * x + sin * y, cos * y - sin * x], axis=2)


def _pack(flat: np.ndarray, charts: np.ndarray, size: int) -> np.ndarray:
    """The charts' corners ``[F, 3, 2]`` placed in the ``size``² atlas, as UVs in [0, 1]."""
    order = np.argsort(charts, kind="stable")
    starts = np.flatnonzero(np.diff(charts[order], prepend=-1))  # every label 0 … C−1 has faces
    low = np.minimum.reduceat(np.minimum(np.minimum(flat[:, 0], flat[:, 1]), flat[:, 2])[order], starts)
    high = np.maximum.reduceat(np.maximum(np.maximum(flat[:, 0], flat[:, 1]), flat[:, 2])[order], starts)
    extent = high - low
    # Lying flat makes the shelves' heights fit their charts better; a quarter turn keeps orientation.
    standing = extent[:, 1] > extent[:, 0]
    extent[standing] = extent[standing][:, ::-1]
    specks = _specks(extent, size)
    speck_rows = -(-int(specks.sum()) // size)
    corners = np.zeros((len(extent), 2))
    scale, corners[~specks] = _largest_scale(extent[~specks], size, size - speck_rows)
    local = flat - low[charts][:, None]
    turned = standing[charts]
    local[turned] = np.stack([extent[charts[turned], 0][:, None] - local[turned][..., 1], local[turned][..., 0]], 2)
    placed = local * scale + corners[charts][:, None] + CHART_PADDING
    # A speck shrinks to the centre of its own texel in the rows below the shelves.
    cell = np.divmod(np.arange(int(specks.sum())), size)
    speck_texel = np.zeros((len(extent), 2))
    speck_texel[specks] = np.stack([cell[1], size - speck_rows + cell[0]], axis=1) + 0.5
    placed[specks[charts]] = speck_texel[charts[specks[charts]]][:, None]
    return np.clip(placed / size, 0.0, 1.0)


def _specks(extent: np.ndarray, size: int) -> np.ndarray:
    """Which charts to pack as single texels: none while every chart fits the square with its padding.

    Thousands of specks (a noise field's floaters) would not fit even as bare padding squares; then
    the largest charts keep their boxes (half as many as could just fit, to leave them room to
    grow) and every other chart becomes one texel, without padding: it is smaller than a texel
    anyway, and its texel shows its centroid.

    Raises:
        ValueError: more specks than the square has texels.
    """
    specks = np.zeros(len(extent), dtype=bool)
    if _shelves(extent, 0.0, size, size) is not None:
        return specks
    largest_first = np.argsort(-(extent[:, 0] * extent[:, 1]), kind="stable")
    fewest, most = 0, len(extent)
    while fewest < most:  # the most boxes that fit above the specks' rows
        kept = (fewest + most + 1) // 2
        rows = -(-(len(extent) - kept) // size)
        if rows < size and _shelves(extent[largest_first[:kept]], 0.0, size, size - rows) is not None:
            fewest = kept
        else:
            most = kept - 1
    specks[largest_first[fewest // 2 :]] = True
    if -(-int(specks.sum()) // size) >= size:
        raise ValueError(f"{len(extent)} charts do not fit a {size}² atlas even as single texels")
    return specks


def _largest_scale(extent: np.ndarray, size: int, height: int) -> tuple[float, np.ndarray]:
    """The largest texels-per-unit scale at which the boxes shelf-pack into ``size`` × ``height`` texels,
    and each box's corner (the boxes fit at scale 0: ``_specks`` made sure)."""
    area = float((extent[:, 0] * extent[:, 1]).sum()) + 1e-300
    low, high = 0.0, size / np.sqrt(area)  # no packing beats the boxes' total area
    best = _shelves(extent, low, size, height)
    assert best is not None, "_specks leaves only boxes that fit"
    for _ in range(16):
        middle = (low + high) / 2
        placed = _shelves(extent, middle, size, height)
        if placed is None:
            high = middle
        else:
            low, best = middle, placed
    return low, best


def _shelves(extent: np.ndarray, scale: float, size: int, height: int) -> np.ndarray | None:
    """Each box's lower corner in texels, shelf-packed tallest first at ``scale`` into ``size`` × ``height``
    texels; None if they do not fit."""
    boxes = np.ceil(extent * scale).astype(np.int64) + 2 * CHART_PADDING
    if (boxes[:, 0] > size).any() or (boxes[:, 1] > height).any():
        return None
    order = np.argsort(-boxes[:, 1], kind="stable")
    corners = np.zeros((len(boxes), 2))
    x = y = shelf_height = 0
    for index in order.tolist():
        box_width, box_height = boxes[index]
        if x + box_width > size:
            x, y, shelf_height = 0, y + shelf_height, 0
        if shelf_height == 0:
            shelf_height = int(box_height)
        if y + shelf_height > height:
            return None
        corners[index] = (x, y)
        x += int(box_width)
    return corners
