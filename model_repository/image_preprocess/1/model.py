"""Encoded image bytes → U²-Net input, exactly as rembg prepares it.

Decoding is where hostile files are caught (not an image, truncated, zero-size, decompression
bombs), so this first step also validates the request parameters: a bad request fails here,
before any network runs.
"""

import json

import triton_python_backend_utils as pb_utils

from img2mesh.background_removal import u2net_input
from img2mesh.contract import CONFIG_MAX_PIXELS, MAX_IMAGE_PIXELS, U2NET_INPUT
from img2mesh.triton_model_io import (
    answer_each,
    mesh_parameters,
    model_parameter,
    request_image,
)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.max_pixels = int(model_parameter(config, CONFIG_MAX_PIXELS, str(MAX_IMAGE_PIXELS)))

    def execute(self, requests):
        return answer_each(pb_utils, requests, self._preprocess)

    def _preprocess(self, request):
        mesh_parameters(request)
        rgba = request_image(pb_utils, request, self.max_pixels)
        return [pb_utils.Tensor(U2NET_INPUT, u2net_input(rgba)[None])]
