"""Every OpenVINO model of the project is compiled here, so precision is explicit everywhere.

OpenVINO's CPU plugin computes in bfloat16 by default on processors with AMX or AVX512-BF16,
which changes the numbers; models compiled here run in fp32 unless a caller asks for ``bf16`` (an
opt-in, docs/runbook.md, "CPU engines"). The ONNX file is read by OpenVINO's runtime directly:
``openvino.convert_model``, the one entry point that reports telemetry, is never called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openvino as ov

from img2mesh.contract import INFERENCE_PRECISIONS


def openvino_model(path: str | Path, *, precision: str = INFERENCE_PRECISIONS[0], threads: int | None = None) -> Any:
    """``path`` (an ONNX file) compiled for the CPU, for one request at a time."""
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(INFERENCE_PRECISIONS)}, got {precision!r}")
    core = ov.Core()
    config: dict[str, str] = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    return core.compile_model(core.read_model(str(path)), "CPU", config)
