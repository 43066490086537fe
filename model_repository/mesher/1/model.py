"""Scene codes → coloured triangle mesh: TripoSR's ``extract_mesh`` with the decoder on Triton.

The decoder is evaluated over the R³ grid through BLS in fixed-size chunks (a fixed size keeps
the decoder's shapes stable for its dynamic batcher and TensorRT profiles), marching cubes runs
here on the CPU, and the decoder is called once more at the final vertices for their colours.
Every BLS call asks for ``DECODER_VERSION``, the version of the encoder that made the scene codes,
so one job never mixes versions while ops roll from one to the next. Cancellation is checked
between chunks, so a client that gave up stops the work.
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from img2mesh.contract import (
    COLOR,
    CONFIG_CHUNK_SIZE,
    CONFIG_DECODER_MODEL,
    DECODER,
    DECODER_CHUNK_POINTS,
    DECODER_VERSION,
    DENSITY,
    FACES,
    MESH_INFO,
    MESHER_SCENE_CODES,
    POINTS,
    SCENE_CODES,
    VERSION,
    VERTEX_COLORS,
    VERTICES,
)
from img2mesh.mesh_extraction import (
    colors_to_uint8,
    grid_chunks,
    iter_chunks,
    marching_cubes,
)
from img2mesh.triton_model_io import (
    DependencyFailed,
    RequestCancelled,
    answer_each,
    input_array,
    mesh_parameters,
    model_parameter,
)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.decoder = model_parameter(config, CONFIG_DECODER_MODEL, DECODER)
        self.chunk_size = int(model_parameter(config, CONFIG_CHUNK_SIZE, str(DECODER_CHUNK_POINTS)))

    def execute(self, requests):
        return answer_each(pb_utils, requests, self._mesh)

    def _mesh(self, request):
        parameters = mesh_parameters(request)
        scene_codes = input_array(pb_utils, request, MESHER_SCENE_CODES)
        version = int(input_array(pb_utils, request, DECODER_VERSION).reshape(-1)[0])
        timings = {}

        started = time.perf_counter()
        density_chunks = []
        for chunk in grid_chunks(parameters.resolution, self.chunk_size):
            if request.is_cancelled():
                raise RequestCancelled()
            density, _, decoder_version = self._decode(scene_codes, chunk, version)
            density_chunks.append(density)
        timings["grid"] = _elapsed_ms(started)

        started = time.perf_counter()
        vertices, faces = marching_cubes(
            np.concatenate(density_chunks), parameters.resolution, parameters.threshold
        )
        timings["marching_cubes"] = _elapsed_ms(started)

        started = time.perf_counter()
        colors = np.concatenate(
            [self._decode(scene_codes, chunk, version)[1] for chunk in iter_chunks(vertices, self.chunk_size)]
        )
        timings["colors"] = _elapsed_ms(started)

        info = {
            "resolution": parameters.resolution,
            "threshold": parameters.threshold,
            "vertex_count": int(len(vertices)),
            "face_count": int(len(faces)),
            "decoder_version": decoder_version,
            "timings_ms": timings,
        }
        return [
            pb_utils.Tensor(VERTICES, vertices[None]),
            pb_utils.Tensor(FACES, faces[None]),
            pb_utils.Tensor(VERTEX_COLORS, colors_to_uint8(colors)[None]),
            pb_utils.Tensor(MESH_INFO, np.array([[json.dumps(info).encode()]], dtype=np.object_)),
        ]

    def _decode(self, scene_codes, points, version):
        """Density, colour and the decoder's exported version for ``points`` [N, 3]."""
        request = pb_utils.InferenceRequest(
            model_name=self.decoder,
            model_version=version,
            inputs=[
                pb_utils.Tensor(SCENE_CODES, scene_codes),
                pb_utils.Tensor(POINTS, np.ascontiguousarray(points, dtype=np.float32)[None]),
            ],
            requested_output_names=[DENSITY, COLOR, VERSION],
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0),
        )
        response = request.exec()
        if response.has_error():
            raise DependencyFailed(f"{self.decoder} failed: {response.error().message()}")
        outputs = {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in (DENSITY, COLOR, VERSION)}
        return outputs[DENSITY][0, :, 0].copy(), outputs[COLOR][0].copy(), int(outputs[VERSION].reshape(-1)[0])


def _elapsed_ms(started):
    return round((time.perf_counter() - started) * 1000.0, 2)
