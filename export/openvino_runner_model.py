"""Python-backend model that serves ``model.onnx`` beside it with OpenVINO on the CPU, in fp32.

OpenVINO is the fastest CPU engine measured for the TripoSR encoder and decoder
(``python -m bench.engines``), so the cpu and portable flavours serve them through this model.
It is a Python model rather than Triton's native ``openvino`` backend because that backend (24.10)
can only switch bfloat16 on, never off, and OpenVINO computes in bfloat16 by default on CPUs with
AMX or AVX512-BF16: the native backend would silently change the numbers on exactly the hosts
that have them. Here the precision is explicit: config.pbtxt's ``inference_precision`` (``f32``
unless an operator opts into ``bf16``). ``python -m export`` copies this file to
``<model>/<version>/model.py``; tensor names come from config.pbtxt.
"""

import triton_python_backend_utils as pb_utils

from img2mesh.contract import CONFIG_INFERENCE_PRECISION, INFERENCE_PRECISIONS
from img2mesh.openvino_models import openvino_model
from img2mesh.triton_model_io import ServedOnnx, answer_batched, model_parameter


class TritonPythonModel:
    def initialize(self, args):
        self.served = ServedOnnx.from_args(args)
        precision = model_parameter(self.served.config, CONFIG_INFERENCE_PRECISION, INFERENCE_PRECISIONS[0])
        self.model = openvino_model(self.served.path, precision=precision)
        self.request = self.model.create_infer_request()

    def execute(self, requests):
        served = self.served
        return answer_batched(pb_utils, requests, served.input_names, served.output_names, self._infer, "openvino")

    def _infer(self, feeds):
        results = self.request.infer(feeds)
        return [results[self.model.output(name)] for name in self.served.output_names]
