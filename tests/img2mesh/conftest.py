"""Shared inputs for the img2mesh tests: the product photo, and the generated U²-Net stand-in for
the one plumbing test that needs a graph whose batch is pinned (the real u2netp is ``u2netp``,
from tests/support/triton.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export.u2net_synthetic import synthetic_product_photo, write_u2net_like


@pytest.fixture(scope="session")
def u2net_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated U²-Net stand-in: NOT U²-Net, only for the rewrite's batch-unpinning plumbing."""
    return write_u2net_like(tmp_path_factory.mktemp("u2net_home") / "u2net_like.onnx")


@pytest.fixture(scope="session")
def product_rgba() -> np.ndarray:
    """An opaque RGBA product photo (red mug on white, 640×480)."""
    return np.asarray(synthetic_product_photo().convert("RGBA"))
