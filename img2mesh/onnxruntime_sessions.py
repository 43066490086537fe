"""Every ONNX Runtime session of the project is opened here, so its options are the same everywhere.

The Python-backend runner, the eager reference's U²-Net, the exporter's parity checks, the tests
and the benchmarks all call :func:`onnxruntime_session`: telemetry is always off and the logs
show errors only. `import img2mesh` has already put `ORT_DISABLE_TELEMETRY=1` into the environment
(`img2mesh/telemetry.py`), the one switch ONNX Runtime honours at initialisation;
`disable_telemetry_events()` stays as a second guard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort


def onnxruntime_session(path: str | Path, *, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session of ``path`` with every graph optimisation."""
    ort.disable_telemetry_events()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
