"""ONNX graphs of the tiny model: dynamic batch and point count, and fp32 parity with eager PyTorch."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
import torch

from export import triposr_onnx
from export.triposr_onnx import EXPORT_POINTS, compare_with_eager, export_decoder, export_encoder
from img2mesh.onnxruntime_sessions import onnxruntime_session
from triposr.system import TSR


@pytest.fixture(scope="module")
def onnx_paths(tiny_random: TSR, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("onnx")
    return export_encoder(tiny_random, folder / "encoder" / "model.onnx"), export_decoder(tiny_random, folder / "decoder" / "model.onnx")


def _dims(path: Path) -> dict[str, list[int | str]]:
    graph = onnx.load(str(path)).graph
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim] for v in [*graph.input, *graph.output]}


def test_saved_graphs_have_the_contract_names_and_dynamic_axes(onnx_paths: tuple[Path, Path]) -> None:
    encoder, decoder = onnx_paths
    assert _dims(encoder) == {"image": ["batch", 3, 512, 512], "scene_codes": ["batch", 3, 8, 32, 32]}
    assert _dims(decoder) == {
        "scene_codes": ["batch", 3, 8, 32, 32],
        "points": ["batch", "points", 3],
        "density": ["batch", "points", 1],
        "color": ["batch", "points", 3],
    }


def test_onnxruntime_matches_eager_pytorch(tiny_random: TSR, onnx_paths: tuple[Path, Path]) -> None:
    generator = torch.Generator().manual_seed(5)
    images = torch.rand(2, 3, 512, 512, generator=generator)
    points = (torch.rand(2, EXPORT_POINTS - 1096, 3, generator=generator) * 2 - 1) * tiny_random.radius
    parity = compare_with_eager(tiny_random, *onnx_paths, images=images, points=points)
    print()
    for name, errors in parity.items():
        print(f"ONNX vs eager (tiny, fp32, batch 2, N={points.shape[1]}) {name}: max abs {errors['max_abs']:.3g}, max rel {errors['max_rel']:.3g}")
    assert all(errors["max_rel"] <= 1e-4 for errors in parity.values()), parity


@pytest.mark.parametrize(("batch", "count"), [(1, 1), (3, 777)])
def test_other_batch_sizes_and_point_counts_run(tiny_random: TSR, onnx_paths: tuple[Path, Path], batch: int, count: int) -> None:
    encoder = onnxruntime_session(onnx_paths[0])
    decoder = onnxruntime_session(onnx_paths[1])
    images = torch.rand(batch, 3, 512, 512).numpy()
    (codes,) = encoder.run(None, {"image": images})
    points = ((torch.rand(batch, count, 3) * 2 - 1) * tiny_random.radius).numpy()
    density, color = decoder.run(None, {"scene_codes": codes, "points": points})
    assert codes.shape == (batch, *tiny_random.scene_code_shape)
    assert density.shape == (batch, count, 1) and color.shape == (batch, count, 3)


def test_large_weights_go_to_an_external_file_that_travels_with_the_graph(
    tiny_random: TSR, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The official encoder (1.68 GB) is saved this way; Triton loads model.onnx with its data beside it."""
    monkeypatch.setattr(triposr_onnx, "EXTERNAL_DATA_THRESHOLD", 0)
    export_encoder(tiny_random, tmp_path / "staging" / "model.onnx")
    assert (tmp_path / "staging" / "model.onnx.data").stat().st_size > (tmp_path / "staging" / "model.onnx").stat().st_size
    installed = shutil.move(tmp_path / "staging", tmp_path / "1")
    images = torch.rand(1, 3, 512, 512)
    session = onnxruntime_session(Path(installed) / "model.onnx")
    (codes,) = session.run(None, {"image": images.numpy()})
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(codes), tiny_random.encode(images), rtol=1e-4, atol=1e-5)
