"""Image bytes + U²-Net mask → the 512² condition image TripoSR sees, and the framed cut-out.

The image is decoded again rather than passed between steps so that every tensor inside the
ensemble has a fixed shape and Triton's dynamic batcher can group requests of different photos.
An image that is already a cut-out keeps its own alpha (the official pipeline skips rembg for
it; ``img2mesh.image_decoding.is_cut_out`` says when an alpha is one); otherwise rembg's cut-out
is applied, then the official crop, padding to the
foreground ratio, grey composite and resize. The cut-out as framed (before the grey) also goes back
to the worker, smaller, as ``FRAMED_PHOTO``: what the worker checks the asset's front view against.
"""

import json

import triton_python_backend_utils as pb_utils

from img2mesh.background_removal import foreground_rgba
from img2mesh.contract import CONDITION, CONFIG_MAX_PIXELS, FRAMED_PHOTO, MASK, MAX_IMAGE_PIXELS
from img2mesh.framing import framed_condition, framed_photo, resize_foreground
from img2mesh.triton_model_io import (
    answer_each,
    input_array,
    mesh_parameters,
    model_parameter,
    request_image,
)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.max_pixels = int(model_parameter(config, CONFIG_MAX_PIXELS, str(MAX_IMAGE_PIXELS)))

    def execute(self, requests):
        return answer_each(pb_utils, requests, self._frame)

    def _frame(self, request):
        parameters = mesh_parameters(request)
        rgba = request_image(pb_utils, request, self.max_pixels)
        prediction = input_array(pb_utils, request, MASK)[0]
        framed = resize_foreground(foreground_rgba(rgba, prediction), parameters.foreground_ratio)
        return [
            pb_utils.Tensor(CONDITION, framed_condition(framed)[None]),
            pb_utils.Tensor(FRAMED_PHOTO, framed_photo(framed)[None]),
        ]
