"""TripoSR's mesh extraction without torch: the query grid, narrow-band evaluation, marching cubes.

The grid and the vertex mapping follow ``TSR.extract_mesh`` / ``MarchingCubeHelper`` exactly
(docs/facts.md, "TripoSR mesh extraction"): ``linspace(0, 1, R)`` per axis onto ``[−radius,
radius]``, the surface ``density = threshold`` with the field positive inside.

Only the cells the surface passes through decide the mesh, and they are a thin shell of the R³
grid, so the default ``band`` extraction asks the density field for far fewer points than the
``dense`` one (every grid point, as TripoSR does) and gives the same mesh:

1. **Coarse lattice.** The field is evaluated on every ``stride``-th grid point (stride 4: 65³
   points at R = 256). Each block of ``stride³`` cells between lattice points is *active* when
   the range of its 8 corner densities, widened by the **band** (a factor ``exp(BAND_MARGIN)`` on
   each side of the threshold, i.e. ``BAND_MARGIN`` on the network's raw, pre-``exp`` output,
   which varies smoothly), contains the threshold. Active blocks are then **dilated** by
   ``BAND_DILATION`` blocks in every direction. The band catches a surface that passes between
   two lattice points without changing the sign at either (a thin part, a small component);
   the dilation catches one whose densities change faster than the band assumes.
2. **Finer lattices** (stride 2, then every grid point) are evaluated only inside the active
   blocks of the level above, and the same test picks the blocks to refine.
3. **Marching cubes** (scikit-image's Lewiner algorithm, whose ``mask`` skips cells) runs over the
   grid cells of the last level's active blocks only; every other grid value is never asked for.

A cell the band misses would be a hole in the mesh, so tests compare band and dense meshes on
analytic surfaces, thin plates and noise fields. ``dense`` evaluates and meshes the whole grid
with the same marching cubes, for comparison.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
from skimage.measure import marching_cubes as lewiner_marching_cubes

from img2mesh.errors import EmptyMesh

DEFAULT_RADIUS = 0.87
DEFAULT_CHUNK_SIZE = 8192

EXTRACTIONS = ("band", "dense")
DEFAULT_EXTRACTION = "band"
BAND_STRIDES = (4, 2)
"""Lattice strides of the levels above the full grid, coarsest first (each divides the one before).

The coarse stride 4 is the decoder's triplane texel at R = 256 (64 texels over the grid's 255
cells), so the first level samples the field about as finely as the triplanes describe it."""
BAND_MARGIN = 0.25
"""Half-width of the band around the threshold, in raw (log-density) units: a factor 1.28 on density.

Measured with strides (8, 2) on a noise field (random weights in the official layout, 256³):
without it, one block of dilation missed a few dozen of 18 302 components; with it, the band mesh
equaled the dense one. With strides (4, 2) it finds a plate two cells thin between two coarse
lattice planes while the raw density changes by up to 30 per unit of length (3× the bench's
analytic ball); a part thinner than a coarse block whose density rises and falls faster than
that between two lattice points can be missed."""
BAND_DILATION = 1
"""Active blocks grow by this many blocks in every direction at each level.

Both levels need it. Measured at 256³ on official-size weights (a dense grid, then the band's
points looked up in it): without the dilation of the last level (stride 2) the band asks for 23 %
fewer points on the bench's analytic ball with the same mesh, but on a noise field (random
weights) it loses 1,760 of 21.1 M faces; with it both meshes equal the dense ones."""

DensityField = Callable[[np.ndarray], np.ndarray]
"""World points FP32 [N, 3] → activated density (``exp(raw − 1)``) FP32 [N]."""


@dataclass(frozen=True)
class Surface:
    """The iso-surface in world coordinates, and what extracting it cost."""

    vertices: np.ndarray
    faces: np.ndarray
    points_evaluated: int
    timings_ms: dict[str, float] = field(default_factory=dict)


def grid_points(resolution: int, radius: float = DEFAULT_RADIUS) -> np.ndarray:
    """The ``FP32 [R³, 3]`` query points: ``linspace(0, 1, R)`` per axis mapped onto ``[−radius, radius]``.

    Flat index ``i·R² + j·R + k`` holds ``(x_i, y_j, z_k)`` (meshgrid "ij", C order), so the
    decoder's densities reshape straight into an ``(R, R, R)`` volume with axes (x, y, z).
    """
    axis = _axis_coordinates(resolution, radius)
    points = np.empty((resolution, resolution, resolution, 3), dtype=np.float32)
    points[..., 0] = axis[:, None, None]
    points[..., 1] = axis[None, :, None]
    points[..., 2] = axis[None, None, :]
    return points.reshape(-1, 3)


def iter_chunks(points: np.ndarray, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[np.ndarray]:
    """Consecutive row slices (views) of ``points`` of at most ``chunk_size`` rows, for chunked decoding."""
    for start in range(0, len(points), chunk_size):
        yield points[start : start + chunk_size]


def extract_surface(
    density_at: DensityField,
    resolution: int,
    threshold: float,
    *,
    extraction: str = DEFAULT_EXTRACTION,
    radius: float = DEFAULT_RADIUS,
) -> Surface:
    """Mesh the surface ``density = threshold`` of a field on the R³ grid.

    ``density_at`` is asked for the density at batches of world points (the grid points the
    chosen ``extraction`` needs, each point once).

    Raises:
        EmptyMesh: the density never crosses the threshold, so there is no surface.
        ValueError: an unknown ``extraction``.
    """
    if extraction not in EXTRACTIONS:
        raise ValueError(f"extraction must be one of {', '.join(EXTRACTIONS)}, got {extraction!r}")
    started = time.perf_counter()
    grid = _SampledGrid(density_at, resolution, radius)
    if extraction == "dense":
        grid.sample(np.ones((resolution,) * 3, dtype=bool))
        cells = None
    else:
        cells = _band_cells(grid, threshold)
    grid_ms = _elapsed_ms(started)
    started = time.perf_counter()
    vertices, faces = _mesh(grid, cells, threshold)
    return Surface(vertices, faces, grid.evaluated, {"grid": grid_ms, "marching_cubes": _elapsed_ms(started)})


def marching_cubes(
    density: np.ndarray,
    resolution: int,
    threshold: float,
    radius: float = DEFAULT_RADIUS,
) -> tuple[np.ndarray, np.ndarray]:
    """The iso-surface ``density == threshold`` of a dense grid as ``(vertices FP32 [V, 3], faces INT32 [F, 3])``.

    ``density`` holds the activated densities at :func:`grid_points`, flat ``[R³]`` or
    ``[R, R, R]``. Vertices are mapped like the grid, ``index / (R − 1)`` onto ``[−radius,
    radius]``; faces wind counter-clockwise seen from outside.

    Raises:
        EmptyMesh: the density never crosses the threshold, so there is no surface.
        ValueError: ``density`` does not hold ``resolution³`` values (a caller bug, not bad input).
    """
    if density.size != resolution**3:
        raise ValueError(f"density has {density.size} values, expected resolution³ = {resolution**3}")
    grid = _SampledGrid(_never_asked, resolution, radius)
    grid.values[...] = density.reshape(grid.values.shape)
    grid.known[...] = True
    return _mesh(grid, None, threshold)


def colors_to_uint8(color: np.ndarray) -> np.ndarray:
    """Decoder colours (sigmoid RGB, ``FP32 [V, 3]``) to uint8 as trimesh does: ``round(c·255)``, clipped."""
    return np.clip(np.round(color.astype(np.float32) * 255), 0, 255).astype(np.uint8)


class _SampledGrid:
    """The R³ grid's densities, asked of the field point by point as the extraction needs them."""

    def __init__(self, density_at: DensityField, resolution: int, radius: float) -> None:
        self.density_at = density_at
        self.resolution = resolution
        self.radius = radius
        self.axis = _axis_coordinates(resolution, radius)
        self.values = np.zeros((resolution,) * 3, dtype=np.float32)
        self.known = np.zeros((resolution,) * 3, dtype=bool)
        self.evaluated = 0

    def sample(self, needed: np.ndarray) -> None:
        """Evaluate the field at the ``needed`` grid points (a boolean R³ mask) not known yet."""
        # Flat indices: the R³ arrays are large, and one index array per point is cheaper than three.
        flat = np.flatnonzero(needed & ~self.known)
        if len(flat) == 0:
            return
        i, j, k = np.unravel_index(flat, self.values.shape)
        points = np.stack([self.axis[i], self.axis[j], self.axis[k]], axis=1)
        density = np.asarray(self.density_at(points), dtype=np.float32).reshape(-1)
        if len(density) != len(flat):
            raise ValueError(f"the density field returned {len(density)} values for {len(flat)} points")
        self.values.reshape(-1)[flat] = density
        self.known.reshape(-1)[flat] = True
        self.evaluated += len(flat)

    def range_text(self) -> str:
        known = self.values[self.known]
        return f"{float(known.min()):.4g} to {float(known.max()):.4g}"


def _band_cells(grid: _SampledGrid, threshold: float) -> np.ndarray:
    """The grid cells to mesh ([R−1]³ booleans), evaluating the field only where they may be."""
    resolution = grid.resolution
    strides = [stride for stride in BAND_STRIDES if stride < resolution - 1]
    low, high = threshold * np.exp(-BAND_MARGIN), threshold * np.exp(BAND_MARGIN)
    parent: tuple[np.ndarray, np.ndarray] | None = None  # lattice indices and active blocks of the level above
    for stride in strides:
        lattice = _lattice(resolution, stride)
        inside = _blocks_inside(lattice, parent)
        grid.sample(_corner_points(inside, lattice, resolution))
        values = grid.values[np.ix_(lattice, lattice, lattice)]
        lowest, highest = _corner_extremes(values)
        active = inside & (lowest <= high) & (highest >= low)
        parent = (lattice, _dilate(active, BAND_DILATION) & _blocks_inside(lattice, parent))
    cells = _blocks_inside(np.arange(resolution), parent)
    grid.sample(_corner_points(cells, np.arange(resolution), resolution))
    return cells


def _mesh(grid: _SampledGrid, cells: np.ndarray | None, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes over ``cells`` (None: every cell) of the sampled grid, in world coordinates."""
    resolution = grid.resolution
    mask = None
    if cells is not None:
        # scikit-image reads the mask of the cell with lowest corner (i, j, k) at (i+1, j+1, k+1)
        # (tests/img2mesh/test_mesh_extraction.py checks band against dense meshes).
        mask = np.zeros((resolution,) * 3, dtype=bool)
        mask[1:, 1:, 1:] = cells
    known = grid.values[grid.known] if cells is not None else grid.values
    level = np.float32(threshold)
    crosses = cells is None or cells.any()
    if not crosses or not (known.min() <= level <= known.max()):
        raise _no_surface(grid, threshold)
    try:
        vertices, faces, _, _ = lewiner_marching_cubes(
            grid.values, level, mask=mask, gradient_direction="ascent", allow_degenerate=False
        )
    except RuntimeError:  # scikit-image: "No surface found at the given iso value."
        raise _no_surface(grid, threshold) from None
    world = vertices / (resolution - 1) * (2 * grid.radius) - grid.radius
    return world.astype(np.float32), faces.astype(np.int32)


def _no_surface(grid: _SampledGrid, threshold: float) -> EmptyMesh:
    return EmptyMesh(
        f"no surface found at threshold {threshold}: the density ranges from {grid.range_text()} over the grid; "
        "use a threshold inside that range (default 25.0) or send a photo with one clearly visible object"
    )


def _lattice(resolution: int, stride: int) -> np.ndarray:
    """Grid indices of a level's lattice along one axis: every ``stride``-th one, and the last."""
    return np.unique(np.append(np.arange(0, resolution, stride), resolution - 1))


def _blocks_inside(lattice: np.ndarray, parent: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    """Which blocks between ``lattice`` points lie in an active block of the level above (all at the top)."""
    blocks = len(lattice) - 1
    if parent is None:
        return np.ones((blocks,) * 3, dtype=bool)
    parent_lattice, parent_active = parent
    owner = np.searchsorted(parent_lattice, lattice[:-1], side="right") - 1
    # ``owner`` never decreases, so repeating each parent block along every axis is the same as
    # gathering ``parent_active[owner, owner, owner]``, without an index per element of R³.
    children = np.bincount(owner, minlength=len(parent_lattice) - 1)
    inside = parent_active
    for axis in range(3):
        inside = np.repeat(inside, children, axis=axis)
    return inside


def _corner_points(blocks: np.ndarray, lattice: np.ndarray, resolution: int) -> np.ndarray:
    """The R³ mask of the grid points that are corners of the given blocks."""
    # A point is a corner of a block when a block starts at it or ends at it along every axis:
    # one axis at a time, 3 passes instead of 8.
    corners = blocks
    for axis in range(3):
        grown_shape = list(corners.shape)
        grown_shape[axis] += 1
        grown = np.zeros(grown_shape, dtype=bool)
        start, end = [slice(None)] * 3, [slice(None)] * 3
        start[axis], end[axis] = slice(None, -1), slice(1, None)
        grown[tuple(start)] = corners
        grown[tuple(end)] |= corners
        corners = grown
    if len(lattice) == resolution:
        return corners
    points = np.zeros((resolution,) * 3, dtype=bool)
    points[np.ix_(lattice, lattice, lattice)] = corners
    return points


def _corner_extremes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The lowest and highest of the 8 corner values of every block."""
    n = values.shape[0] - 1
    corners = (values[a : n + a, b : n + b, c : n + c] for a, b, c in itertools.product((0, 1), repeat=3))
    lowest = next(corners).copy()
    highest = lowest.copy()
    for corner in corners:
        np.minimum(lowest, corner, out=lowest)
        np.maximum(highest, corner, out=highest)
    return lowest, highest


def _dilate(active: np.ndarray, reach: int) -> np.ndarray:
    """``active`` grown by ``reach`` blocks along every axis (a cube, applied one axis at a time)."""
    grown = active.copy()
    for axis in range(3):
        spread = grown.copy()
        for shift in range(1, reach + 1):
            ahead = [slice(None)] * 3
            behind = [slice(None)] * 3
            ahead[axis], behind[axis] = slice(shift, None), slice(None, -shift)
            spread[tuple(ahead)] |= grown[tuple(behind)]
            spread[tuple(behind)] |= grown[tuple(ahead)]
        grown = spread
    return grown


def _never_asked(points: np.ndarray) -> np.ndarray:
    raise AssertionError("a dense grid is fully known")


def _axis_coordinates(resolution: int, radius: float) -> np.ndarray:
    """``linspace(0, 1, R)`` mapped onto ``[−radius, radius]``, both ends included."""
    return (np.linspace(0.0, 1.0, resolution) * (2 * radius) - radius).astype(np.float32)


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000.0, 2)
