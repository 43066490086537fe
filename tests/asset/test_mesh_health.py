"""A mesh's parts, loose flakes and holes, with UV-seam copies of a vertex welded into one."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from asset.mesh_health import LOOSE_PART_SHARE, mesh_health
from asset.mesh_preparation import prepare_mesh
from tests.support.textured_mesh import textured_product


def cube(side: float = 1.0, centre: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> trimesh.Trimesh:
    return trimesh.creation.box(extents=[side] * 3).apply_translation(centre)


def joined(*meshes: trimesh.Trimesh) -> tuple[np.ndarray, np.ndarray]:
    together = trimesh.util.concatenate(meshes)
    return np.asarray(together.vertices), np.asarray(together.faces)


def test_a_closed_cube_is_one_part_without_holes() -> None:
    health = mesh_health(*joined(cube()))
    assert (health.parts, health.loose_parts, health.loose_share, health.open_edges) == (1, 0, 0.0, 0.0)


def test_a_missing_side_is_a_hole_whose_rim_is_measured_in_the_largest_side() -> None:
    box = cube(side=2.0)
    top = box.face_normals[:, 2] > 0.5
    health = mesh_health(np.asarray(box.vertices), np.asarray(box.faces)[~top])
    assert health.parts == 1
    assert health.open_edges == pytest.approx(4 * 2.0 / 2.0)  # four rim edges of 2, in units of the side 2


def test_a_small_piece_beside_the_product_is_a_loose_flake() -> None:
    vertices, faces = joined(cube(), cube(side=0.1, centre=(2.0, 0.0, 0.0)))
    health = mesh_health(vertices, faces)
    assert (health.parts, health.loose_parts) == (2, 1)
    assert health.loose_share == pytest.approx(0.06 / 6.06)
    assert health.loose.sum() == 12 and health.loose[12:].all()  # the second cube's triangles


def test_a_second_part_of_comparable_size_is_no_flake() -> None:
    side = 1.2 * np.sqrt(LOOSE_PART_SHARE)  # its surface just above the share of the first cube's
    health = mesh_health(*joined(cube(), cube(side=side, centre=(3.0, 0.0, 0.0))))
    assert (health.parts, health.loose_parts, health.loose_share) == (2, 0, 0.0)


def test_copies_of_a_vertex_along_a_uv_seam_and_at_the_poles_are_welded() -> None:
    product = textured_product()
    prepared = prepare_mesh(product.vertices, product.faces, product.vertex_colors, uvs=product.uvs,
                            texture=product.texture)
    assert len(np.unique(prepared.positions, axis=0)) < len(prepared.positions)  # the seam is there
    health = mesh_health(prepared.positions, prepared.triangles)
    assert (health.parts, health.open_edges) == (1, 0.0)
    # Negative control: without the weld the seam would be an open edge from pole to pole.
    split = np.arange(len(prepared.triangles) * 3).reshape(-1, 3)
    unwelded = mesh_health(prepared.positions[prepared.triangles].reshape(-1, 3) + split.reshape(-1, 1) * 1e-3, split)
    assert unwelded.parts == len(prepared.triangles)
