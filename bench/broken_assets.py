"""Deliberately broken assets: what known failures leave in an asset's files, for the quality check.

Each takes a good mesh as Triton returned it (the TripoSR world frame) and writes the GLB the broken
pipeline would have written, with the box of the mesh Triton returned beside it (the check places
the file's mesh back in TripoSR's world by it):

* **part removed**: the top fifth of the product is gone (a part TripoSR or the mesher lost);
* **texture flipped**, **texture mirrored**: the GLB writer put the texture in upside down, or
  mirrored left to right;
* **mesh mirrored**: the writer mirrored the positions left to right (a wrong axis conversion);
* **loose flakes**: small loose pieces float around the product (a mask's specks, the network's
  floaters);
* **slab of the whole frame** (:func:`whole_frame_cut_out`): the mesh of a cut-out whose mask took
  the whole frame, background and all, which the check compares with the product's own cut-out.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import trimesh
from PIL import Image

from asset.glb import write_glb
from asset.material import Material
from asset.mesh_preparation import PreparedMesh, prepare_mesh
from asset.real_size import RealSize
from client_worker.pipeline.inference import MeshResult
from client_worker.pipeline.presets import Preset
from img2mesh.image_decoding import decode_image

REMOVED_SHARE = 0.2
"""The share of the product's height, from the top, that "part removed" takes away."""
FLAKES = 6
FLAKE_SIDE = 0.03
"""Loose cubes of this side (TripoSR units: the framed product is about 1.5 across), a grid cell or
two at the presets' resolutions."""


@dataclass(frozen=True)
class BrokenAsset:
    """A broken asset's GLB and the TripoSR-frame box of the mesh it was written from."""

    name: str
    glb: bytes
    world_low: np.ndarray
    world_high: np.ndarray


def broken_assets(mesh: MeshResult, preset: Preset, size: RealSize) -> list[BrokenAsset]:
    """Every broken variant of ``mesh`` but the slab (which needs a mesh of its own)."""
    material = Material(texture_format=preset.texture_format)
    good = _prepared(mesh, size)
    low, high = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)

    def written(name: str, change: Callable[[PreparedMesh], PreparedMesh]) -> BrokenAsset:
        return BrokenAsset(name, write_glb(change(good), material), low, high)

    mirror_x = np.array([-1.0, 1.0, 1.0])  # glTF x is image-right
    top = np.quantile(mesh.vertices[:, 2], 1 - REMOVED_SHARE)  # TripoSR z is up
    kept = mesh.faces[(mesh.vertices[mesh.faces, 2] < top).all(axis=1)]
    flaky = _with_flakes(mesh)
    return [
        BrokenAsset("part removed", write_glb(_prepared(replace(mesh, faces=kept), size), material), low, high),
        written("texture flipped", lambda prepared: replace(prepared, texture=_texture(prepared)[::-1])),
        written("texture mirrored", lambda prepared: replace(prepared, texture=_texture(prepared)[:, ::-1])),
        written("mesh mirrored", lambda prepared: replace(prepared, positions=prepared.positions * mirror_x)),
        BrokenAsset("loose flakes", write_glb(_prepared(flaky, size), material), flaky.vertices.min(axis=0),
                    flaky.vertices.max(axis=0)),
    ]


def slab(mesh: MeshResult, preset: Preset, size: RealSize) -> BrokenAsset:
    """The GLB of ``mesh``, the mesh Triton made of :func:`whole_frame_cut_out`'s photo."""
    glb = write_glb(_prepared(mesh, size), Material(texture_format=preset.texture_format))
    return BrokenAsset("slab of the whole frame", glb, mesh.vertices.min(axis=0), mesh.vertices.max(axis=0))


def whole_frame_cut_out(photo: bytes) -> bytes:
    """``photo`` as a PNG cut-out whose mask is the whole frame: opaque but for a one-pixel transparent
    border, which makes it a cut-out (``img2mesh.image_decoding.is_cut_out``) that TripoSR frames whole."""
    rgba = decode_image(photo).copy()
    rgba[..., 3] = 255
    rgba[[0, -1], :, 3] = 0
    rgba[:, [0, -1], 3] = 0
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, "PNG")
    return buffer.getvalue()


def _prepared(mesh: MeshResult, size: RealSize) -> PreparedMesh:
    return prepare_mesh(mesh.vertices, mesh.faces, mesh.vertex_colors, uvs=mesh.uvs, texture=mesh.texture, size=size)


def _texture(prepared: PreparedMesh) -> np.ndarray:
    if prepared.texture is None:
        raise ValueError("the mesh has no texture to break")
    return prepared.texture


def _with_flakes(mesh: MeshResult) -> MeshResult:
    """``mesh`` with FLAKES small cubes beside it, left and right of the product, in mid-grey."""
    rng = np.random.default_rng(0)
    low, high = mesh.vertices.min(axis=0), mesh.vertices.max(axis=0)
    right = 1  # TripoSR's y is image-right (docs/architecture.md, "Coordinates")
    vertices, faces, colors, uvs = [mesh.vertices], [mesh.faces], [mesh.vertex_colors], [mesh.uvs]
    count = len(mesh.vertices)
    for index in range(FLAKES):
        centre = rng.uniform(low, high)
        centre[right] = (low[right] - 2 * FLAKE_SIDE) if index % 2 else (high[right] + 2 * FLAKE_SIDE)
        cube = trimesh.creation.box(extents=[FLAKE_SIDE] * 3).apply_translation(centre)
        vertices.append(np.asarray(cube.vertices, dtype=np.float32))
        faces.append(np.asarray(cube.faces, dtype=np.int32) + count)
        colors.append(np.full((len(cube.vertices), 3), 128, dtype=np.uint8))
        if mesh.uvs is not None:
            uvs.append(np.zeros((len(cube.vertices), 2), dtype=np.float32))
        count += len(cube.vertices)
    return replace(mesh, vertices=np.concatenate(vertices), faces=np.concatenate(faces),
                   vertex_colors=np.concatenate(colors), uvs=None if mesh.uvs is None else np.concatenate(uvs))
