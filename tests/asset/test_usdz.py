"""The prepared mesh written as USDZ, read back with usd-core: stage metadata, mesh, the
UsdPreviewSurface network, the packaged texture and USD's st convention, and USD's own ARKit
compliance checker."""

from __future__ import annotations

import io
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pxr import Sdf, Usd, UsdGeom, UsdShade

from asset.material import DEFAULT_ROUGHNESS, Material, TextureFormat, srgb_to_linear
from asset.mesh_preparation import PreparedMesh, prepare_mesh
from asset.real_size import RealSize
from asset.usdz import MATERIAL, MESH, write_usdz
from tests.support.arkit import arkit_problems
from tests.support.product_mesh import product_mesh
from tests.support.textured_mesh import away_from_colour_edges, expected_color, textured_product


@pytest.fixture(scope="module")
def textured() -> PreparedMesh:
    product = textured_product()
    return prepare_mesh(product.vertices, product.faces, product.vertex_colors, uvs=product.uvs,
                        texture=product.texture, size=RealSize(0.3))


def saved(tmp_path: Path, data: bytes, name: str = "model.usdz") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def connected(shader_input: UsdShade.Input) -> tuple[UsdShade.Shader, str]:
    """The shader and output name an input is connected to."""
    (source,) = shader_input.GetConnectedSources()[0]
    return UsdShade.Shader(source.source.GetPrim()), source.sourceName


def test_a_textured_usdz_has_the_preview_surface_network_and_passes_the_arkit_checker(
    textured: PreparedMesh, tmp_path: Path
) -> None:
    path = saved(tmp_path, write_usdz(textured))
    assert arkit_problems(path) == []
    stage = Usd.Stage.Open(str(path))
    assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0 and UsdGeom.GetStageUpAxis(stage) == UsdGeom.Tokens.y
    assert Usd.ModelAPI(stage.GetDefaultPrim()).GetKind() == "component"

    mesh = UsdGeom.Mesh(stage.GetPrimAtPath(MESH))
    np.testing.assert_allclose(np.asarray(mesh.GetPointsAttr().Get()), textured.positions, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(mesh.GetFaceVertexIndicesAttr().Get()), textured.triangles.reshape(-1))
    assert set(mesh.GetFaceVertexCountsAttr().Get()) == {3}
    assert mesh.GetSubdivisionSchemeAttr().Get() == UsdGeom.Tokens.none
    assert mesh.GetOrientationAttr().Get() == UsdGeom.Tokens.rightHanded

    material, _ = UsdShade.MaterialBindingAPI(mesh.GetPrim()).ComputeBoundMaterial()
    assert material.GetPath() == Sdf.Path(MATERIAL)
    surface = material.ComputeSurfaceSource()[0]
    assert surface.GetShaderId() == "UsdPreviewSurface"
    assert surface.GetInput("metallic").Get() == 0.0
    assert surface.GetInput("roughness").Get() == pytest.approx(DEFAULT_ROUGHNESS)
    texture, output = connected(surface.GetInput("diffuseColor"))
    assert (texture.GetShaderId(), output) == ("UsdUVTexture", "rgb")
    assert texture.GetInput("sourceColorSpace").Get() == "sRGB"
    reader, output = connected(texture.GetInput("st"))
    assert (reader.GetShaderId(), output) == ("UsdPrimvarReader_float2", "result")
    assert reader.GetInput("varname").Get() == "st"

    file = texture.GetInput("file").Get()
    assert file.resolvedPath.endswith(f"{path.name}[texture.png]"), "the texture resolves inside the package"
    with zipfile.ZipFile(path) as package:
        assert package.namelist() == ["model.usdc", "texture.png"]
        packed = package.read("texture.png")
    assert packed == Material().encode_texture(textured.texture)

    # USD's st has v up: st = (u, 1 - v). Looked up that way, the packed image gives each vertex
    # the product's colour there (green at the bottom, red on the right, blue on the left).
    st = UsdGeom.PrimvarsAPI(mesh).GetPrimvar("st")
    assert st.GetInterpolation() == UsdGeom.Tokens.vertex
    coordinates = np.asarray(st.Get(), dtype=np.float64)
    image = np.asarray(Image.open(io.BytesIO(packed)).convert("RGB"))
    height, width, _ = image.shape
    rows = np.clip(((1.0 - coordinates[:, 1]) * height).astype(int), 0, height - 1)
    columns = np.clip((coordinates[:, 0] * width).astype(int), 0, width - 1)
    inside = away_from_colour_edges(textured.positions)
    np.testing.assert_array_equal(image[rows, columns][inside], expected_color(textured.positions)[inside])


def test_jpeg_textures_are_packed_as_jpg(textured: PreparedMesh, tmp_path: Path) -> None:
    path = saved(tmp_path, write_usdz(textured, Material(roughness=0.4, texture_format=TextureFormat.JPEG)))
    assert arkit_problems(path) == []
    with zipfile.ZipFile(path) as package:
        assert package.namelist() == ["model.usdc", "texture.jpg"]
        assert all(info.compress_type == zipfile.ZIP_STORED for info in package.infolist())
    stage = Usd.Stage.Open(str(path))
    surface = UsdShade.Shader(stage.GetPrimAtPath(f"{MATERIAL}/surface"))
    assert surface.GetInput("roughness").Get() == pytest.approx(0.4)


def test_a_vertex_coloured_usdz_gets_display_colors_and_a_plain_material(tmp_path: Path) -> None:
    prepared = prepare_mesh(*product_mesh())
    path = saved(tmp_path, write_usdz(prepared))
    assert arkit_problems(path) == []
    stage = Usd.Stage.Open(str(path))
    mesh = UsdGeom.Mesh(stage.GetPrimAtPath(MESH))
    display = np.asarray(mesh.GetDisplayColorPrimvar().Get())
    np.testing.assert_allclose(display, srgb_to_linear(prepared.colors), atol=1e-6)
    surface = UsdShade.Shader(stage.GetPrimAtPath(f"{MATERIAL}/surface"))
    diffuse = surface.GetInput("diffuseColor")
    assert not diffuse.HasConnectedSource()
    np.testing.assert_allclose(diffuse.Get(), display.mean(axis=0), atol=1e-5)
    with zipfile.ZipFile(path) as package:
        assert package.namelist() == ["model.usdc"]


def test_the_same_mesh_gives_the_same_bytes(textured: PreparedMesh) -> None:
    """``generate`` and the queue worker must upload identical files, also a second apart (the
    zip records modification times)."""
    first = write_usdz(textured)
    time.sleep(2.1)  # zip times have a resolution of two seconds
    assert write_usdz(textured) == first


def test_the_arkit_checker_fails_a_package_that_lost_its_texture(textured: PreparedMesh, tmp_path: Path) -> None:
    """The checks above can fail: a package without the texture its material names is refused."""
    path = saved(tmp_path, write_usdz(textured))
    layer = tmp_path / "model.usdc"
    with zipfile.ZipFile(path) as package:
        layer.write_bytes(package.read("model.usdc"))
    broken = tmp_path / "broken.usdz"
    writer = Sdf.ZipFileWriter.CreateNew(str(broken))
    writer.AddFile(str(layer), "model.usdc")
    writer.Save()
    assert arkit_problems(broken)
