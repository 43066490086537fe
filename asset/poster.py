"""The poster: a PNG of the finished product that a shop shows before the 3D viewer has loaded,
and in the merchant's admin, rendered on the worker's CPU.

* **Renderer.** VTK (PyPI ``vtk``, Kitware) in an off-screen OSMesa window: Mesa's llvmpipe
  rasterises OpenGL on the CPU, so the worker needs no GPU and no display, only Debian's
  ``libosmesa6``. VTK is a maintained renderer with cameras, lights and textures, so this
  module writes no shaders; pyrender, the other common choice, has had no release since 2021.
  A 60 000-triangle textured product renders in well under a second
  (docs/facts.md, "Rendering on a CPU").
* **View.** A 3/4 front view, as product photos are taken: the product's front faces +Z
  (``asset.mesh_preparation``), so the camera stands in front of it, 30° to its right (+X) and
  20° above, looking at the centre of its bounding box, with the whole product in the frame.
* **Look.** The colours come from a photo and already carry its shading, so the light is a soft
  headlight with a high ambient share; textured meshes sample their texture (the same image as
  the GLB's), others interpolate their vertex colours. The background is transparent. Edges are
  smoothed by rendering at twice the size and averaging 2 × 2 pixels (MSAA at 4 samples looks the
  same and costs more on llvmpipe: ``python -m bench.postprocess --anchors``).
* **PNG.** zlib's run-length strategy (``Z_RLE``) after PNG's row filters: the same pixels as
  Pillow's default strategy in about half the time, for 12–19 % more bytes (225 kB instead of
  201 kB for the bench's mug at ``balanced``): most of a poster is transparent background and
  flat colour, which run lengths encode about as well.
"""

from __future__ import annotations

import io
import math
import threading
import zlib

import numpy as np
from PIL import Image
from vtkmodules.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray, vtk_to_numpy
from vtkmodules.vtkCommonCore import vtkPoints
from vtkmodules.vtkCommonDataModel import vtkCellArray, vtkImageData, vtkPolyData
from vtkmodules.vtkRenderingCore import vtkActor, vtkPolyDataMapper, vtkRenderer, vtkTexture, vtkWindowToImageFilter
from vtkmodules.vtkRenderingOpenGL2 import vtkOSOpenGLRenderWindow

from asset.mesh_preparation import PreparedMesh

EXTENSION = ".png"
CONTENT_TYPE = "image/png"
DEFAULT_SIZE = 1024

AZIMUTH_DEG = 30.0
ELEVATION_DEG = 20.0
VIEW_ANGLE_DEG = 30.0
_MARGIN = 1.08
"""How much room is left around the sphere about the box centre that holds every vertex: 8 %."""
_SUPERSAMPLING = 2

# One OSMesa context at a time: VTK's OpenGL state is per window but the worker renders from
# several threads, and a poster takes well under a second.
_RENDER_LOCK = threading.Lock()
_window: vtkOSOpenGLRenderWindow | None = None
"""The process's one off-screen window, made on the first poster and kept (under the lock): a new
OSMesa context compiles its shaders again, which cost as much as rendering a poster."""


def render_poster(
    mesh: PreparedMesh, size: int = DEFAULT_SIZE, *,
    azimuth_deg: float = AZIMUTH_DEG, elevation_deg: float = ELEVATION_DEG,
) -> bytes:
    """A ``size`` × ``size`` RGBA PNG of the product, its background transparent.

    The view angles default to the poster's; 0, 0 is the straight front view that the fidelity
    benchmark compares with the photo.
    """
    if size < 16:
        raise ValueError(f"a poster is at least 16 pixels wide, got {size}")
    with _RENDER_LOCK:
        rgba = _render(mesh, size * _SUPERSAMPLING, azimuth_deg, elevation_deg)
    return encode_png(np.asarray(Image.fromarray(rgba).reduce(_SUPERSAMPLING)))


def encode_png(rgba: np.ndarray) -> bytes:
    """The poster's PNG of an RGBA image (uint8 [H, W, 4])."""
    buffer = io.BytesIO()
    Image.fromarray(rgba).save(buffer, format="PNG", compress_type=zlib.Z_RLE)
    return buffer.getvalue()


def _render(mesh: PreparedMesh, pixels: int, azimuth_deg: float, elevation_deg: float, *,
            window: vtkOSOpenGLRenderWindow | None = None, fxaa: bool = False) -> np.ndarray:
    """The scene's RGBA pixels, top row first, in ``window`` (the shared one unless given; the benchmark's
    anchors give one with MSAA) with FXAA on or off."""
    renderer = vtkRenderer()
    renderer.SetBackground(0.0, 0.0, 0.0)
    renderer.SetBackgroundAlpha(0.0)
    renderer.SetUseFXAA(fxaa)
    renderer.AddActor(_actor(mesh))
    _place_camera(renderer, mesh, azimuth_deg, elevation_deg)
    window = window or _shared_window()
    window.SetSize(pixels, pixels)
    window.AddRenderer(renderer)
    try:
        window.Render()
        capture = vtkWindowToImageFilter()
        capture.SetInput(window)
        capture.SetInputBufferTypeToRGBA()
        capture.ReadFrontBufferOff()
        capture.ShouldRerenderOff()  # the frame just rendered; the filter would render it a second time
        capture.Update()
        rgba = vtk_to_numpy(capture.GetOutput().GetPointData().GetScalars()).reshape(pixels, pixels, 4)
    finally:
        window.RemoveRenderer(renderer)
    return np.ascontiguousarray(rgba[::-1])  # VTK's first row is the bottom one


def _shared_window() -> vtkOSOpenGLRenderWindow:
    """The process's off-screen window (the caller holds ``_RENDER_LOCK``)."""
    global _window
    if _window is None:
        _window = vtkOSOpenGLRenderWindow()
        _window.SetOffScreenRendering(True)
        _window.SetAlphaBitPlanes(True)
        _window.SetMultiSamples(0)
    return _window


def _actor(mesh: PreparedMesh) -> vtkActor:
    polydata = vtkPolyData()
    points = vtkPoints()
    points.SetData(numpy_to_vtk(mesh.positions, deep=True))
    polydata.SetPoints(points)
    cells = vtkCellArray()
    offsets = np.arange(0, 3 * len(mesh.triangles) + 1, 3, dtype=np.int64)
    cells.SetData(numpy_to_vtkIdTypeArray(offsets, deep=True),
                  numpy_to_vtkIdTypeArray(mesh.triangles.reshape(-1).astype(np.int64), deep=True))
    polydata.SetPolys(cells)
    polydata.GetPointData().SetNormals(numpy_to_vtk(mesh.normals, deep=True))
    mapper = vtkPolyDataMapper()
    mapper.SetInputData(polydata)
    actor = vtkActor()
    actor.SetMapper(mapper)
    if mesh.uvs is not None and mesh.texture is not None:
        # VTK's t counts rows from the first row of the image data; the texture is handed over
        # with its top row first, so glTF's v (down from the top row) is VTK's t unchanged.
        polydata.GetPointData().SetTCoords(numpy_to_vtk(mesh.uvs.astype(np.float32), deep=True))
        actor.SetTexture(_texture(mesh.texture))
        mapper.ScalarVisibilityOff()
    else:
        colors = numpy_to_vtk(np.ascontiguousarray(mesh.colors), deep=True)
        colors.SetName("colors")
        polydata.GetPointData().SetScalars(colors)
        mapper.SetColorModeToDirectScalars()
        mapper.ScalarVisibilityOn()
    surface = actor.GetProperty()
    surface.SetInterpolationToGouraud()
    surface.SetAmbient(0.45)
    surface.SetDiffuse(0.6)
    surface.SetSpecular(0.05)
    surface.SetSpecularPower(10.0)
    surface.BackfaceCullingOn()
    return actor


def _texture(texture: np.ndarray) -> vtkTexture:
    height, width, _ = texture.shape
    image = vtkImageData()
    image.SetDimensions(width, height, 1)
    image.GetPointData().SetScalars(numpy_to_vtk(texture.reshape(-1, 3), deep=True))
    result = vtkTexture()
    result.SetInputData(image)
    result.InterpolateOn()
    result.MipmapOn()
    result.RepeatOff()
    result.EdgeClampOn()
    return result


def _place_camera(renderer: vtkRenderer, mesh: PreparedMesh, azimuth_deg: float, elevation_deg: float) -> None:
    low, high = mesh.positions.min(axis=0), mesh.positions.max(axis=0)
    centre = (low + high) / 2
    radius = float(np.linalg.norm(mesh.positions - centre, axis=1).max())
    azimuth, elevation = math.radians(azimuth_deg), math.radians(elevation_deg)
    direction = np.array([math.sin(azimuth) * math.cos(elevation), math.sin(elevation),
                          math.cos(azimuth) * math.cos(elevation)])
    distance = _MARGIN * radius / math.sin(math.radians(VIEW_ANGLE_DEG) / 2)
    camera = renderer.GetActiveCamera()
    camera.SetViewAngle(VIEW_ANGLE_DEG)
    camera.SetFocalPoint(*centre)
    camera.SetPosition(*(centre + distance * direction))
    camera.SetViewUp(0.0, 1.0, 0.0)
    renderer.ResetCameraClippingRange()
