"""Our U²-Net pre/post-processing against rembg 2.0.69 itself, on the synthetic U²-Net file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from img2mesh.background_removal import cut_out, foreground_rgba, u2net_input, u2net_mask
from img2mesh.onnxruntime_sessions import onnxruntime_session


@pytest.fixture()
def rembg_session(u2net_like: Path, monkeypatch: pytest.MonkeyPatch):
    """rembg's own ``u2net_custom`` session on the synthetic file, which lies inside ``U2NET_HOME``."""
    monkeypatch.setenv("U2NET_HOME", str(u2net_like.parent))
    import rembg

    return rembg.new_session("u2net_custom", model_path=str(u2net_like), providers=["CPUExecutionProvider"])


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


def test_cut_out_matches_rembg_remove(rembg_session, u2net_like: Path, product_rgba: np.ndarray) -> None:
    import rembg

    theirs = np.asarray(rembg.remove(Image.fromarray(product_rgba[..., :3]), session=rembg_session))
    ours = foreground_rgba(product_rgba, predict(u2net_like, product_rgba))
    alpha_error = np.abs(ours[..., 3].astype(float) - theirs[..., 3]).mean() / 255
    colour_error = np.abs(ours[..., :3].astype(float) - theirs[..., :3]).mean() / 255
    print(f"rembg parity: alpha MAE {alpha_error:.3g}, colour MAE {colour_error:.3g} (fraction of 255)")
    assert ours.shape == theirs.shape == product_rgba.shape
    assert alpha_error <= 1 / 255 and colour_error <= 1 / 255
    # The mask really separates the mug from the white background.
    assert ours[240, 250, 3] == 255 and ours[10, 10, 3] == 0


def test_image_with_transparency_keeps_its_own_alpha(product_rgba: np.ndarray) -> None:
    cut = product_rgba.copy()
    cut[:, :100, 3] = 0
    prediction = np.ones((1, 320, 320), dtype=np.float32)
    assert foreground_rgba(cut, prediction) is cut


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
