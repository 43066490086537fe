"""The projection unwrap and the vectorised atlas rasteriser, on analytic meshes.

Every covered texel shows a point of its own triangle, charts never overlap (also on a ramp that
winds around its own projection direction), every triangle reaches the texture, and the padding
gives every texel next to a chart that chart's colour.
"""

from __future__ import annotations

import numpy as np
import pytest

from img2mesh import texture_baking
from img2mesh.atlas_rasterization import overlapping_triangles, rasterize, texel_pairs
from img2mesh.mesh_extraction import extract_surface
from img2mesh.uv_unwrapping import CHART_PADDING, unwrap

SIZE = 512


def mug_like(points: np.ndarray) -> np.ndarray:
    """A hollow cylinder with a bottom: inner walls that project onto outer ones, and sharp rims."""
    radius = np.hypot(points[:, 0], points[:, 1])
    body = np.maximum(radius - 0.5, np.abs(points[:, 2]) - 0.5)
    hollow = np.maximum(radius - 0.4, -0.35 - points[:, 2])
    return (25.0 * np.exp(-10.0 * np.maximum(body, -hollow))).astype(np.float32)


@pytest.fixture(scope="module")
def atlas() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(positions, faces, uvs, owners, weights)`` of the decimated mug-like mesh's atlas."""
    surface = extract_surface(mug_like, 96, 25.0)
    vertices, faces = texture_baking.decimate(surface.vertices, surface.faces, 8_000)
    mapping, atlas_faces, uvs = unwrap(vertices, faces, SIZE)
    owners, weights = rasterize(uvs, atlas_faces, SIZE)
    return vertices[mapping], atlas_faces, uvs, owners, weights


def test_the_rasteriser_finds_exactly_the_texel_centres_inside_each_triangle() -> None:
    rng = np.random.default_rng(3)
    uvs = rng.uniform(0.05, 0.95, size=(60, 2))
    faces = rng.integers(0, 60, size=(40, 3))
    texels, triangles = texel_pairs(uvs, faces, 64)
    centres = (np.stack(np.meshgrid(np.arange(64), np.arange(64), indexing="xy"), -1).reshape(-1, 2) + 0.5) / 64
    for index, face in enumerate(faces):
        corners = np.broadcast_to(uvs[face], (len(centres), 3, 2))
        a, b, c = corners[:, 0], corners[:, 1], corners[:, 2]
        sides = [np.cross(q - p, centres - p) for p, q in ((a, b), (b, c), (c, a))]
        inside = (np.all(np.stack(sides) > 1e-9, axis=0) | np.all(np.stack(sides) < -1e-9, axis=0))
        found = set(texels[triangles == index].tolist())
        assert set(np.flatnonzero(inside).tolist()) <= found, index
        assert len(found - set(np.flatnonzero(inside).tolist())) <= 2 * 64, index  # only centres on an edge


def test_every_covered_texel_shows_a_point_of_its_own_triangle(atlas) -> None:  # type: ignore[no-untyped-def]
    positions, faces, uvs, owners, weights = atlas
    covered = np.flatnonzero(owners >= 0)
    texel_weights = weights.reshape(-1, 3)[covered]
    assert (texel_weights >= 0).all() and np.allclose(texel_weights.sum(axis=1), 1, atol=1e-6)
    # The point's UV is the texel's centre, or within a texel of it for a triangle's centroid texel.
    uv = np.einsum("nk,nkd->nd", texel_weights, uvs[faces[owners.reshape(-1)[covered]]]) * SIZE
    rows, columns = np.divmod(covered, SIZE)
    offset = np.abs(uv - np.stack([columns + 0.5, rows + 0.5], axis=1))
    assert offset.max() <= 1.0
    assert np.mean(offset.max(axis=1) < 1e-3) > 0.99
    _, points = texture_baking.texel_points(positions, faces, owners, weights)
    corners = positions[faces[owners.reshape(-1)[covered]]]
    np.testing.assert_allclose(points, np.einsum("nk,nkd->nd", texel_weights, corners), atol=1e-5)


def test_charts_do_not_overlap_and_keep_their_padding(atlas) -> None:  # type: ignore[no-untyped-def]
    _, faces, uvs, owners, _ = atlas
    # No texel centre lies strictly inside two triangles, so no texel has two surface points to show
    # (a sliver of overlap between texel centres, where a decimated mesh folds, shows no texel).
    assert len(overlapping_triangles(uvs, faces, SIZE)) == 0
    # Two triangles of different charts are never closer than the padding: a texel's 4-neighbours
    # within the padding belong to its own chart (charts = connected UV islands).
    chart = _uv_islands(faces, len(uvs))[owners]
    chart[owners < 0] = -1
    for shift in range(1, CHART_PADDING + 1):
        for a, b in ((chart[shift:], chart[:-shift]), (chart[:, shift:], chart[:, :-shift])):
            both = (a >= 0) & (b >= 0)
            assert (a[both] == b[both]).all()


def test_every_triangle_reaches_the_texture(atlas) -> None:  # type: ignore[no-untyped-def]
    positions, faces, uvs, owners, weights = atlas
    shown = np.zeros(len(faces), dtype=bool)
    shown[owners[owners >= 0]] = True
    # A triangle too thin to hold a texel centre of its own lies under a texel that shows a
    # neighbour of it (a triangle sharing a vertex), within a texel of its own surface.
    centroid = np.clip((uvs[faces].mean(axis=1) * SIZE).astype(int), 0, SIZE - 1)
    owner = owners[centroid[:, 1], centroid[:, 0]]
    missing = np.flatnonzero(~shown)
    print(f"\n{len(missing)} of {len(faces)} triangles hold no texel centre of their own")
    neighbour = owner[missing] >= 0
    welded = np.unique(positions, axis=0, return_inverse=True)[1].reshape(-1)[faces]
    shares = [(set(welded[face]) & set(welded[other])) != set() for face, other in zip(missing, owner[missing])]
    assert neighbour.all() and all(shares)


def test_padding_gives_texels_next_to_a_chart_its_colour(atlas) -> None:  # type: ignore[no-untyped-def]
    positions, faces, uvs, owners, weights = atlas
    flat, points = texture_baking.texel_points(positions, faces, owners, weights)
    colours = np.zeros((SIZE * SIZE, 3), dtype=np.uint8)
    colours[flat] = np.round((points + 0.87) / 1.74 * 255).astype(np.uint8)
    padded = texture_baking.pad(colours.reshape(SIZE, SIZE, 3), owners >= 0)
    covered = owners >= 0
    np.testing.assert_array_equal(padded[covered], colours.reshape(SIZE, SIZE, 3)[covered])
    beside = np.roll(covered, 1, 0) | np.roll(covered, -1, 0) | np.roll(covered, 1, 1) | np.roll(covered, -1, 1)
    ring = ~covered & beside
    for row, column in zip(*np.nonzero(ring)):
        neighbours = [(row + dr, column + dc) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))
                      if 0 <= row + dr < SIZE and 0 <= column + dc < SIZE and covered[row + dr, column + dc]]
        assert any((padded[row, column] == padded[n]).all() for n in neighbours)


def test_a_ramp_that_winds_around_its_direction_is_cut_until_nothing_overlaps() -> None:
    # A helicoid strip of one and a half turns, all its normals near +z: its projection along z
    # covers itself, so the one chart it starts as must be cut.
    radius, angle = np.meshgrid(np.linspace(0.3, 0.6, 6), np.linspace(0, 3 * np.pi, 181), indexing="ij")
    vertices = np.stack([radius * np.cos(angle), radius * np.sin(angle), 0.02 * angle], -1).reshape(-1, 3)
    index = np.arange(vertices.shape[0]).reshape(radius.shape)
    a, b, c, d = index[:-1, :-1], index[1:, :-1], index[:-1, 1:], index[1:, 1:]
    faces = np.concatenate([np.stack([a, b, d], -1).reshape(-1, 3), np.stack([a, d, c], -1).reshape(-1, 3)])
    mapping, atlas_faces, uvs = unwrap(vertices.astype(np.float32), faces.astype(np.int32), 256)
    assert len(atlas_faces) == len(faces)
    assert len(overlapping_triangles(uvs, atlas_faces, 256)) == 0
    assert len(np.unique(_uv_islands(atlas_faces, len(uvs)))) >= 2


def test_thousands_of_specks_that_cannot_all_have_boxes_get_a_texel_each() -> None:
    # 3,000 tetrahedra a fifth of a texel wide (a noise field's floaters): ~12,000 charts, where a
    # 128² atlas holds ~1,000 boxes with their padding.
    rng = np.random.default_rng(5)
    corners = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float64) * 0.001
    vertices = (rng.uniform(-0.8, 0.8, size=(3000, 1, 3)) + corners).reshape(-1, 3)
    faces = (np.arange(3000)[:, None, None] * 4 + np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])).reshape(-1, 3)
    mapping, atlas_faces, uvs = unwrap(vertices.astype(np.float32), faces.astype(np.int32), 128)
    assert len(atlas_faces) == len(faces) and (0 <= uvs).all() and (uvs <= 1).all()
    assert len(overlapping_triangles(uvs, atlas_faces, 128)) == 0
    owners, _ = rasterize(uvs, atlas_faces, 128)
    texel = np.clip((uvs[atlas_faces].mean(axis=1) * 128).astype(int), 0, 127)
    owner = owners[texel[:, 1], texel[:, 0]]
    tetrahedron = mapping[atlas_faces[:, 0]] // 4
    assert (owner >= 0).all() and (tetrahedron[owner] == tetrahedron).all()


def _uv_islands(faces: np.ndarray, vertex_count: int) -> np.ndarray:
    """The island (connected through shared atlas vertices) of each atlas vertex."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]]])
    graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(vertex_count, vertex_count))
    labels = connected_components(graph, directed=False)[1]
    return labels[faces[:, 0]]
