"""The textured GLB as a shopper sees it: model-viewer in headless Chromium, from the front.

The test product is red on its right (+X), blue on its left and green at the bottom, so the
screenshot must show blue on the left half, red on the right half and green at the bottom. The
same product with its texture upside down (UVs flipped, the classic glTF/OpenGL mix-up) must
fail the same check, which shows the check can fail.
"""

from __future__ import annotations

import numpy as np

from asset.glb import write_glb
from asset.material import Material, TextureFormat
from asset.mesh_preparation import PreparedMesh, prepare_mesh
from asset.real_size import RealSize
from tests.support.model_viewer import ModelViewer
from tests.support.textured_mesh import textured_product

PLACES = {"left": (0.45, 0.25), "right": (0.45, 0.75), "top": (0.06, 0.62), "bottom": (0.94, 0.62)}
"""Where to look, as (down, across) fractions of the model's on-screen bounding box."""
EXPECTED = {"left": "blue", "right": "red", "top": "red", "bottom": "green"}


def colour_layout(screenshot: np.ndarray) -> dict[str, str]:
    """The dominant colour ('red', 'green', 'blue' or 'grey') of the model at each of ``PLACES``."""
    rows, columns = np.nonzero(screenshot[:, :, 3] > 250)
    top, left = rows.min(), columns.min()
    height, width = rows.max() - top, columns.max() - left
    layout = {}
    for place, (down, across) in PLACES.items():
        row, column = int(top + down * height), int(left + across * width)
        mean = screenshot[row - 2 : row + 3, column - 2 : column + 3, :3].reshape(-1, 3).mean(axis=0)
        layout[place] = "grey" if np.ptp(mean) < 40 else ("red", "green", "blue")[int(mean.argmax())]
    return layout


def prepared(flip_v: bool = False) -> PreparedMesh:
    product = textured_product()
    uvs = product.uvs * [1, -1] + [0, 1] if flip_v else product.uvs
    return prepare_mesh(product.vertices, product.faces, product.vertex_colors, uvs=uvs, texture=product.texture,
                        size=RealSize(0.3))


def test_model_viewer_shows_the_texture_where_it_belongs(model_viewer: ModelViewer) -> None:
    shots = model_viewer.screenshots({
        "png": write_glb(prepared(), Material(texture_format=TextureFormat.PNG)),
        "jpeg": write_glb(prepared(), Material(texture_format=TextureFormat.JPEG)),
        "upside-down": write_glb(prepared(flip_v=True)),
    })
    for name in ("png", "jpeg"):
        screenshot = shots[name]
        assert (screenshot[[0, -1], :, 3] == 0).all() and (screenshot[:, [0, -1], 3] == 0).all(), \
            f"{name}: the whole model is in view, on a transparent background"
        assert colour_layout(screenshot) == EXPECTED, name
    upside_down = colour_layout(shots["upside-down"])
    assert (upside_down["top"], upside_down["bottom"]) == ("green", "red"), upside_down
