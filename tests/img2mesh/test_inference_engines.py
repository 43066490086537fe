"""The ONNX engines are opened in one place each, with telemetry off and fp32 unless asked otherwise."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import onnx
import openvino as ov
import pytest
from onnx import TensorProto, helper

from img2mesh.onnxruntime_sessions import onnxruntime_session
from img2mesh.openvino_models import openvino_model

ROOT = Path(__file__).resolve().parents[2]
HOMES = {Path("img2mesh/onnxruntime_sessions.py"), Path("img2mesh/openvino_models.py"), Path(__file__).relative_to(ROOT)}
OPENERS = re.compile(r"\bInferenceSession\(|\.compile_model\(|\bconvert_model\(")


@pytest.fixture(scope="module")
def matmul(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-node graph y = x·W with dynamic batch."""
    weight = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64])],
        [onnx.numpy_helper.from_array(weight, "w")],
    )
    path = tmp_path_factory.mktemp("engines") / "matmul.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def test_no_session_is_opened_anywhere_else() -> None:
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.py"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    found = [f"{name}:{number}: {line.strip()}" for name in listed if Path(name) not in HOMES
             for number, line in enumerate((ROOT / name).read_text().splitlines(), 1) if OPENERS.search(line)]
    assert not found, "open engines through img2mesh.onnxruntime_sessions / img2mesh.openvino_models:\n" + "\n".join(found)


def test_openvino_runs_fp32_unless_bf16_is_asked_for(matmul: Path) -> None:
    """On CPUs with AMX or AVX512-BF16 OpenVINO would pick bf16 by itself."""
    assert openvino_model(matmul).get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    with pytest.raises(ValueError, match="precision must be one of f32, bf16"):
        openvino_model(matmul, precision="fp16")


def test_both_engines_compute_the_same_function(matmul: Path) -> None:
    x = np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32)
    weight = onnx.numpy_helper.to_array(onnx.load(matmul).graph.initializer[0])
    expected = x.astype(np.float64) @ weight.astype(np.float64)
    from_ort = onnxruntime_session(matmul).run(["y"], {"x": x})[0]
    compiled = openvino_model(matmul)
    from_openvino = compiled({"x": x})[compiled.output("y")]
    for actual in (from_ort, from_openvino):
        assert np.abs(actual - expected).max() / np.abs(expected).max() < 1e-5
