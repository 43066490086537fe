from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from triposr.models.nerf_decoder import sample_triplanes
from triposr.system import TSR


def _bicubic_matrix(source: int, target: int, scale: float) -> np.ndarray:
    """Independent float64 bicubic (A = -0.75, edge-clamped) resize matrix, PyTorch's scale-factor mapping."""
    def weight(d: float) -> float:
        a, d = -0.75, abs(d)
        if d <= 1:
            return (a + 2) * d**3 - (a + 3) * d**2 + 1
        return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a if d < 2 else 0.0

    matrix = np.zeros((target, source))
    for dst in range(target):
        src = (dst + 0.5) / scale - 0.5
        base = math.floor(src)
        for index in range(base - 1, base + 3):
            matrix[dst, min(max(index, 0), source - 1)] += weight(src - index)
    return matrix


def test_position_table_uses_the_dino_scale_factor_rule(tiny_random: TSR) -> None:
    embeddings = tiny_random.image_tokenizer.model.embeddings
    table = embeddings.position_embeddings.detach().double().numpy()[0]
    side = math.isqrt(table.shape[0] - 1)  # 14 for image_size 224, patch 16
    grid = 512 // 16
    matrix = _bicubic_matrix(side, grid, (grid + 0.1) / side)
    patches = table[1:].reshape(side, side, -1)
    expected = np.einsum("ij,jkc,lk->ilc", matrix, patches, matrix).reshape(grid * grid, -1)
    ours = tiny_random.vit_position_embeddings().detach().double().numpy()[0]
    assert ours.shape == (1 + grid * grid, table.shape[1])
    np.testing.assert_allclose(ours[0], table[0])
    np.testing.assert_allclose(ours[1:], expected, atol=1e-6)
    # At the pretraining size the table is used as stored.
    assert embeddings.interpolated_position_embeddings(224, 224) is embeddings.position_embeddings


def test_encode_shapes_and_batch_independence(tiny_random: TSR) -> None:
    images = torch.rand(2, 3, 512, 512, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        codes = tiny_random.encode(images)
        single = tiny_random.encode(images[1:])
    assert codes.shape == (2, *tiny_random.scene_code_shape) == (2, 3, 8, 32, 32)
    torch.testing.assert_close(codes[1:], single, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(codes[0], codes[1])  # the image matters


def test_encode_resizes_other_sizes_like_the_official_preprocessor(tiny_random: TSR) -> None:
    images = torch.rand(1, 3, 300, 200, generator=torch.Generator().manual_seed(2))
    resized = torch.nn.functional.interpolate(images, (512, 512), mode="bilinear", align_corners=False, antialias=True)
    with torch.no_grad():
        torch.testing.assert_close(tiny_random.encode(images), tiny_random.encode(resized))


def test_decode_shapes_ranges_and_plane_pairs(tiny_random: TSR) -> None:
    generator = torch.Generator().manual_seed(3)
    codes = torch.randn(2, *tiny_random.scene_code_shape, generator=generator)
    points = (torch.rand(2, 1000, 3, generator=generator) * 2 - 1) * tiny_random.radius
    with torch.no_grad():
        density, color = tiny_random.decode(codes, points)
    assert density.shape == (2, 1000, 1) and color.shape == (2, 1000, 3)
    assert bool((density > 0).all()) and bool(((color > 0) & (color < 1)).all())
    # Plane 2 is indexed by (y, z) only: changing it must not affect a point's features through x.
    features = sample_triplanes(codes, points, tiny_random.radius)
    moved = points.clone()
    moved[..., 0] = 0.3
    channels = tiny_random.scene_code_shape[1]
    torch.testing.assert_close(features[..., 2 * channels :], sample_triplanes(codes, moved, tiny_random.radius)[..., 2 * channels :])


@pytest.mark.parametrize("shape", [(1, 4, 512, 512), (3, 512, 512)])
def test_encode_rejects_non_rgb_batches(tiny_random: TSR, shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="RGB images"):
        tiny_random.encode(torch.rand(shape))
