"""prepare_u2net on the synthetic U²-Net: names, pruning, dynamic batch, parity, download errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import Fail

from export.rembg_onnx import U2NET_MD5, prepare_u2net
from export.u2net_synthetic import OUTPUT_NAMES, synthetic_product_photo
from img2mesh.background_removal import u2net_input
from img2mesh.contract import REMBG
from img2mesh.onnxruntime_sessions import onnxruntime_session


@pytest.fixture(scope="module")
def prepared(u2net_like: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_u2net(u2net_like, tmp_path_factory.mktemp(REMBG) / "1" / "model.onnx", verify_checksum=False)


def photo_inputs() -> np.ndarray:
    colours = ((196, 48, 40), (30, 140, 60), (40, 90, 200))
    return np.stack([u2net_input(np.asarray(synthetic_product_photo((400, 300), colour).convert("RGBA"))) for colour in colours])


def test_signature_is_renamed_pruned_and_batch_dynamic(prepared: Path) -> None:
    model = onnx.load(str(prepared))
    onnx.checker.check_model(model, full_check=True)
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == "input" and graph_output.name == "mask"
    assert [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim] == ["batch", 3, 320, 320]
    assert [d.dim_param or d.dim_value for d in graph_output.type.tensor_type.shape.dim] == ["batch", 1, 320, 320]
    produced = {name for node in model.graph.node for name in node.output}
    assert not produced & set(OUTPUT_NAMES[1:])  # the side outputs' sigmoids are gone


def test_any_batch_equals_the_original_image_by_image(u2net_like: Path, prepared: Path) -> None:
    images = photo_inputs()
    original = onnxruntime_session(u2net_like)
    expected = np.concatenate([original.run(None, {"input.1": image[None]})[0] for image in images])
    rewritten = onnxruntime_session(prepared)
    (batched,) = rewritten.run(["mask"], {"input": images})
    assert batched.shape == (3, 1, 320, 320)
    difference = float(np.abs(batched - expected).max())
    print(f"prepared U²-Net, batch 3 vs original one by one: max |Δ| = {difference:.3g}")
    assert difference < 1e-5


def test_the_synthetic_file_really_pins_the_batch(u2net_like: Path, tmp_path: Path) -> None:
    """Only declaring the batch dynamic is not enough: the constant Resize/Reshape shapes must go."""
    model = onnx.load(str(u2net_like))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    naive = tmp_path / "naive.onnx"
    onnx.save(model, str(naive))
    session = onnxruntime_session(naive)
    with pytest.raises(Fail, match="cannot be reshaped to the requested shape"):
        session.run(None, {"input.1": photo_inputs()[:2]})


def test_checksum_is_checked_unless_disabled(u2net_like: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"not rembg's u2net.onnx \\({U2NET_MD5}\\).*verify_checksum=False"):
        prepare_u2net(u2net_like, tmp_path / "model.onnx")


def test_failed_download_names_the_offline_alternatives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An unreachable proxy makes the download fail fast and the same way with or without internet.
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="could not download rembg's u2net.onnx") as raised:
        prepare_u2net(None, tmp_path / "model.onnx", cache_dir=cache)
    message = str(raised.value)
    assert "`source` argument" in message and str(cache / "u2net.onnx") in message and "U2NET_HOME" in message
