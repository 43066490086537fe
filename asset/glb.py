"""The GLB file (binary glTF 2.0) that model-viewer, Shopify and Android's Scene Viewer load.

What glTF adds to the prepared mesh (``asset.mesh_preparation``) and its material
(``asset.material``):

* **Colour.** A textured mesh gets ``TEXCOORD_0`` and the texture as the material's
  ``baseColorTexture`` (glTF reads it as sRGB), embedded in the GLB as PNG or JPEG, with a
  sampler that filters linearly with mipmaps and clamps at the atlas border (repeating would
  let filtering pull in texels from the opposite edge). glTF's UVs have (0, 0) at the image's
  top-left corner, as the prepared mesh's, so they are written as they are; the image is the
  prepared mesh's texture file, the one the USDZ embeds. An untextured mesh gets ``COLOR_0``:
  the network's colours are sRGB values (they reproduce the photo's pixels), while ``COLOR_0`` is a *linear*
  multiplier of the base colour, so they are converted to linear. A textured mesh has no
  ``COLOR_0``: it would multiply the texture.
* **Material.** One PBR material, explicit: metallic 0, the material's roughness, double-sided
  false. Without one, viewers use glTF's default material, metallic 1, which renders dark.
* **Normals** are written as given: unit length, as glTF requires.
* **No mesh compression.** Draco (through DracoPy) would shrink it, but model-viewer then
  fetches its decoder from Google's CDN unless the shop hosts it
  (docs/facts.md, "Browser tests"), and no browser test shows a compressed file loading yet; at
  60 000 triangles the GLB is about 2 MB, well under Shopify's 15 MB.

The document and its chunks are pygltflib's: a third of the time trimesh's exporter took, which
hashed and bounded every array (bench.postprocess --anchors). This is the only module that knows
glTF's encoding, and with ``glb_summary`` and ``read_glb`` the only one that reads it back.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass

import numpy as np
import pygltflib as gltf
from PIL import Image

from asset.material import DEFAULT_MATERIAL, METALLIC, Material, linear_to_srgb, srgb_to_linear
from asset.mesh_preparation import PreparedMesh

EXTENSION = ".glb"
CONTENT_TYPE = "model/gltf-binary"

_GLB_MAGIC = b"glTF"
_JSON_CHUNK = 0x4E4F534A
_BIN_CHUNK = 0x004E4942
_COMPONENTS = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTHS = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def write_glb(mesh: PreparedMesh, material: Material = DEFAULT_MATERIAL) -> bytes:
    """The GLB of a prepared mesh: one node, one primitive with POSITION, NORMAL and either
    TEXCOORD_0 (with the texture) or COLOR_0, and one material."""
    document = gltf.GLTF2(scene=0, scenes=[gltf.Scene(nodes=[0])], nodes=[gltf.Node(mesh=0, name="product")])
    binary = _Binary(document)
    positions = np.ascontiguousarray(mesh.positions, dtype=np.float32)
    # glTF requires the bounds of POSITION (viewers frame the model with them), and only those.
    attributes = {"POSITION": binary.accessor(positions, gltf.VEC3, bounds=True),
                  "NORMAL": binary.accessor(np.asarray(mesh.normals, dtype=np.float32), gltf.VEC3)}
    pbr = gltf.PbrMetallicRoughness(baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=METALLIC,
                                    roughnessFactor=float(material.roughness))
    if mesh.uvs is not None and mesh.texture is not None:
        attributes["TEXCOORD_0"] = binary.accessor(np.asarray(mesh.uvs, dtype=np.float32), gltf.VEC2)
        document.images = [gltf.Image(bufferView=binary.view(mesh.texture_file(material)),
                                      mimeType=material.texture_format.mime_type)]
        document.samplers = [gltf.Sampler(magFilter=gltf.LINEAR, minFilter=gltf.LINEAR_MIPMAP_LINEAR,
                                          wrapS=gltf.CLAMP_TO_EDGE, wrapT=gltf.CLAMP_TO_EDGE)]
        document.textures = [gltf.Texture(source=0, sampler=0)]
        pbr.baseColorTexture = gltf.TextureInfo(index=0)
    else:
        rgba = np.full((len(mesh.colors), 4), 255, dtype=np.uint8)
        rgba[:, :3] = np.round(srgb_to_linear(mesh.colors) * 255.0).astype(np.uint8)
        attributes["COLOR_0"] = binary.accessor(rgba, gltf.VEC4, normalized=True)
    indices = binary.accessor(np.asarray(mesh.triangles, dtype=np.uint32).reshape(-1), gltf.SCALAR)
    document.meshes = [gltf.Mesh(name="product", primitives=[
        gltf.Primitive(attributes=gltf.Attributes(**attributes), indices=indices, material=0)])]
    document.materials = [gltf.Material(name="product", pbrMetallicRoughness=pbr, doubleSided=False)]
    binary.close()
    return b"".join(document.save_to_bytes())


class _Binary:
    """The GLB's binary chunk, built view by view, each starting at a multiple of 4 bytes."""

    _COMPONENT_TYPES = {np.dtype(np.float32): gltf.FLOAT, np.dtype(np.uint32): gltf.UNSIGNED_INT,
                        np.dtype(np.uint8): gltf.UNSIGNED_BYTE}

    def __init__(self, document: gltf.GLTF2) -> None:
        self.document = document
        self.parts: list[bytes] = []
        self.length = 0

    def view(self, data: bytes) -> int:
        """A buffer view of ``data``; returns its index."""
        self.document.bufferViews.append(gltf.BufferView(buffer=0, byteOffset=self.length, byteLength=len(data)))
        self.parts += [data, bytes(-len(data) % 4)]
        self.length += len(data) + (-len(data) % 4)
        return len(self.document.bufferViews) - 1

    def accessor(self, array: np.ndarray, kind: str, *, bounds: bool = False, normalized: bool = False) -> int:
        """An accessor of ``array`` (one element per row) in a view of its own; returns its index."""
        accessor = gltf.Accessor(bufferView=self.view(np.ascontiguousarray(array).tobytes()), count=len(array),
                                 componentType=self._COMPONENT_TYPES[array.dtype], type=kind,
                                 normalized=normalized or None)
        if bounds:
            accessor.min, accessor.max = array.min(axis=0).tolist(), array.max(axis=0).tolist()
        self.document.accessors.append(accessor)
        return len(self.document.accessors) - 1

    def close(self) -> None:
        self.document.buffers = [gltf.Buffer(byteLength=self.length)]
        self.document.set_binary_blob(b"".join(self.parts))


def glb_summary(data: bytes) -> dict:
    """Counts and bounds read from a GLB's JSON chunk, for job metadata and tests.

    Returns ``{"bytes", "vertex_count", "face_count", "bounds_min", "bounds_max",
    "has_colors", "has_normals", "has_texture"}``, summed over all triangle primitives.
    """
    document = read_glb_json(data)
    accessors = document.get("accessors", [])
    vertex_count = face_count = 0
    has_colors = has_normals = has_texture = True
    bounds_min = np.full(3, np.inf)
    bounds_max = np.full(3, -np.inf)
    for mesh in document.get("meshes", []):
        for primitive in mesh["primitives"]:
            attributes = primitive["attributes"]
            position = accessors[attributes["POSITION"]]
            vertex_count += position["count"]
            bounds_min = np.minimum(bounds_min, position["min"])
            bounds_max = np.maximum(bounds_max, position["max"])
            face_count += accessors[primitive["indices"]]["count"] // 3
            has_colors &= "COLOR_0" in attributes
            has_normals &= "NORMAL" in attributes
            has_texture &= "TEXCOORD_0" in attributes and "baseColorTexture" in document["materials"][
                primitive["material"]]["pbrMetallicRoughness"]
    return {
        "bytes": len(data),
        "vertex_count": vertex_count,
        "face_count": face_count,
        "bounds_min": bounds_min.tolist(),
        "bounds_max": bounds_max.tolist(),
        "has_colors": has_colors,
        "has_normals": has_normals,
        "has_texture": has_texture,
    }


def read_glb_json(data: bytes) -> dict:
    """The glTF JSON document of a GLB (12-byte header, then the JSON chunk)."""
    if len(data) < 20 or data[:4] != _GLB_MAGIC:
        raise ValueError("not a GLB file: the header does not start with 'glTF'")
    _, version, length = struct.unpack_from("<4sII", data, 0)
    chunk_length, chunk_type = struct.unpack_from("<II", data, 12)
    if version != 2 or length != len(data) or chunk_type != _JSON_CHUNK:
        raise ValueError(f"malformed GLB header (version {version}, length {length} of {len(data)})")
    return json.loads(data[20 : 20 + chunk_length])


@dataclass(frozen=True)
class GlbMesh:
    """What a GLB holds for a viewer to draw: its triangles with every node's transform applied.

    ``positions`` float64 [V, 3] in the file's (glTF) frame, ``triangles`` int64 [F, 3]; ``uvs``
    float32 [V, 2] (glTF convention, (0, 0) the image's top-left) and ``texture`` uint8 sRGB [H, W, 3]
    of the base colour, or ``colors`` uint8 sRGB [V, 3] from ``COLOR_0``; None where the file has none.
    """

    positions: np.ndarray
    triangles: np.ndarray
    uvs: np.ndarray | None
    texture: np.ndarray | None
    colors: np.ndarray | None


def read_glb(data: bytes, *, texture_side: int = 0) -> GlbMesh:
    """The one triangle primitive of a GLB as a viewer sees it (node transforms applied); the texture
    is decoded at the smallest of JPEG's reduced scales (or PNG's integer reductions) that keeps at
    least ``texture_side`` texels a side (0: full size), which is much faster than a full decode.

    Raises:
        ValueError: not a GLB, or not one primitive of triangles.
    """
    document = read_glb_json(data)
    binary = _binary_chunk(data)
    primitives = [(index, primitive) for index, mesh in enumerate(document.get("meshes", []))
                  for primitive in mesh["primitives"]]
    if len(primitives) != 1 or primitives[0][1].get("mode", 4) != 4:
        raise ValueError(f"the GLB holds {len(primitives)} primitives; one of triangles was expected")
    mesh_index, primitive = primitives[0]
    attributes = primitive["attributes"]
    positions = _accessor(document, binary, attributes["POSITION"]).astype(np.float64)
    transform = _mesh_transform(document, mesh_index)
    # Not ``@``: a BLAS product of this size costs more in its threads' start-up than it computes.
    positions = np.einsum("ij,kj->ik", positions, transform[:3, :3]) + transform[:3, 3]
    triangles = _accessor(document, binary, primitive["indices"]).astype(np.int64).reshape(-1, 3)
    uvs = _accessor(document, binary, attributes["TEXCOORD_0"]) if "TEXCOORD_0" in attributes else None
    colors = None
    if "COLOR_0" in attributes:
        color = _accessor(document, binary, attributes["COLOR_0"])[:, :3]
        colors = linear_to_srgb(color / 255.0 if color.dtype == np.uint8 else color)
    material = document["materials"][primitive["material"]] if "material" in primitive else {}
    texture_info = material.get("pbrMetallicRoughness", {}).get("baseColorTexture")
    texture = None
    if texture_info is not None:
        image = document["images"][document["textures"][texture_info["index"]]["source"]]
        texture = _decoded(_view(document, binary, image["bufferView"]), texture_side)
    return GlbMesh(positions, triangles, uvs, texture, colors)


def _binary_chunk(data: bytes) -> memoryview:
    json_length = struct.unpack_from("<I", data, 12)[0]
    offset = 20 + json_length
    length, kind = struct.unpack_from("<II", data, offset)
    if kind != _BIN_CHUNK:
        raise ValueError("malformed GLB: the second chunk is not the binary buffer")
    return memoryview(data)[offset + 8 : offset + 8 + length]


def _view(document: dict, binary: memoryview, index: int) -> memoryview:
    view = document["bufferViews"][index]
    start = view.get("byteOffset", 0)
    return binary[start : start + view["byteLength"]]


def _accessor(document: dict, binary: memoryview, index: int) -> np.ndarray:
    accessor = document["accessors"][index]
    dtype = np.dtype(_COMPONENTS[accessor["componentType"]])
    width = _WIDTHS[accessor["type"]]
    view = document["bufferViews"][accessor["bufferView"]]
    stride = view.get("byteStride", dtype.itemsize * width)
    raw = _view(document, binary, accessor["bufferView"])[accessor.get("byteOffset", 0):]
    rows = np.ndarray((accessor["count"], width), dtype=dtype, buffer=raw, strides=(stride, dtype.itemsize))
    return np.array(rows)


def _mesh_transform(document: dict, mesh_index: int) -> np.ndarray:
    """The world matrix of the node that draws the mesh: its transform and its parents', from the scene's roots."""
    nodes = document.get("nodes", [])
    pending = [(root, np.eye(4)) for root in document["scenes"][document.get("scene", 0)]["nodes"]]
    while pending:
        index, parent = pending.pop()
        node = nodes[index]
        world = parent @ _local_matrix(node)
        if node.get("mesh") == mesh_index:
            return world
        pending.extend((child, world) for child in node.get("children", []))
    raise ValueError("no node of the GLB's scene draws its mesh")


def _local_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], dtype=np.float64).reshape(4, 4).T  # glTF stores columns first
    x, y, z, w = node.get("rotation", (0.0, 0.0, 0.0, 1.0))
    rotation = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation * np.asarray(node.get("scale", (1.0, 1.0, 1.0)))
    matrix[:3, 3] = node.get("translation", (0.0, 0.0, 0.0))
    return matrix


def _decoded(encoded: memoryview, side: int) -> np.ndarray:
    """An embedded image as uint8 RGB, reduced while it keeps at least ``side`` pixels a side."""
    with Image.open(io.BytesIO(encoded)) as image:
        if side:
            image.draft("RGB", (side, side))  # JPEG only: decodes at 1/2, 1/4 or 1/8 scale
            factor = min(image.size) // side
            reduced = image.reduce(factor) if factor > 1 else image
            return np.asarray(reduced.convert("RGB"))
        return np.asarray(image.convert("RGB"))
