"""Python-backend model that serves ``model.onnx`` beside it with onnxruntime (portable flavour).

The ``tritonserver`` inside the nvidia-pytriton wheel has only the Python backend, so the
portable repository serves each ONNX file through this model; production configs use Triton's
native ``onnxruntime`` backend on the very same file. ``python -m export`` copies this file to
``<model>/<version>/model.py``. Tensor names come from config.pbtxt, which the exporter writes
from the ONNX graph, so the two cannot disagree.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.output_names = [output["name"] for output in config["output"]]
        self.input_names = [tensor["name"] for tensor in config["input"]]
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        options = ort.SessionOptions()
        threads = config.get("parameters", {}).get("intra_op_thread_count", {}).get("string_value")
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])

    def execute(self, requests):
        """Run requests whose shapes agree as one batch, like the native backend's batcher."""
        groups = {}
        for index, request in enumerate(requests):
            arrays = [pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names]
            key = tuple(array.shape[1:] for array in arrays)
            groups.setdefault(key, []).append((index, arrays))
        responses = [None] * len(requests)
        for members in groups.values():
            feeds = {
                name: np.concatenate([arrays[position] for _, arrays in members])
                for position, name in enumerate(self.input_names)
            }
            try:
                outputs = self.session.run(self.output_names, feeds)
            except Exception as error:  # noqa: BLE001 - returned to the callers of this batch
                for index, _ in members:
                    responses[index] = pb_utils.InferenceResponse(
                        output_tensors=[], error=pb_utils.TritonError(f"onnxruntime: {error}")
                    )
                continue
            offset = 0
            for index, arrays in members:
                size = arrays[0].shape[0]
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(output[offset : offset + size]))
                    for name, output in zip(self.output_names, outputs)
                ]
                responses[index] = pb_utils.InferenceResponse(output_tensors=tensors)
                offset += size
        return responses
