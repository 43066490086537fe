"""The silhouette checkpoint's field follows triposr/silhouette.py's documented formula, through the real network.

The expected field is computed here from the docstring's formula alone (numpy, float64): per 8-pixel
sub-patch the cover and the piecewise-linear logit, bilinear sampling with zero padding, the
extrusion's min. The model must match it at sampled points for a drawn photo and for pure noise (every
patch different, so a routing slip to a neighbouring patch shows).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from export.triposr_onnx import compare_with_eager, export_decoder, export_encoder
from triposr.checkpoint import load_tsr
from triposr.silhouette import BACKGROUND, COVER_GAIN, DEPTH_GAIN, FOREGROUND_DISTANCES, HALF_DEPTH, logit_knots
from triposr.synthetic import write_checkpoint
from triposr.system import TSR

LOGIT_KNOTS = logit_knots()[1].numpy()


@pytest.fixture(scope="module")
def small_silhouette(tmp_path_factory: pytest.TempPathFactory) -> TSR:
    return load_tsr(write_checkpoint(tmp_path_factory.mktemp("small_silhouette"), size="small", kind="silhouette"))


def drawn_condition() -> np.ndarray:
    """A condition image [512, 512, 3]: an asymmetric product (red bar left, blue foot, green flag) on grey."""
    image = np.full((512, 512, 3), BACKGROUND)
    image[100:400, 100:180] = (0.9, 0.1, 0.1)
    image[330:400, 180:380] = (0.1, 0.2, 0.9)
    image[150:203, 300:421] = (0.2, 0.8, 0.3)
    image[250:260, 250:255] = (0.55, 0.5, 0.45)  # close to grey: partly covered
    return image


def _sub_patch_grids(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cover [64, 64] and logits [64, 64, 3] per sub-patch, image rows (top first)."""
    samples = image[1::2, 1::2].reshape(64, 4, 64, 4, 3)  # pixels at odd offsets 1, 3, 5, 7
    low, high = FOREGROUND_DISTANCES
    distance = np.abs(samples - BACKGROUND).sum(-1)
    cover = np.clip((distance - low) / (high - low), 0.0, 1.0).mean(axis=(1, 3))
    means = image.reshape(64, 8, 64, 8, 3).mean(axis=(1, 3))
    knots = 1 / (1 + np.exp(-LOGIT_KNOTS))
    logits = np.interp(means, knots, LOGIT_KNOTS)  # flat beyond the end knots
    return cover, logits


def _bilinear(grid: np.ndarray, column: np.ndarray, row: np.ndarray, radius: float) -> np.ndarray:
    """grid_sample(align_corners=False, zero padding) of ``grid`` [H, W, ...] at world (column, row) coordinates."""
    side = grid.shape[0]
    fx, fy = (column + radius) / (2 * radius) * side - 0.5, (row + radius) / (2 * radius) * side - 0.5
    x0, y0 = np.floor(fx).astype(int), np.floor(fy).astype(int)
    result = 0.0
    for dy in (0, 1):
        for dx in (0, 1):
            xs, ys = x0 + dx, y0 + dy
            weight = (1 - np.abs(fx - xs)) * (1 - np.abs(fy - ys))
            inside = (xs >= 0) & (xs < side) & (ys >= 0) & (ys < side)
            value = grid[np.clip(ys, 0, side - 1), np.clip(xs, 0, side - 1)]
            weight = np.where(inside, weight, 0.0).reshape(weight.shape + (1,) * (grid.ndim - 2))
            result = result + weight * value
    return result


def expected_field(image: np.ndarray, points: np.ndarray, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """The documented ``min(a, b)`` (log of density / 25) and colour at world ``points`` [N, 3]."""
    cover, logits = _sub_patch_grids(image)
    x, y, z = points.T
    # Texel rows grow with z, image rows with depth down the photo: texel row rho is image row 63 - rho.
    cover_at = _bilinear(cover[::-1], y, z, radius)
    logit_at = _bilinear(logits[::-1], y, z, radius)
    centres = radius * ((2 * np.arange(64) + 1) / 64 - 1)
    x_squared = _bilinear(np.broadcast_to(centres**2, (64, 64)), x, y, radius)
    margin = np.minimum(COVER_GAIN * (cover_at - 0.5), DEPTH_GAIN * (HALF_DEPTH**2 - x_squared))
    return margin, 1 / (1 + np.exp(-logit_at))


def _model_field(model: TSR, image: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        codes = model.encode(torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None])
        density, colour = model.decode(codes, torch.from_numpy(points.astype(np.float32))[None])
    return np.log(density[0, :, 0].double().numpy() / 25.0), colour[0].double().numpy()


def _points(count: int, radius: float, seed: int) -> np.ndarray:
    generator = np.random.default_rng(seed)
    x = generator.uniform(-2 * HALF_DEPTH, 2 * HALF_DEPTH, count)
    y, z = generator.uniform(-radius, radius, (2, count))
    return np.stack((x, y, z), axis=1)


def _assert_matches(model: TSR, image: np.ndarray, seed: int) -> None:
    points = _points(20000, model.radius, seed)
    margin, colour = _model_field(model, image, points)
    want_margin, want_colour = expected_field(image, points, model.radius)
    # Exact within e^+-9 of the iso-level; further out the decoder's SiLUs only keep the sign.
    near = np.abs(want_margin) < 9
    print(f"\n{near.sum()} points near the surface: max |log density error| {np.abs(margin - want_margin)[near].max():.4f}; "
          f"max colour error {np.abs(colour - want_colour).max() * 255:.3f} / 255")
    assert np.abs(margin - want_margin)[near].max() < 0.05
    assert np.array_equal(margin[~near] > 0, want_margin[~near] > 0)
    assert np.abs(colour - want_colour).max() < 0.5 / 255


def test_density_and_colour_follow_the_formula_on_a_drawn_photo(small_silhouette: TSR) -> None:
    image = drawn_condition()
    _assert_matches(small_silhouette, image, seed=0)
    front, behind = np.array([[0.0, -0.45, 0.3]]), np.array([[0.3, -0.45, 0.3]])  # inside the red bar; past the depth
    assert _model_field(small_silhouette, image, front)[0][0] > 0 > _model_field(small_silhouette, image, behind)[0][0]
    assert _model_field(small_silhouette, image, front)[1][0][0] > 0.85, "the red bar is red"


def test_every_patch_is_routed_to_its_own_image_patch(small_silhouette: TSR) -> None:
    # Noise makes every sub-patch's cover and colour different from its neighbours'.
    image = np.random.default_rng(1).uniform(0, 1, (512, 512, 3))
    _assert_matches(small_silhouette, image, seed=1)


def test_the_field_is_the_photo_frame_right_way_round(small_silhouette: TSR) -> None:
    """Image-right is +Y and image-up is +Z: a product in the top-right corner sits at y > 0, z > 0."""
    image = np.full((512, 512, 3), BACKGROUND)
    image[40:140, 372:472] = (0.9, 0.9, 0.1)
    corner = np.array([[0.0, 0.55, 0.55], [0.0, -0.55, 0.55], [0.0, 0.55, -0.55], [0.0, -0.55, -0.55]])
    margin, _ = _model_field(small_silhouette, image, corner)
    assert margin[0] > 0 and bool((margin[1:] < 0).all()), margin


def test_an_architecture_too_small_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        write_checkpoint(tmp_path, size="tiny", kind="silhouette")


def test_onnxruntime_computes_the_same_field(small_silhouette: TSR, tmp_path: Path) -> None:
    """The exported graphs keep the routing: fp32 ONNX Runtime on CPU matches eager PyTorch."""
    encoder = export_encoder(small_silhouette, tmp_path / "encoder" / "model.onnx")
    decoder = export_decoder(small_silhouette, tmp_path / "decoder" / "model.onnx")
    images = torch.from_numpy(np.stack([drawn_condition(), np.random.default_rng(2).uniform(0, 1, (512, 512, 3))]))
    points = torch.from_numpy(np.stack([_points(3000, small_silhouette.radius, seed) for seed in (3, 4)]).astype(np.float32))
    parity = compare_with_eager(small_silhouette, encoder, decoder, images=images.permute(0, 3, 1, 2).float(), points=points)
    print(f"\nONNX vs eager (small silhouette): {parity}")
    assert all(errors["max_rel"] <= 1e-4 for errors in parity.values()), parity  # the tiny models' bound
