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
glTF's encoding, and with ``glb_summary`` the only one that reads it back.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pygltflib as gltf

from asset.material import DEFAULT_MATERIAL, METALLIC, Material, srgb_to_linear
from asset.mesh_preparation import PreparedMesh

EXTENSION = ".glb"
CONTENT_TYPE = "model/gltf-binary"

_GLB_MAGIC = b"glTF"
_JSON_CHUNK = 0x4E4F534A


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
