"""The USDZ file that iPhone and iPad show in AR (AR Quick Look), written with Pixar's usd-core.

It holds the same prepared mesh (``asset.mesh_preparation``) and material (``asset.material``) as
the GLB, in USD's terms (docs/facts.md, "USD and AR Quick Look"):

* **Stage.** Y up and ``metersPerUnit`` 1, as the prepared mesh is; the default prim is the
  product (kind ``component``), so AR Quick Look places it at its real size.
* **Mesh.** Triangles as given (USD's default orientation is right-handed: counter-clockwise
  seen from outside is the front, as in glTF), vertex normals, and subdivision turned off: USD's
  default scheme, Catmull-Clark, would have the viewer smooth the triangles into another shape.
* **Texture coordinates.** USD's ``st`` has (0, 0) at the image's *lower*-left corner, glTF's UVs
  at its upper-left, so ``st = (u, 1 − v)`` over the same image.
* **Material.** ``UsdPreviewSurface`` with metallic 0 and the material's roughness. A textured
  mesh connects ``diffuseColor`` to a ``UsdUVTexture`` (sRGB, clamped at the atlas border) whose
  ``st`` comes from a ``UsdPrimvarReader_float2`` reading the ``st`` primvar; the image is
  packed inside the .usdz. AR Quick Look shows materials, not vertex colours, so an untextured
  mesh keeps its colours as ``displayColor`` (for other USD viewers) and gets their mean as a
  plain ``diffuseColor``.

usd-core writes files, so the stage (one binary .usdc layer) and the texture are written to a
temporary folder and packed with usd-core's own zip writer (``Sdf.ZipFileWriter``: uncompressed,
64-byte aligned, as the USDZ format requires), the root layer first; only the package's bytes are
returned. The layer refers to the texture by its name in the package. The zip records each file's
modification time, so it is set to a fixed one: the same mesh always gives the same bytes.
"""

from __future__ import annotations

import os
import tempfile
import threading
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pxr import Gf, Kind, Sdf, Usd, UsdGeom, UsdShade, Vt

from asset.material import DEFAULT_MATERIAL, METALLIC, Material, srgb_to_linear
from asset.mesh_preparation import PreparedMesh

EXTENSION = ".usdz"
CONTENT_TYPE = "model/vnd.usdz+zip"

ROOT = "/product"
MESH = f"{ROOT}/mesh"
MATERIAL = f"{ROOT}/material"
ST_PRIMVAR = "st"
TEXTURE_NAME = "texture"
"""The texture's file name in the package, before the format's extension."""

_FILE_TIME = datetime(1980, 1, 2, tzinfo=UTC).timestamp()
"""The modification time the zip records for each file (usd-core takes the file's): fixed, so
that the same mesh always gives the same bytes; zip's clock starts in 1980."""

# usd-core keeps global state (layer registry, resolver caches) that is not safe to mutate from
# several threads at once; the worker writes files in threads, so writing is serialised.
_USD_LOCK = threading.Lock()


def write_usdz(mesh: PreparedMesh, material: Material = DEFAULT_MATERIAL) -> bytes:
    """The USDZ package of a prepared mesh: one mesh, one ``UsdPreviewSurface`` material and, for
    a textured mesh, its texture."""
    with _USD_LOCK, tempfile.TemporaryDirectory(prefix="usdz-") as folder:
        layer = Path(folder) / "model.usdc"
        texture_file = None
        if mesh.texture is not None:
            texture_file = TEXTURE_NAME + material.texture_format.extension
            (Path(folder) / texture_file).write_bytes(mesh.texture_file(material))
        stage = Usd.Stage.CreateNew(str(layer))
        _define_stage(stage, mesh, material, texture_file)
        stage.GetRootLayer().Save()
        package = Path(folder) / "model.usdz"
        writer = Sdf.ZipFileWriter.CreateNew(str(package))
        for name in (layer.name, texture_file):  # the first file of a package is its root layer
            if name is not None:
                os.utime(Path(folder) / name, (_FILE_TIME, _FILE_TIME))
                writer.AddFile(str(Path(folder) / name), name)
        writer.Save()
        return package.read_bytes()


def _define_stage(stage: Usd.Stage, mesh: PreparedMesh, material: Material, texture_file: str | None) -> None:
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, 1.0)
    root = UsdGeom.Xform.Define(stage, ROOT).GetPrim()
    Usd.ModelAPI(root).SetKind(Kind.Tokens.component)
    stage.SetDefaultPrim(root)

    geometry = UsdGeom.Mesh.Define(stage, MESH)
    points = mesh.positions.astype(np.float32)
    geometry.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(points))
    geometry.CreateExtentAttr(Vt.Vec3fArray.FromNumpy(np.stack([points.min(axis=0), points.max(axis=0)])))
    geometry.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(mesh.triangles), 3, dtype=np.int32)))
    geometry.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(mesh.triangles.reshape(-1).astype(np.int32)))
    geometry.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(mesh.normals.astype(np.float32)))
    geometry.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
    geometry.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
    geometry.CreateDoubleSidedAttr(False)

    shading = UsdShade.Material.Define(stage, MATERIAL)
    surface = UsdShade.Shader.Define(stage, f"{MATERIAL}/surface")
    surface.CreateIdAttr("UsdPreviewSurface")
    surface.CreateInput("metallic", Sdf.ValueTypeNames.Float).Set(METALLIC)
    surface.CreateInput("roughness", Sdf.ValueTypeNames.Float).Set(material.roughness)
    diffuse = surface.CreateInput("diffuseColor", Sdf.ValueTypeNames.Color3f)
    shading.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")

    linear = srgb_to_linear(mesh.colors).astype(np.float32)
    if texture_file is None or mesh.uvs is None:
        geometry.CreateDisplayColorPrimvar(UsdGeom.Tokens.vertex).Set(Vt.Vec3fArray.FromNumpy(linear))
        diffuse.Set(Gf.Vec3f(*linear.mean(axis=0).tolist()))
    else:
        st = np.column_stack([mesh.uvs[:, 0], 1.0 - mesh.uvs[:, 1]]).astype(np.float32)
        primvar = UsdGeom.PrimvarsAPI(geometry).CreatePrimvar(
            ST_PRIMVAR, Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex
        )
        primvar.Set(Vt.Vec2fArray.FromNumpy(st))
        reader = UsdShade.Shader.Define(stage, f"{MATERIAL}/st_reader")
        reader.CreateIdAttr("UsdPrimvarReader_float2")
        reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set(ST_PRIMVAR)
        texture = UsdShade.Shader.Define(stage, f"{MATERIAL}/base_color")
        texture.CreateIdAttr("UsdUVTexture")
        texture.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(Sdf.AssetPath(texture_file))
        texture.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(reader.ConnectableAPI(), "result")
        texture.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set("sRGB")
        texture.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set("clamp")
        texture.CreateInput("wrapT", Sdf.ValueTypeNames.Token).Set("clamp")
        rgb = texture.CreateOutput("rgb", Sdf.ValueTypeNames.Float3)
        diffuse.ConnectToSource(rgb)
    UsdShade.MaterialBindingAPI.Apply(geometry.GetPrim()).Bind(shading)
