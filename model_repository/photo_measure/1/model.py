"""Image bytes + U²-Net's raw mask → the photo check's measures and problems, as JSON.

The last step of the ``photo_check`` ensemble (docs/photo-check.md): the image is decoded again,
as in ``foreground``, for its size and for its own alpha, which is the mask of a photo that is
a cut-out. The measures, thresholds and messages are ``img2mesh.photo_measures``'.
"""

import json

import numpy as np
import triton_python_backend_utils as pb_utils

from img2mesh.contract import CONFIG_MAX_PIXELS, MASK, MAX_IMAGE_PIXELS, PHOTO_MEASURES
from img2mesh.photo_measures import measure_photo
from img2mesh.triton_model_io import answer_each, input_array, model_parameter, request_image


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.max_pixels = int(model_parameter(config, CONFIG_MAX_PIXELS, str(MAX_IMAGE_PIXELS)))

    def execute(self, requests):
        return answer_each(pb_utils, requests, self._measure)

    def _measure(self, request):
        rgba = request_image(pb_utils, request, self.max_pixels)
        prediction = input_array(pb_utils, request, MASK)[0]
        measures = measure_photo(rgba, prediction)
        return [pb_utils.Tensor(PHOTO_MEASURES, np.array([[measures.to_json().encode()]], dtype=np.object_))]
