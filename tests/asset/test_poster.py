"""The poster rendered on the CPU: a transparent square PNG with the whole product in a 3/4 front
view from its right, textured or vertex-coloured."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from asset.mesh_preparation import PreparedMesh, prepare_mesh
from asset.poster import render_poster
from asset.real_size import RealSize
from tests.support.product_mesh import product_mesh
from tests.support.textured_mesh import textured_product


def decoded(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert (image.format, image.mode) == ("PNG", "RGBA")
    return np.asarray(image)


def dominant(pixels: np.ndarray) -> str:
    """'red', 'green', 'blue' or 'grey': the channel that stands out in the mean colour."""
    mean = pixels[:, :3].astype(np.float64).mean(axis=0)
    if mean.max() - mean.min() < 30:
        return "grey"
    return ("red", "green", "blue")[int(mean.argmax())]


@pytest.fixture(scope="module")
def textured() -> PreparedMesh:
    product = textured_product()
    return prepare_mesh(product.vertices, product.faces, product.vertex_colors, uvs=product.uvs,
                        texture=product.texture, size=RealSize(0.3))


def test_a_textured_poster_shows_the_whole_product_from_front_right(textured: PreparedMesh) -> None:
    image = decoded(render_poster(textured, size=256))
    assert image.shape == (256, 256, 4)
    alpha = image[:, :, 3]
    assert (alpha[[0, -1], :] == 0).all() and (alpha[:, [0, -1]] == 0).all(), "transparent, product inside"
    rows, columns = np.nonzero(alpha == 255)
    assert 0.15 < len(rows) / alpha.size < 0.6
    assert abs((columns.min() + columns.max()) / 2 - 128) < 15, "centred"
    assert abs((rows.min() + rows.max()) / 2 - 128) < 15
    top, bottom, left, right = rows.min(), rows.max(), columns.min(), columns.max()
    middle = image[(top + bottom) // 2]
    # From front-right, the red right side (+X) fills most of the view, the blue left side shows
    # as a strip on the left, and the green band is at the bottom.
    opaque = middle[middle[:, 3] == 255]
    assert dominant(opaque[-len(opaque) // 2 :]) == "red"
    assert dominant(middle[left + 3 : left + 12]) == "blue"
    assert dominant(image[bottom - 6 : bottom - 2, (left + right) // 2]) == "green"
    assert dominant(image[top + 4 : top + 8, (left + right) // 2]) != "green"


def test_a_vertex_coloured_poster_shows_the_front_bump_left_of_centre() -> None:
    """The red bump is on the product's front (+Z); seen from 30° to the right of the front it
    appears left of the body's centre, and the rest is grey."""
    image = decoded(render_poster(prepare_mesh(*product_mesh(), size=RealSize(0.3)), size=256))
    opaque = image[:, :, 3] == 255
    red = opaque & (image[:, :, 0].astype(int) - image[:, :, 1] > 80)
    assert 0.01 < red.sum() / opaque.sum() < 0.3
    body_centre = np.nonzero(opaque)[1].mean()
    assert np.nonzero(red)[1].mean() < body_centre - 10
    assert dominant(image[opaque & ~red]) == "grey"


def test_the_same_mesh_gives_the_same_png(textured: PreparedMesh) -> None:
    """``generate`` and the queue worker must upload identical files."""
    assert render_poster(textured, size=128) == render_poster(textured, size=128)


def test_the_default_poster_is_1024_square(textured: PreparedMesh) -> None:
    assert decoded(render_poster(textured)).shape == (1024, 1024, 4)
    with pytest.raises(ValueError, match="at least 16 pixels"):
        render_poster(textured, size=8)
