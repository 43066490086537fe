"""Scene codes → coloured triangle mesh: TripoSR's ``extract_mesh`` with the decoder on Triton.

The surface is extracted by ``img2mesh.mesh_extraction`` (narrow band by default; the config's
``mesh_extraction`` parameter can ask for the dense grid): it asks for densities at batches of grid
points, which go to the decoder through BLS in chunks of at most ``chunk_size`` points, density
only. Marching cubes runs here. With a ``texture_size``, ``img2mesh.texture_baking`` decimates the
mesh to ``target_faces``, unwraps it and asks the decoder for the colour of every texel; without
one, a ``target_faces`` decimates it. The decoder is then asked for the colours of the final
vertices. ``MESH_INFO`` reports the number of decoder calls and the time spent in them
(``timings_ms.decoder``, inside the other steps' times). Every BLS call asks for ``DECODER_VERSION``, the version of the encoder that made the
scene codes, so one job never mixes versions while ops roll from one to the next. Cancellation is
checked between chunks, so a client that gave up stops the work.
"""

import json
import time

import numpy as np
import triton_python_backend_utils as pb_utils

from img2mesh.contract import (
    COLOR,
    CONFIG_CHUNK_SIZE,
    CONFIG_DECODER_MODEL,
    CONFIG_MESH_EXTRACTION,
    DECODER,
    DECODER_CHUNK_POINTS,
    DECODER_VERSION,
    DENSITY,
    FACES,
    MESH_INFO,
    MESHER_SCENE_CODES,
    POINTS,
    SCENE_CODES,
    TEXTURE,
    UVS,
    VERSION,
    VERTEX_COLORS,
    VERTICES,
)
from img2mesh.mesh_extraction import DEFAULT_EXTRACTION, colors_to_uint8, extract_surface, iter_chunks
from img2mesh.texture_baking import bake, decimate
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
        self.extraction = model_parameter(config, CONFIG_MESH_EXTRACTION, DEFAULT_EXTRACTION)

    def execute(self, requests):
        return answer_each(pb_utils, requests, self._mesh)

    def _mesh(self, request):
        parameters = mesh_parameters(request)
        scene_codes = input_array(pb_utils, request, MESHER_SCENE_CODES)
        version = int(input_array(pb_utils, request, DECODER_VERSION).reshape(-1)[0])
        decoder_versions = set()
        # Time inside the decoder's BLS calls: the decoder's own compute plus what BLS adds (queueing,
        # copies, the round trip); bench.postprocess --triton sets it against the decoder's compute.
        bls = {"calls": 0, "ms": 0.0}

        def query(wanted):
            def at(points):
                values = []
                for chunk in iter_chunks(points, self.chunk_size):
                    if request.is_cancelled():
                        raise RequestCancelled()
                    started = time.perf_counter()
                    outputs = self._decode(scene_codes, chunk, version, wanted)
                    bls["calls"] += 1
                    bls["ms"] += (time.perf_counter() - started) * 1000.0
                    decoder_versions.add(int(outputs[VERSION].reshape(-1)[0]))
                    values.append(outputs[wanted][0].copy())
                return np.concatenate(values)

            return at

        density_at = query(DENSITY)
        surface = extract_surface(
            lambda points: density_at(points)[:, 0], parameters.resolution, parameters.threshold,
            extraction=self.extraction,
        )
        timings = dict(surface.timings_ms)
        started = time.perf_counter()
        vertices, faces = surface.vertices, surface.faces
        uvs = np.zeros((0, 2), dtype=np.float32)
        texture = np.zeros((0, 0, 3), dtype=np.uint8)
        if parameters.texture_size:
            baked = bake(vertices, faces, query(COLOR), target_faces=parameters.target_faces or len(faces),
                         texture_size=parameters.texture_size)
            vertices, faces, uvs, texture = baked.vertices, baked.faces, baked.uvs, baked.texture
            timings["texture"] = _elapsed_ms(started)
        elif parameters.target_faces:
            vertices, faces = decimate(vertices, faces, parameters.target_faces)
            timings["decimation"] = _elapsed_ms(started)
        started = time.perf_counter()
        colors = query(COLOR)(vertices)
        timings["colors"] = _elapsed_ms(started)
        timings["decoder"] = round(bls["ms"], 2)

        info = {
            "resolution": parameters.resolution,
            "threshold": parameters.threshold,
            "extraction": self.extraction,
            "points_evaluated": surface.points_evaluated,
            "target_faces": parameters.target_faces,
            "texture_size": parameters.texture_size,
            "surface_face_count": int(len(surface.faces)),
            "vertex_count": int(len(vertices)),
            "face_count": int(len(faces)),
            "decoder_version": decoder_versions.pop(),
            "decoder_calls": bls["calls"],
            "timings_ms": timings,
        }
        return [
            pb_utils.Tensor(VERTICES, vertices[None]),
            pb_utils.Tensor(FACES, faces[None]),
            pb_utils.Tensor(VERTEX_COLORS, colors_to_uint8(colors)[None]),
            pb_utils.Tensor(UVS, uvs[None]),
            pb_utils.Tensor(TEXTURE, texture[None]),
            pb_utils.Tensor(MESH_INFO, np.array([[json.dumps(info).encode()]], dtype=np.object_)),
        ]

    def _decode(self, scene_codes, points, version, wanted):
        """The decoder's ``wanted`` output (density or colour) and its exported version for ``points`` [N, 3]."""
        request = pb_utils.InferenceRequest(
            model_name=self.decoder,
            model_version=version,
            inputs=[
                pb_utils.Tensor(SCENE_CODES, scene_codes),
                pb_utils.Tensor(POINTS, np.ascontiguousarray(points, dtype=np.float32)[None]),
            ],
            requested_output_names=[wanted, VERSION],
            preferred_memory=pb_utils.PreferredMemory(pb_utils.TRITONSERVER_MEMORY_CPU, 0),
        )
        response = request.exec()
        if response.has_error():
            raise DependencyFailed(f"{self.decoder} failed: {response.error().message()}")
        return {name: pb_utils.get_output_tensor_by_name(response, name).as_numpy() for name in (wanted, VERSION)}


def _elapsed_ms(started):
    return round((time.perf_counter() - started) * 1000.0, 2)
