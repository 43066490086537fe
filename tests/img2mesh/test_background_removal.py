"""Our U²-Net pre/post-processing against rembg 2.0.69 itself, on the real u2netp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from img2mesh.background_removal import cut_out, foreground_rgba, u2net_input, u2net_mask
from img2mesh.image_decoding import is_cut_out
from img2mesh.onnxruntime_sessions import onnxruntime_session


@pytest.fixture()
def rembg_session(u2netp: Path, monkeypatch: pytest.MonkeyPatch):
    """rembg's own ``u2netp`` session: its downloader finds the verified file in ``U2NET_HOME``."""
    monkeypatch.setenv("U2NET_HOME", str(u2netp.parent))
    import rembg

    return rembg.new_session("u2netp", providers=["CPUExecutionProvider"])


def predict(model: Path, rgba: np.ndarray) -> np.ndarray:
    session = onnxruntime_session(model)
    return session.run(None, {session.get_inputs()[0].name: u2net_input(rgba)[None]})[0][0]


def test_u2net_input_is_rembgs_tensor(rembg_session, product_rgba: np.ndarray) -> None:
    image = Image.fromarray(product_rgba[..., :3])
    expected = rembg_session.normalize(image, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), (320, 320))
    (tensor,) = expected.values()
    ours = u2net_input(product_rgba)
    assert ours.shape == (3, 320, 320) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, tensor[0])


def test_cut_out_matches_rembg_remove(rembg_session, u2netp: Path, product_rgba: np.ndarray) -> None:
    import rembg

    theirs = np.asarray(rembg.remove(Image.fromarray(product_rgba[..., :3]), session=rembg_session))
    ours = foreground_rgba(product_rgba, predict(u2netp, product_rgba))
    assert ours.shape == theirs.shape == product_rgba.shape
    np.testing.assert_array_equal(ours, theirs)  # bit for bit
    # The mask really separates the mug from the white background.
    assert ours[240, 250, 3] >= 250 and ours[10, 10, 3] == 0


def test_image_with_transparency_keeps_its_own_alpha(product_rgba: np.ndarray) -> None:
    cut = product_rgba.copy()
    cut[:, :100, 3] = 0
    prediction = np.ones((1, 320, 320), dtype=np.float32)
    assert foreground_rgba(cut, prediction) is cut


def test_an_alpha_that_cuts_nothing_out_is_not_a_cut_out(product_rgba: np.ndarray) -> None:
    """A few anti-aliased corner pixels (scikit-image's horse.png has 12) do not make a cut-out: U²-Net
    cuts the product out, as for an opaque photo."""
    nearly_opaque = product_rgba.copy()
    nearly_opaque[0, :4, 3] = 110
    nearly_opaque[-1, -8:, 3] = 217
    assert not is_cut_out(nearly_opaque) and is_cut_out(_with_transparent_margin(product_rgba))
    prediction = np.zeros((1, 320, 320), dtype=np.float32)
    prediction[0, 100:200, 120:220] = 0.9
    cut = foreground_rgba(nearly_opaque, prediction)
    assert cut is not nearly_opaque and cut[5, 5, 3] == 0 and cut[240, 320, 3] == 255


def _with_transparent_margin(rgba: np.ndarray) -> np.ndarray:
    """A real cut-out: a 2-pixel transparent margin is already more than one pixel in a thousand."""
    cut = rgba.copy()
    cut[:2], cut[-2:], cut[:, :2], cut[:, -2:] = 0, 0, 0, 0
    return cut


def test_mask_is_resized_to_the_original_size() -> None:
    prediction = np.zeros((1, 320, 320), dtype=np.float32)
    prediction[0, 100:200, 120:220] = 0.9
    mask = u2net_mask(prediction + 0.05, (90, 130))
    assert mask.shape == (90, 130) and mask.dtype == np.uint8
    assert mask.max() == 255 and mask.min() == 0  # min-max normalised, not absolute


def test_constant_prediction_gives_an_empty_mask() -> None:
    mask = u2net_mask(np.full((1, 320, 320), 0.3, dtype=np.float32), (10, 20))
    assert mask.shape == (10, 20) and not mask.any()


def test_cut_out_scales_colour_by_the_mask(product_rgba: np.ndarray) -> None:
    half = np.full(product_rgba.shape[:2], 128, dtype=np.uint8)
    cut = cut_out(product_rgba, half)
    assert (cut[..., 3] == 128).all()
    assert tuple(cut[10, 10, :3]) == (128, 128, 128)  # white × 128/255, rounded as PIL does
