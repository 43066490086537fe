"""The prepared mesh written as GLB: glTF orientation and placement, colours, material, decimation,
Khronos validity, and the baked texture (UV convention, seams, embedded image)."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
import trimesh
from PIL import Image

from asset.glb import glb_summary, read_glb, read_glb_json, write_glb
from asset.material import DEFAULT_ROUGHNESS, Material, TextureFormat
from asset.mesh_preparation import PreparedMesh, prepare_mesh, triposr_positions
from asset.real_size import RealSize
from img2mesh.errors import EmptyMesh
from tests.support.gltf_validator import GltfValidator
from tests.support.product_mesh import GREY, RED, product_mesh
from tests.support.textured_mesh import away_from_colour_edges, expected_color, textured_product

LINEAR_RED = (255, 0, 0)
LINEAR_GREY = (55, 55, 55)


def mesh_to_glb(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, **options: object) -> bytes:
    """A TripoSR-frame mesh prepared and written as the worker does it."""
    return write_glb(prepare_mesh(vertices, faces, colors, **options))  # type: ignore[arg-type]


def read_primitive(glb: bytes) -> dict[str, np.ndarray]:
    """The first primitive's attributes and indices, read straight from the GLB's BIN chunk."""
    document = read_glb_json(glb)
    json_length = struct.unpack_from("<I", glb, 12)[0]
    binary = glb[20 + json_length + 8 :]
    dtypes = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
    widths = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}

    def accessor(index: int) -> np.ndarray:
        spec = document["accessors"][index]
        view = document["bufferViews"][spec["bufferView"]]
        start = view.get("byteOffset", 0) + spec.get("byteOffset", 0)
        dtype = np.dtype(dtypes[spec["componentType"]])
        count = spec["count"] * widths[spec["type"]]
        return np.frombuffer(binary, dtype, count, start).reshape(spec["count"], -1)

    primitive = document["meshes"][0]["primitives"][0]
    arrays = {name: accessor(index) for name, index in primitive["attributes"].items()}
    arrays["indices"] = accessor(primitive["indices"]).reshape(-1, 3)
    return arrays


def embedded_image(glb: bytes, index: int) -> tuple[str, bytes]:
    """The mime type and bytes of the GLB's image ``index``."""
    document = read_glb_json(glb)
    json_length = struct.unpack_from("<I", glb, 12)[0]
    binary = glb[20 + json_length + 8 :]
    image = document["images"][index]
    view = document["bufferViews"][image["bufferView"]]
    start = view.get("byteOffset", 0)
    return image["mimeType"], binary[start : start + view["byteLength"]]


@pytest.fixture(scope="module")
def mesh() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return product_mesh()


@pytest.fixture(scope="module")
def textured() -> PreparedMesh:
    product = textured_product()
    return prepare_mesh(product.vertices, product.faces, product.vertex_colors, uvs=product.uvs,
                        texture=product.texture, size=RealSize(0.3))


def test_front_faces_plus_z_up_is_plus_y_and_it_stands_centred_on_the_ground(
    mesh: tuple[np.ndarray, np.ndarray, np.ndarray], gltf_validator: GltfValidator
) -> None:
    glb = mesh_to_glb(*mesh)
    gltf_validator.assert_valid(glb)
    arrays = read_primitive(glb)
    position, color = arrays["POSITION"], arrays["COLOR_0"]
    low, high = position.min(axis=0), position.max(axis=0)
    # TripoSR extents: x (depth) 0.25 + 0.45 bump, y (width) 0.8, z (height) 1.2.
    np.testing.assert_allclose(high - low, [0.8, 1.2, 0.7], atol=0.04)
    assert low[1] == pytest.approx(0.0, abs=1e-6), "stands on y = 0"
    assert (low[0] + high[0]) / 2 == pytest.approx(0.0, abs=1e-6)
    assert (low[2] + high[2]) / 2 == pytest.approx(0.0, abs=1e-6)
    red = np.all(color[:, :3] == LINEAR_RED, axis=1)
    assert red.any() and (~red).any()
    assert position[red, 2].min() > position[~red, 2].mean(), "the red front bump points towards +Z"
    assert position[:, 2].argmax() in np.flatnonzero(red)


def test_colours_are_linear_and_the_material_is_not_metallic(
    mesh: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    glb = mesh_to_glb(*mesh)
    document = read_glb_json(glb)
    primitive = document["meshes"][0]["primitives"][0]
    assert set(primitive["attributes"]) == {"POSITION", "NORMAL", "COLOR_0"}
    pbr = document["materials"][primitive["material"]]["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0
    assert pbr["roughnessFactor"] == DEFAULT_ROUGHNESS
    color = read_primitive(glb)["COLOR_0"]
    assert {tuple(c) for c in color[:, :3]} == {LINEAR_RED, LINEAR_GREY}
    assert (color[:, 3] == 255).all()
    normals = read_primitive(glb)["NORMAL"]
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1.0, atol=1e-5)


def test_triangles_keep_their_outward_winding(mesh: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    arrays = read_primitive(mesh_to_glb(*mesh))
    corners = arrays["POSITION"].astype(np.float64)[arrays["indices"].astype(np.int64)]
    signed_volume = np.einsum("ij,ij->i", corners[:, 0], np.cross(corners[:, 1], corners[:, 2])).sum() / 6
    assert signed_volume > 0


def test_max_extent_scales_to_a_real_size(
    mesh: tuple[np.ndarray, np.ndarray, np.ndarray], gltf_validator: GltfValidator
) -> None:
    glb = mesh_to_glb(*mesh, size=RealSize(0.12))
    gltf_validator.assert_valid(glb)
    summary = glb_summary(glb)
    extent = np.subtract(summary["bounds_max"], summary["bounds_min"])
    assert extent.max() == pytest.approx(0.12, rel=1e-5)
    assert summary["bounds_min"][1] == pytest.approx(0.0, abs=1e-7)


def test_degenerate_triangles_and_loose_vertices_are_dropped(gltf_validator: GltfValidator) -> None:
    vertices = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [5, 5, 5], [0, 2, 0]], dtype=np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3], [0, 3, 1], [1, 3, 2], [0, 1, 5], [2, 2, 3]], dtype=np.int32)
    colors = np.full((6, 3), 200, dtype=np.uint8)
    glb = mesh_to_glb(vertices, faces, colors)
    gltf_validator.assert_valid(glb)
    summary = glb_summary(glb)
    assert (summary["vertex_count"], summary["face_count"]) == (4, 4)
    assert summary["has_colors"] and summary["has_normals"]


def test_invalid_meshes_are_refused() -> None:
    flat = np.zeros((3, 3), dtype=np.float32)
    with pytest.raises(EmptyMesh, match="no triangles with a non-zero area"):
        mesh_to_glb(flat, np.array([[0, 1, 2]], dtype=np.int32), np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="vertex_colors must be uint8"):
        mesh_to_glb(flat, np.array([[0, 1, 2]], dtype=np.int32), np.zeros((3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="faces index vertices outside"):
        mesh_to_glb(flat, np.array([[0, 1, 3]], dtype=np.int32), np.zeros((3, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="not a GLB"):
        glb_summary(b"PK\x03\x04 a zip file")


def test_the_validator_reports_errors_on_a_broken_glb(
    mesh: tuple[np.ndarray, np.ndarray, np.ndarray], gltf_validator: GltfValidator
) -> None:
    """The validity checks above can fail: a GLB whose declared length is wrong has errors."""
    glb = bytearray(mesh_to_glb(*mesh))
    struct.pack_into("<I", glb, 8, len(glb) + 4)
    assert gltf_validator(bytes(glb))["issues"]["numErrors"] > 0


@pytest.mark.parametrize("texture_format", list(TextureFormat))
def test_a_textured_mesh_carries_its_texture_on_uvs_and_validates_without_warnings(
    textured: PreparedMesh, texture_format: TextureFormat, gltf_validator: GltfValidator
) -> None:
    material = Material(roughness=0.55, texture_format=texture_format)
    glb = write_glb(textured, material)
    report = gltf_validator.assert_valid(glb)
    assert report["issues"]["numWarnings"] == 0, report["issues"]["messages"]
    document = read_glb_json(glb)
    (primitive,) = document["meshes"][0]["primitives"]
    assert set(primitive["attributes"]) == {"POSITION", "NORMAL", "TEXCOORD_0"}
    (only,) = document["materials"]
    pbr = only["pbrMetallicRoughness"]
    assert (pbr["metallicFactor"], pbr["roughnessFactor"]) == (0.0, 0.55)
    texture = document["textures"][pbr["baseColorTexture"]["index"]]
    sampler = document["samplers"][texture["sampler"]]
    assert sampler["wrapS"] == sampler["wrapT"] == 33071, "an atlas is clamped, not repeated"
    mime_type, data = embedded_image(glb, texture["source"])
    assert mime_type == texture_format.mime_type
    assert data.rstrip(b"\0") == material.encode_texture(textured.texture).rstrip(b"\0"), "the caller's encoding"
    assert glb_summary(glb)["has_texture"] and not glb_summary(glb)["has_colors"]


def test_texture_coordinates_follow_gltfs_top_left_origin(textured: PreparedMesh) -> None:
    """Each vertex's TEXCOORD_0, looked up in the embedded image with (0, 0) at its top-left
    corner, gives the colour the product has there: red right (+X), blue left, green bottom.
    A v flip would put green on top; a mirrored u would swap red and blue."""
    glb = write_glb(textured)
    arrays = read_primitive(glb)
    document = read_glb_json(glb)
    texture = document["textures"][document["materials"][0]["pbrMetallicRoughness"]["baseColorTexture"]["index"]]
    image = np.asarray(Image.open(io.BytesIO(embedded_image(glb, texture["source"])[1])).convert("RGB"))
    height, width, _ = image.shape
    uv = arrays["TEXCOORD_0"].astype(np.float64)
    rows = np.clip((uv[:, 1] * height).astype(int), 0, height - 1)
    columns = np.clip((uv[:, 0] * width).astype(int), 0, width - 1)
    position = arrays["POSITION"].astype(np.float64)
    inside = away_from_colour_edges(position)
    assert inside.sum() > 0.8 * len(position)
    np.testing.assert_array_equal(image[rows, columns][inside], expected_color(position)[inside])


def test_uv_seams_survive_preparation(textured: PreparedMesh) -> None:
    product = textured_product()
    prepared = prepare_mesh(product.vertices, product.faces, product.vertex_colors, uvs=product.uvs,
                            texture=product.texture)
    assert len(prepared.triangles) == len(textured.triangles), "nothing is decimated: Triton did it"
    # The longitude seam: copies of a vertex at one position with u = 0 and u = 1.
    seam = np.flatnonzero(np.isclose(prepared.uvs[:, 0], 1.0))
    assert len(seam) > 10
    for index in seam[:20]:
        twins = np.flatnonzero(np.all(prepared.positions == prepared.positions[index], axis=1))
        assert len(twins) == 2 and set(np.round(prepared.uvs[twins, 0], 6)) == {0.0, 1.0}
        np.testing.assert_allclose(prepared.normals[twins[0]], prepared.normals[twins[1]], atol=1e-12)
    assert len(prepared.colors) == len(prepared.uvs) == len(prepared.positions), "vertex colours stay"


def test_bad_textures_are_refused() -> None:
    product = textured_product(latitudes=4, longitudes=6, texture_size=8)
    arrays = (product.vertices, product.faces, product.vertex_colors)
    with pytest.raises(ValueError, match="uvs and texture come together"):
        prepare_mesh(*arrays, uvs=product.uvs)
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        prepare_mesh(*arrays, uvs=product.uvs + 0.5, texture=product.texture)
    with pytest.raises(ValueError, match="uvs must have shape"):
        prepare_mesh(*arrays, uvs=product.uvs[:-1], texture=product.texture)
    with pytest.raises(ValueError, match="texture must be a uint8 RGB image"):
        prepare_mesh(*arrays, uvs=product.uvs, texture=product.texture.astype(np.float32))
    with pytest.raises(ValueError, match="roughness must be within"):
        Material(roughness=1.5)


def test_height_scales_the_up_axis_to_a_real_size(mesh: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    prepared = prepare_mesh(*mesh, size=RealSize(0.12, "height"))
    assert prepared.extent_m[1] == pytest.approx(0.12, rel=1e-6)
    assert prepared.extent_m.max() == pytest.approx(0.12, rel=1e-6), "the test body is taller than wide"
    wide = prepare_mesh(*mesh, size=RealSize(0.5, "largest_side"))
    np.testing.assert_allclose(wide.extent_m / wide.extent_m.max(), prepared.extent_m / prepared.extent_m.max())
    with pytest.raises(ValueError, match="a product's size must be"):
        RealSize(20.0)


@pytest.mark.parametrize("texture_format", list(TextureFormat))
def test_a_glb_reads_back_as_the_mesh_it_was_written_from(textured: PreparedMesh,
                                                          texture_format: TextureFormat) -> None:
    glb = write_glb(textured, Material(texture_format=texture_format))
    mesh = read_glb(glb)
    np.testing.assert_allclose(mesh.positions, textured.positions, atol=1e-6)
    np.testing.assert_array_equal(mesh.triangles, textured.triangles)
    np.testing.assert_allclose(mesh.uvs, textured.uvs, atol=1e-6)  # glTF's convention, as prepared
    assert mesh.colors is None
    if texture_format is TextureFormat.PNG:
        np.testing.assert_array_equal(mesh.texture, textured.texture)
    else:
        assert np.abs(mesh.texture.astype(int) - textured.texture).mean() < 2
    reduced = read_glb(glb, texture_side=64)
    assert reduced.texture.shape[0] >= 64 and reduced.texture.shape[0] < textured.texture.shape[0]


def test_vertex_colours_read_back_as_srgb(mesh: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    prepared = prepare_mesh(*mesh)
    read = read_glb(write_glb(prepared))
    assert read.uvs is None and read.texture is None
    assert np.abs(read.colors.astype(int) - prepared.colors).max() <= 1


def test_a_node_transform_of_the_file_is_applied(textured: PreparedMesh) -> None:
    """What a viewer shows: a mirror a writer put into a node's matrix is in the positions read back."""
    glb = write_glb(textured)
    document = read_glb_json(glb)
    document["nodes"][0]["matrix"] = [-1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0.5, 0, 0, 1]  # columns first
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    old_length = struct.unpack_from("<I", glb, 12)[0]
    binary = glb[20 + old_length:]
    header = struct.pack("<4sII", b"glTF", 2, 20 + len(text) + len(binary))
    rewritten = header + struct.pack("<II", len(text), 0x4E4F534A)
    moved = read_glb(rewritten + text + binary).positions
    np.testing.assert_allclose(moved, textured.positions * [-1, 1, 1] + [0.5, 0, 0], atol=1e-6)


def test_positions_go_back_to_the_triposr_frame_they_were_prepared_from() -> None:
    box = trimesh.creation.box(extents=[0.2, 0.6, 1.0]).apply_translation([0.1, -0.2, 0.3])
    vertices = np.asarray(box.vertices, dtype=np.float32)
    colors = np.zeros((len(vertices), 3), dtype=np.uint8)
    prepared = prepare_mesh(vertices, np.asarray(box.faces, dtype=np.int32), colors, size=RealSize(0.12, "height"))
    back = triposr_positions(prepared.positions, vertices.min(axis=0), vertices.max(axis=0))
    np.testing.assert_allclose(back, vertices, atol=1e-6)  # a box has no degenerate triangle: every vertex stays
    # A mirror in the file stays a mirror in the TripoSR frame: image-right (+Y) swapped.
    mirrored = triposr_positions(prepared.positions * [-1, 1, 1], vertices.min(axis=0), vertices.max(axis=0))
    np.testing.assert_allclose(mirrored[:, 1], vertices[:, 1].min() + vertices[:, 1].max() - vertices[:, 1], atol=1e-6)
