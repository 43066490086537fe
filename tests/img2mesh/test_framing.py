"""TripoSR framing: the official crop quirks, the grey composite and the torch-free 512² resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from img2mesh.errors import InvalidInput
from img2mesh.contract import FRAMED_SIZE
from img2mesh.framing import composite_on_gray, condition_image, framed_photo, resize_foreground


def test_crop_drops_last_row_and_column_and_pads_bottom_right() -> None:
    rng = np.random.default_rng(1)
    rgba = np.zeros((60, 50, 4), dtype=np.uint8)
    rgba[10:21, 5:35] = rng.integers(1, 256, (11, 30, 4), dtype=np.uint8)  # foreground rows 10–20, columns 5–34
    framed = resize_foreground(rgba, 0.85)
    # Crop [10:20, 5:34] = 10×29 (exclusive ends drop row 20 and column 34); square 29 pads 9 above,
    # 10 below; int(29 / 0.85) = 34 pads 2 before and 3 after.
    assert framed.shape == (34, 34, 4)
    np.testing.assert_array_equal(framed[11:21, 2:31], rgba[10:20, 5:34])
    outside = np.ones((34, 34), dtype=bool)
    outside[11:21, 2:31] = False
    assert not framed[outside].any()  # transparent black padding


def test_foreground_ratio_sets_the_final_side() -> None:
    rgba = np.zeros((100, 100, 4), dtype=np.uint8)
    rgba[0:41, 0:41] = 255
    assert resize_foreground(rgba, 1.0).shape == (40, 40, 4)
    assert resize_foreground(rgba, 0.5).shape == (80, 80, 4)
    assert resize_foreground(rgba, 0.7).shape == (int(40 / 0.7), int(40 / 0.7), 4)


def test_gray_composite_truncates() -> None:
    rgba = np.array([[[255, 255, 255, 0], [255, 0, 0, 255], [200, 100, 0, 51]]], dtype=np.uint8)
    # Transparent: 0.5·255 = 127.5 → 127 (rounding would give 128). Opaque keeps its colour.
    np.testing.assert_array_equal(composite_on_gray(rgba)[0, :2], [[127, 127, 127], [255, 0, 0]])
    alpha = np.float32(51) / np.float32(255)
    expected = ((np.array([200, 100, 0], np.float32) / 255 * alpha + (1 - alpha) * 0.5) * 255).astype(np.uint8)
    np.testing.assert_array_equal(composite_on_gray(rgba)[0, 2], expected)


def official_condition(rgba: np.ndarray, ratio: float) -> np.ndarray:
    """run.py's grey composite (whole image at once) then TSR's ``F.interpolate(bilinear, antialias=True)``."""
    image = resize_foreground(rgba, ratio).astype(np.float32) / 255.0
    image = image[:, :, :3] * image[:, :, 3:4] + (1 - image[:, :, 3:4]) * 0.5
    framed = (image * 255.0).astype(np.uint8)
    tensor = torch.from_numpy(framed.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    return F.interpolate(tensor, (512, 512), mode="bilinear", align_corners=False, antialias=True)[0].numpy()


@pytest.mark.parametrize(("height", "width", "box"), [(200, 300, (40, 120, 90, 190)), (1400, 1000, (100, 1300, 50, 950))], ids=["upsample", "downsample"])
def test_condition_image_matches_torch(height: int, width: int, box: tuple[int, int, int, int]) -> None:
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    top, bottom, left, right = box
    rgba[..., 3] = 0
    rgba[top:bottom, left:right, 3] = rng.integers(1, 256, (bottom - top, right - left), dtype=np.uint8)
    ours = condition_image(rgba, foreground_ratio=0.85)
    reference = official_condition(rgba, 0.85)
    difference = float(np.abs(ours - reference).max())
    print(f"condition_image vs torch F.interpolate ({height}×{width}): max |Δ| = {difference:.3g}")
    assert ours.shape == (3, 512, 512) and ours.dtype == np.float32
    assert 0.0 <= ours.min() and ours.max() <= 1.0
    assert difference < 1e-5


def test_condition_image_of_the_product_photo(product_rgba: np.ndarray) -> None:
    cut = product_rgba.copy()
    cut[..., 3] = np.where(cut[..., :3].min(axis=2) < 240, 255, 0)
    condition = condition_image(cut)
    assert condition.shape == (3, 512, 512)
    assert np.allclose(condition[:, 2, 2], 127 / 255)  # the corner is the grey background


@pytest.mark.parametrize(
    ("alpha_box", "message"),
    [(None, "no foreground object found: background removal left every pixel transparent"), ((5, 6, 7, 8), "single pixel")],
    ids=["no-foreground", "one-pixel"],
)
def test_missing_foreground_is_an_invalid_input(alpha_box: tuple[int, int, int, int] | None, message: str) -> None:
    rgba = np.full((20, 20, 4), 255, dtype=np.uint8)
    rgba[..., 3] = 0
    if alpha_box is not None:
        top, bottom, left, right = alpha_box
        rgba[top:bottom, left:right, 3] = 255
    with pytest.raises(InvalidInput, match=message):
        condition_image(rgba)


def test_the_framed_photo_is_the_cut_out_where_the_condition_has_it() -> None:
    """FRAMED_PHOTO frames the cut-out as the condition does: the product where the condition is not
    grey, in its own colours, the rest transparent."""
    rgba = np.zeros((300, 500, 4), dtype=np.uint8)
    rgba[60:240, 100:250] = (200, 40, 40, 255)  # a red product, 150 wide and 180 high
    rgba[60:120, 250:400] = (40, 60, 200, 255)  # with a blue arm to the right: 300 wide in all
    framed = resize_foreground(rgba, 0.85)
    photo = framed_photo(framed)
    assert photo.shape == (FRAMED_SIZE, FRAMED_SIZE, 4) and photo.dtype == np.uint8
    product = photo[..., 3] >= 128
    condition = condition_image(rgba, foreground_ratio=0.85)
    not_grey = np.abs(condition - 127 / 255).max(axis=0) > 0.2
    shrunk = np.asarray(Image.fromarray(not_grey.astype(np.uint8) * 255).resize((FRAMED_SIZE,) * 2)) >= 128
    assert (product == shrunk).mean() > 0.995
    columns = np.nonzero(product.any(axis=0))[0]
    assert abs((columns.ptp() + 1) / FRAMED_SIZE - 0.85) < 0.01  # the wider side fills the foreground ratio
    assert tuple(photo[100, 60, :3]) == (200, 40, 40) and tuple(photo[75, 200, :3]) == (40, 60, 200)
    assert photo[5, 5, 3] == 0
