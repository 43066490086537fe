"""Stamp an exported ONNX graph with the repository version it was written as.

The worker must report which model version produced each job, also while ops roll from one
version to the next. Triton's ensemble response only names the ensemble's own version, so the
TripoSR graphs carry an extra output ``version`` (INT64, one value per batch item) holding the
number the exporter wrote them as; it costs nothing at inference time.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from img2mesh.contract import VERSION


def add_version_output(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """Return ``model`` with an output ``version`` of shape [batch, 1] filled with ``version``."""
    if any(output.name == VERSION for output in model.graph.output):
        raise ValueError(f"the graph already has an output named {VERSION!r}")
    first_input = model.graph.input[0].name
    graph = model.graph
    prefix = "version_tag_"
    graph.initializer.extend(
        [
            helper.make_tensor(f"{prefix}value", TensorProto.INT64, [1, 1], [version]),
            helper.make_tensor(f"{prefix}start", TensorProto.INT64, [1], [0]),
            helper.make_tensor(f"{prefix}end", TensorProto.INT64, [1], [1]),
            helper.make_tensor(f"{prefix}one", TensorProto.INT64, [1], [1]),
        ]
    )
    graph.node.extend(
        [
            helper.make_node("Shape", [first_input], [f"{prefix}shape"]),
            helper.make_node("Slice", [f"{prefix}shape", f"{prefix}start", f"{prefix}end"], [f"{prefix}batch"]),
            helper.make_node("Concat", [f"{prefix}batch", f"{prefix}one"], [f"{prefix}target"], axis=0),
            helper.make_node("Expand", [f"{prefix}value", f"{prefix}target"], [VERSION]),
        ]
    )
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    batch = batch_dim.dim_param or (batch_dim.dim_value if batch_dim.dim_value else "batch")
    graph.output.append(helper.make_tensor_value_info(VERSION, TensorProto.INT64, [batch, 1]))
    return model
