"""The GLB file (binary glTF 2.0) that model-viewer, Shopify and Android's Scene Viewer load.

What glTF adds to the prepared mesh (``asset.mesh_preparation``):

* **Colour.** The network's colours are sRGB values (they reproduce the photo's pixels), while
  glTF's ``COLOR_0`` is a *linear* multiplier of the base colour, so they are converted to
  linear. The material is explicit: metallic 0, roughness 1, double-sided false. Without one,
  viewers use glTF's default material, metallic 1, which renders vertex colours dark.
* **Normals** are written as given: unit length, as glTF requires.

This is the only module that knows glTF's encoding, and with ``glb_summary`` the only one that
reads it back.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import trimesh

from asset.mesh_preparation import PreparedMesh

EXTENSION = ".glb"
CONTENT_TYPE = "model/gltf-binary"

_GLB_MAGIC = b"glTF"
_JSON_CHUNK = 0x4E4F534A


def write_glb(mesh: PreparedMesh) -> bytes:
    """The GLB of a prepared mesh: one node, one primitive with POSITION, NORMAL and COLOR_0."""
    rgba = np.empty((len(mesh.colors), 4), dtype=np.uint8)
    rgba[:, :3] = _srgb_to_linear_u8(mesh.colors)
    rgba[:, 3] = 255
    material = trimesh.visual.material.PBRMaterial(
        name="vertex_color",
        baseColorFactor=[255, 255, 255, 255],
        metallicFactor=0.0,
        roughnessFactor=1.0,
        doubleSided=False,
    )
    visual = trimesh.visual.TextureVisuals(material=material)
    visual.vertex_attributes["color"] = rgba
    geometry = trimesh.Trimesh(mesh.positions, mesh.triangles, visual=visual, process=False, validate=False)
    geometry.vertex_normals = mesh.normals
    scene = trimesh.Scene()
    scene.add_geometry(geometry, geom_name="product", node_name="product")
    return scene.export(file_type="glb", include_normals=True)


def glb_summary(data: bytes) -> dict:
    """Counts and bounds read from a GLB's JSON chunk, for job metadata and tests.

    Returns ``{"bytes", "vertex_count", "face_count", "bounds_min", "bounds_max",
    "has_colors", "has_normals"}``, summed over all triangle primitives.
    """
    document = read_glb_json(data)
    accessors = document.get("accessors", [])
    vertex_count = face_count = 0
    has_colors = has_normals = True
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
    return {
        "bytes": len(data),
        "vertex_count": vertex_count,
        "face_count": face_count,
        "bounds_min": bounds_min.tolist(),
        "bounds_max": bounds_max.tolist(),
        "has_colors": has_colors,
        "has_normals": has_normals,
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


def _srgb_to_linear_u8(colors: np.ndarray) -> np.ndarray:
    """The sRGB transfer function inverted (IEC 61966-2-1), rounded back to 8 bits."""
    srgb = colors.astype(np.float64) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    return np.round(linear * 255.0).astype(np.uint8)
