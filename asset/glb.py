"""The GLB file (binary glTF 2.0) that model-viewer, Shopify and Android's Scene Viewer load.

What glTF adds to the prepared mesh (``asset.mesh_preparation``) and its material
(``asset.material``):

* **Colour.** A textured mesh gets ``TEXCOORD_0`` and the texture as the material's
  ``baseColorTexture`` (glTF reads it as sRGB), embedded in the GLB as PNG or JPEG, with a
  sampler that filters linearly with mipmaps and clamps at the atlas border (repeating would
  let filtering pull in texels from the opposite edge). glTF's UVs have (0, 0) at the image's
  top-left corner, as the prepared mesh's; trimesh stores UVs with v up and flips them on
  export, so they are handed to it flipped. An untextured mesh gets ``COLOR_0``: the network's
  colours are sRGB values (they reproduce the photo's pixels), while ``COLOR_0`` is a *linear*
  multiplier of the base colour, so they are converted to linear. A textured mesh has no
  ``COLOR_0``: it would multiply the texture.
* **Material.** One PBR material, explicit: metallic 0, the material's roughness, double-sided
  false. Without one, viewers use glTF's default material, metallic 1, which renders dark.
* **Normals** are written as given: unit length, as glTF requires.
* **No mesh compression.** trimesh can write Draco (through DracoPy), but model-viewer then
  fetches its decoder from Google's CDN unless the shop hosts it
  (docs/facts.md, "Browser tests"), and no browser test shows a compressed file loading yet; at
  60 000 triangles the GLB is about 2 MB, well under Shopify's 15 MB.

This is the only module that knows glTF's encoding, and with ``glb_summary`` the only one that
reads it back.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable

import numpy as np
import trimesh

from asset.material import DEFAULT_MATERIAL, METALLIC, Material, srgb_to_linear
from asset.mesh_preparation import PreparedMesh

EXTENSION = ".glb"
CONTENT_TYPE = "model/gltf-binary"

_GLB_MAGIC = b"glTF"
_JSON_CHUNK = 0x4E4F534A
# glTF sampler constants (the WebGL enums): LINEAR, LINEAR_MIPMAP_LINEAR, CLAMP_TO_EDGE.
_LINEAR, _LINEAR_MIPMAP_LINEAR, _CLAMP_TO_EDGE = 9729, 9987, 33071


def write_glb(mesh: PreparedMesh, material: Material = DEFAULT_MATERIAL) -> bytes:
    """The GLB of a prepared mesh: one node, one primitive with POSITION, NORMAL and either
    TEXCOORD_0 (with the texture) or COLOR_0, and one material."""
    pbr = trimesh.visual.material.PBRMaterial(
        name="product",
        baseColorFactor=[255, 255, 255, 255],
        metallicFactor=METALLIC,
        roughnessFactor=float(material.roughness),
        doubleSided=False,
    )
    if mesh.uvs is not None and mesh.texture is not None:
        flipped = np.column_stack([mesh.uvs[:, 0], 1.0 - mesh.uvs[:, 1]])
        visual = trimesh.visual.TextureVisuals(uv=flipped, material=pbr)
        add_texture = _base_color_texture(mesh.texture_file(material), material.texture_format.mime_type)
    else:
        visual = trimesh.visual.TextureVisuals(material=pbr)
        rgba = np.full((len(mesh.colors), 4), 255, dtype=np.uint8)
        rgba[:, :3] = np.round(srgb_to_linear(mesh.colors) * 255.0).astype(np.uint8)
        visual.vertex_attributes["color"] = rgba
        add_texture = None
    geometry = trimesh.Trimesh(mesh.positions, mesh.triangles, visual=visual, process=False, validate=False)
    geometry.vertex_normals = mesh.normals
    scene = trimesh.Scene()
    scene.add_geometry(geometry, geom_name="product", node_name="product")
    return trimesh.exchange.gltf.export_glb(scene, include_normals=True, buffer_postprocessor=add_texture)


def _base_color_texture(image: bytes, mime_type: str) -> Callable[[dict, dict], None]:
    """trimesh's hook that adds our encoded image as the material's base colour texture.

    trimesh would re-encode an image itself (JPEG at its own quality, PNG at its own settings), so
    the image bytes the caller chose are appended to the binary buffer here, with the texture
    and sampler that reference them.
    """

    def add(buffer_items: dict, tree: dict) -> None:
        tree["images"].append({"bufferView": len(buffer_items), "mimeType": mime_type})
        buffer_items["base_color_texture"] = image + bytes(-len(image) % 4)
        tree["samplers"] = [{"magFilter": _LINEAR, "minFilter": _LINEAR_MIPMAP_LINEAR,
                             "wrapS": _CLAMP_TO_EDGE, "wrapT": _CLAMP_TO_EDGE}]
        tree["textures"].append({"source": len(tree["images"]) - 1, "sampler": 0})
        (only,) = tree["materials"]
        only["pbrMetallicRoughness"]["baseColorTexture"] = {"index": len(tree["textures"]) - 1}

    return add


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
