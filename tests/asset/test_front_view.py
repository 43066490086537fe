"""The front view through TripoSR's camera: what covers which pixel, in which colour, framed by the
object's box; read back from a written GLB, a mirror in the file shows in the view."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import trimesh

from asset.front_view import Box, front_view, mask_box
from asset.glb import read_glb, write_glb
from asset.mesh_preparation import prepare_mesh, triposr_positions
from tests.support.textured_mesh import BLUE, GREEN, RED, SEMI_AXES, textured_product

SIZE = 200
FRAME = Box(20.0, 20.0, 180.0, 180.0)
"""The object's larger side becomes 160 pixels, centred at (100, 100)."""


def product_view(glb: bytes, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mesh = read_glb(glb)
    view = front_view(triposr_positions(mesh.positions, low, high), mesh.triangles, FRAME, SIZE, uvs=mesh.uvs,
                      texture=mesh.texture)
    return view.covered, view.colors


def test_the_front_view_is_the_products_outline_in_its_colours_left_left_and_top_up() -> None:
    product = textured_product()
    prepared = prepare_mesh(product.vertices, product.faces, product.vertex_colors, uvs=product.uvs,
                            texture=product.texture)
    low, high = product.vertices.min(axis=0), product.vertices.max(axis=0)
    covered, colors = product_view(write_glb(prepared), low, high)

    box = mask_box(covered)
    assert abs(box.side - FRAME.side) <= 2 and all(abs(a - b) <= 1.5 for a, b in zip(box.centre, FRAME.centre))
    rows, columns = np.nonzero(covered)
    width, height = np.ptp(columns) + 1, np.ptp(rows) + 1
    assert abs(width / height / (SEMI_AXES[1] / SEMI_AXES[2]) - 1) <= 0.03
    y, x = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    inside = ((x - 100) / (width / 2)) ** 2 + ((y - 100) / (height / 2)) ** 2 <= 1
    assert (covered & inside).sum() / (covered | inside).sum() > 0.97

    def colour_at(x: int, y: int) -> tuple[int, ...]:
        return tuple(int(channel) for channel in colors[y, x])

    assert colour_at(130, 80) == RED and colour_at(70, 80) == BLUE  # image-right is the product's right
    assert colour_at(110, 176) == GREEN  # the green band is at the bottom
    assert not covered[0, 0] and tuple(colors[0, 0]) == (0, 0, 0)

    # Negative control: a writer that mirrors the positions puts red on the left, and the outline
    # of the mirrored product is then the mirror image of the first.
    mirrored, mirrored_colors = product_view(write_glb(replace(prepared, positions=prepared.positions * [-1, 1, 1])),
                                             low, high)
    assert tuple(mirrored_colors[80, 70]) == RED and tuple(mirrored_colors[80, 130]) == BLUE
    assert (mirrored == covered[:, ::-1]).mean() > 0.99


def test_only_triangles_that_face_the_camera_by_their_winding_are_drawn() -> None:
    quad = np.array([[0.0, -0.5, -0.5], [0.0, 0.5, -0.5], [0.0, 0.5, 0.5], [0.0, -0.5, 0.5]])
    facing = np.array([[0, 1, 2], [0, 2, 3]])  # counter-clockwise seen from +X, the camera's side
    colors = np.full((4, 3), 200, dtype=np.uint8)
    view = front_view(quad, facing, FRAME, SIZE, colors=colors)
    assert view.covered[20:180, 20:180].all() and view.covered.sum() == 160 * 160
    assert (view.colors[view.covered] == 200).all()
    assert not front_view(quad, facing[:, ::-1], FRAME, SIZE, colors=colors).covered.any()


def test_the_nearest_surface_wins_and_the_framing_ignores_what_it_is_told_to() -> None:
    near = trimesh.creation.box(extents=[0.1, 1.0, 1.0]).apply_translation([0.3, 0.0, 0.0])
    far = trimesh.creation.box(extents=[0.1, 1.0, 1.0]).apply_translation([-0.3, 0.0, 0.0])
    flake = trimesh.creation.box(extents=[0.02] * 3).apply_translation([0.6, 0.45, 0.45])  # beyond a corner
    together = trimesh.util.concatenate([near, far, flake])
    colors = np.concatenate([np.full((len(mesh.vertices), 3), value, dtype=np.uint8) for mesh, value in
                             ((near, 10), (far, 250), (flake, 120))])
    product = np.arange(len(together.faces)) < len(near.faces) + len(far.faces)
    view = front_view(np.asarray(together.vertices), np.asarray(together.faces), FRAME, SIZE, colors=colors,
                      framing=product)
    box = mask_box(view.covered & (view.colors[..., 0] != 120))
    assert abs(box.side - FRAME.side) <= 1.5  # framed by the two plates, not by the flake
    assert (view.colors[view.covered & (view.colors[..., 0] != 120)] == 10).all()  # the near plate hides the far one
    assert (view.colors[..., 0] == 120).any()  # the flake is drawn all the same
