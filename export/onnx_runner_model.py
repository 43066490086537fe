"""Python-backend model that serves ``model.onnx`` beside it with ONNX Runtime.

The ``tritonserver`` inside the nvidia-pytriton wheel has only the Python backend, so the
portable repository serves ONNX files whose fastest CPU engine is ONNX Runtime through this model
(``export.repository`` decides which); the gpu and cpu flavours use Triton's native
``onnxruntime`` backend on the very same file. ``python -m export`` copies this file to
``<model>/<version>/model.py``. Tensor names come from config.pbtxt, which the exporter writes
from the contract, so the two cannot disagree.
"""

import triton_python_backend_utils as pb_utils

from img2mesh.contract import CONFIG_INTRA_OP_THREADS
from img2mesh.onnxruntime_sessions import onnxruntime_session
from img2mesh.triton_model_io import ServedOnnx, answer_batched, model_parameter


class TritonPythonModel:
    def initialize(self, args):
        self.served = ServedOnnx.from_args(args)
        threads = model_parameter(self.served.config, CONFIG_INTRA_OP_THREADS, "")
        self.session = onnxruntime_session(self.served.path, threads=int(threads) if threads else None)

    def execute(self, requests):
        served = self.served
        return answer_batched(
            pb_utils, requests, served.input_names, served.output_names,
            lambda feeds: self.session.run(served.output_names, feeds), "onnxruntime",
        )
