"""The analytic checkpoint's field is a ball of known radius and colour, through the real forward pass."""

from __future__ import annotations

import torch

from tests.triposr.conftest import ANALYTIC_COLOR, ANALYTIC_RADIUS
from triposr.system import TSR

ISO = 25.0


def _field(model: TSR, codes: torch.Tensor, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        density, color = model.decode(codes, points[None])
    return density[0, :, 0] - ISO, color[0]


def test_density_is_a_ball_of_the_intended_radius_and_color(tiny_analytic: TSR) -> None:
    with torch.no_grad():
        codes = tiny_analytic.encode(torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(0)))
    directions = torch.tensor(
        [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1], [1, 1, 1], [-1, 2, -0.5]], dtype=torch.float32
    )
    directions = directions / directions.norm(dim=1, keepdim=True)

    centre, _ = _field(tiny_analytic, codes, torch.zeros(1, 3))
    outside, _ = _field(tiny_analytic, codes, 0.8 * directions)
    assert float(centre) > 0, "positive inside: density above the iso-level at the centre"
    assert bool((outside < 0).all()), "negative outside"

    low, high = torch.zeros(len(directions)), torch.full((len(directions),), 0.8)
    for _ in range(40):  # bisection for density = iso along each direction
        middle = (low + high) / 2
        inside = _field(tiny_analytic, codes, middle[:, None] * directions)[0] > 0
        low, high = torch.where(inside, middle, low), torch.where(inside, high, middle)
    radii = (low + high) / 2
    print(f"\nanalytic ball radii along {len(directions)} directions: {[round(float(r), 5) for r in radii]}")
    assert bool(((radii - ANALYTIC_RADIUS).abs() <= 0.01 * ANALYTIC_RADIUS).all()), radii

    points = (torch.rand(4096, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1) * tiny_analytic.radius
    _, color = _field(tiny_analytic, codes, points)
    torch.testing.assert_close(color, torch.tensor(ANALYTIC_COLOR).expand_as(color), rtol=0, atol=1e-6)


def test_analytic_field_ignores_the_image(tiny_analytic: TSR) -> None:
    images = torch.rand(2, 3, 512, 512, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        codes = tiny_analytic.encode(images)
    assert torch.equal(codes[0], codes[1])
