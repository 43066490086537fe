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

Each level is held on the box of the active blocks above it only, and its new points are listed
from those blocks (``_points_between``), so the bookkeeping makes and walks no array of the whole
R³ grid: its work follows the band's points, plus a few passes over bytes of that box at the finer
levels' resolution. scikit-image gets the grid from its origin to the far corner of the box (so
that it rounds vertices exactly as on the whole grid) and walks those cells only.

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
    sampler = _Sampler(density_at, resolution, radius)
    if extraction == "band":
        cells = _band_cells(sampler, threshold)
    else:
        density = sampler.checked(density_at(grid_points(resolution, radius)), resolution**3)
        cells = _Level.whole_grid(resolution, density)
    grid_ms = _elapsed_ms(started)
    started = time.perf_counter()
    vertices, faces = _mesh(sampler, cells, threshold)
    return Surface(vertices, faces, sampler.evaluated, {"grid": grid_ms, "marching_cubes": _elapsed_ms(started)})


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
    sampler = _Sampler(_never_asked, resolution, radius)
    return _mesh(sampler, _Level.whole_grid(resolution, sampler.checked(density, resolution**3)), threshold)


def colors_to_uint8(color: np.ndarray) -> np.ndarray:
    """Decoder colours (sigmoid RGB, ``FP32 [V, 3]``) to uint8 as trimesh does: ``round(c·255)``, clipped."""
    return np.clip(np.round(color.astype(np.float32) * 255), 0, 255).astype(np.uint8)


class _Sampler:
    """The density field asked at grid points, with the count and range of what it answered."""

    def __init__(self, density_at: DensityField, resolution: int, radius: float) -> None:
        self.density_at = density_at
        self.resolution = resolution
        self.radius = radius
        self.axis = _axis_coordinates(resolution, radius)
        self.evaluated = 0
        self.lowest, self.highest = np.inf, -np.inf

    def sample(self, i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
        """The densities at the grid points ``(i[n], j[n], k[n])``."""
        if len(i) == 0:
            return np.zeros(0, dtype=np.float32)
        return self.checked(self.density_at(np.stack([self.axis[i], self.axis[j], self.axis[k]], axis=1)), len(i))

    def checked(self, density: np.ndarray, count: int) -> np.ndarray:
        """``density`` as FP32 [count], counted into what the field answered."""
        density = np.asarray(density, dtype=np.float32).reshape(-1)
        if len(density) != count:
            raise ValueError(f"the density field returned {len(density)} values for {count} points")
        self.evaluated += count
        self.lowest = min(self.lowest, float(density.min()))
        self.highest = max(self.highest, float(density.max()))
        return density

    def range_text(self) -> str:
        return f"{self.lowest:.4g} to {self.highest:.4g}"


@dataclass(frozen=True)
class _Level:
    """One level of the band on a box of the grid: its lattice (grid indices along each axis), the
    densities at the lattice's points (zero where none was needed), and which blocks between
    consecutive lattice points are active (None: all of them)."""

    lattices: tuple[np.ndarray, np.ndarray, np.ndarray]
    values: np.ndarray
    active: np.ndarray | None

    @classmethod
    def whole_grid(cls, resolution: int, density: np.ndarray) -> _Level:
        """Every grid point and every cell."""
        return cls((np.arange(resolution),) * 3, density.reshape((resolution,) * 3), None)

    @classmethod
    def sampled(cls, sampler: _Sampler, lattice: np.ndarray) -> _Level:
        """Every point of ``lattice`` (along each axis) sampled, every block active."""
        i, j, k = (axis.reshape(-1) for axis in np.meshgrid(lattice, lattice, lattice, indexing="ij"))
        values = sampler.sample(i, j, k).reshape((len(lattice),) * 3)
        return cls((lattice,) * 3, values, np.ones((len(lattice) - 1,) * 3, dtype=bool))

    def around_active(self) -> _Level | None:
        """This level cut to the box of its active blocks; None when none is active."""
        assert self.active is not None, "a level of the band has chosen its blocks"
        blocks = []
        for axis in range(3):
            active = np.flatnonzero(self.active.any(axis=tuple(other for other in range(3) if other != axis)))
            if len(active) == 0:
                return None
            blocks.append(slice(int(active[0]), int(active[-1]) + 1))
        points = tuple(slice(axis.start, axis.stop + 1) for axis in blocks)
        return _Level(tuple(lattice[axis] for lattice, axis in zip(self.lattices, points)), self.values[points],
                      self.active[tuple(blocks)])

    def refined(self, sampler: _Sampler, finer: np.ndarray) -> _Level:
        """The ``finer`` lattice (one that holds this one) over this level's box, with the points in
        active blocks sampled and its blocks inside active ones active."""
        assert self.active is not None, "a level of the band has chosen its blocks"
        lattices = tuple(finer[(finer >= lattice[0]) & (finer <= lattice[-1])] for lattice in self.lattices)
        starts = [np.searchsorted(fine, lattice) for fine, lattice in zip(lattices, self.lattices)]
        values = np.zeros([len(fine) for fine in lattices], dtype=np.float32)
        values[np.ix_(*starts)] = self.values
        i, j, k = _points_between(self.active, starts)
        values[i, j, k] = sampler.sample(lattices[0][i], lattices[1][j], lattices[2][k])
        inside = self.active
        for axis, start in enumerate(starts):
            # Each block holds the finer blocks from its first point to its last.
            inside = np.repeat(inside, np.diff(start), axis=axis)
        return _Level(lattices, values, inside)


def _band_cells(sampler: _Sampler, threshold: float) -> _Level | None:
    """The box of the grid around the band, with the densities at every point of its cells to mesh
    (the active ones); None when no block holds the threshold."""
    resolution = sampler.resolution
    low, high = threshold * np.exp(-BAND_MARGIN), threshold * np.exp(BAND_MARGIN)
    level: _Level | None = None
    for stride in [stride for stride in BAND_STRIDES if stride < resolution - 1] + [1]:
        lattice = _lattice(resolution, stride)
        if level is None:
            level = _Level.sampled(sampler, lattice)
        else:
            boxed = level.around_active()
            if boxed is None:
                return None
            level = boxed.refined(sampler, lattice)
        if stride == 1:
            return level
        inside = level.active
        active = _holds_band(level.values, low, high) & inside
        level = _Level(level.lattices, level.values, _dilate(active, BAND_DILATION) & inside)
    raise AssertionError("the last level is the grid")


def _points_between(active: np.ndarray, starts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices on a finer lattice of its points in an ``active`` block (its faces included) that are
    not points of the block's lattice (at finer indices ``starts`` along each axis): each point
    once, without an array of the finer lattice's size.

    Along one axis, a finer point ``offset`` > 0 points after a block's first one lies in that
    block only, and one at offset 0 is a point of the coarser lattice, on the faces of the blocks
    before and after it. So for each offset along the three axes the points form a grid over the
    blocks (over the coarser points at offset 0), and a point is wanted where one of its blocks is
    active. The points at offset 0 along every axis are the coarser lattice's, sampled before."""
    lengths = [np.diff(start) for start in starts]
    found = []
    for offsets in itertools.product(*(range(int(length.max())) for length in lengths)):
        if not any(offsets):
            continue
        wanted, positions = active, []
        for axis, (offset, start, length) in enumerate(zip(offsets, starts, lengths)):
            if offset:
                blocks = np.flatnonzero(length > offset)
                wanted = wanted.take(blocks, axis=axis)
                positions.append(start[blocks] + offset)
            else:
                wanted = _either_side(wanted, axis)
                positions.append(start)
        found.append([position[hit] for position, hit in zip(positions, np.nonzero(wanted))])
    i, j, k = (np.concatenate(axis) for axis in zip(*found))
    return i, j, k


def _holds_band(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Which blocks between lattice points have corner values both at most ``high`` and at least ``low``."""
    # The lowest and highest of the 8 corners, one axis at a time: 3 passes instead of 7.
    lowest = highest = values
    for axis in range(3):
        first, second = [slice(None)] * 3, [slice(None)] * 3
        first[axis], second[axis] = slice(None, -1), slice(1, None)
        lowest = np.minimum(lowest[tuple(first)], lowest[tuple(second)])
        highest = np.maximum(highest[tuple(first)], highest[tuple(second)])
    return (lowest <= high) & (highest >= low)


def _mesh(sampler: _Sampler, cells: _Level | None, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes over the active cells of a box of the grid, in world coordinates."""
    level = np.float32(threshold)
    if cells is None or not sampler.lowest <= level <= sampler.highest:
        raise _no_surface(sampler, threshold)
    volume, mask = cells.values, None
    if cells.active is not None:
        # scikit-image rounds vertices to FP32 in the coordinates of the volume it is given, and
        # drops a triangle as degenerate where two corners round to one point: the volume starts
        # at the grid's origin, as the dense grid does, so that the same triangles are dropped. It
        # ends where the band's box ends, so that it walks no cell beyond the band. It reads the
        # mask of the cell with lowest corner (i, j, k) at (i+1, j+1, k+1)
        # (tests/img2mesh/test_band_extraction.py checks band against dense meshes).
        box = tuple(slice(int(lattice[0]), int(lattice[-1]) + 1) for lattice in cells.lattices)
        volume = np.zeros([axis.stop for axis in box], dtype=np.float32)
        volume[box] = cells.values
        mask = np.zeros(volume.shape, dtype=bool)
        mask[tuple(slice(axis.start + 1, axis.stop) for axis in box)] = cells.active
        if not volume.max() >= level:  # scikit-image's condition on the whole volume (its zeros are below)
            raise _no_surface(sampler, threshold)
    try:
        vertices, faces, _, _ = lewiner_marching_cubes(
            volume, level, mask=mask, gradient_direction="ascent", allow_degenerate=False
        )
    except RuntimeError:  # scikit-image: "No surface found at the given iso value."
        raise _no_surface(sampler, threshold) from None
    world = vertices / (sampler.resolution - 1) * (2 * sampler.radius) - sampler.radius
    return world.astype(np.float32), faces.astype(np.int32)


def _no_surface(sampler: _Sampler, threshold: float) -> EmptyMesh:
    return EmptyMesh(
        f"no surface found at threshold {threshold}: the density ranges from {sampler.range_text()} over the grid; "
        "use a threshold inside that range (default 25.0) or send a photo with one clearly visible object"
    )


def _lattice(resolution: int, stride: int) -> np.ndarray:
    """Grid indices of a level's lattice along one axis: every ``stride``-th one, and the last."""
    return np.unique(np.append(np.arange(0, resolution, stride), resolution - 1))


def _either_side(blocks: np.ndarray, axis: int) -> np.ndarray:
    """Along ``axis``, one longer than ``blocks``: whether the block before or the one after each
    lattice point is set (none lies beyond the ends)."""
    padded = np.pad(blocks, [(1, 1) if other == axis else (0, 0) for other in range(3)])
    before, after = [slice(None)] * 3, [slice(None)] * 3
    before[axis], after[axis] = slice(None, -1), slice(1, None)
    return padded[tuple(before)] | padded[tuple(after)]


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
