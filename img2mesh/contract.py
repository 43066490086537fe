"""The contract between the parts: model and tensor names, shapes, request parameters, limits.

The exporter writes every ``config.pbtxt`` from these definitions, the Python-backend models and the
worker take their names and limits from here, and ``tests/test_contract.py`` checks the tables of
docs/architecture.md against them. Each fact is defined once, in this module. It imports only the
standard library and keeps to Python 3.10 (the Triton 24.10 stub's Python), so every side, the
Triton container included, can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

# --- Models of the Triton repository --------------------------------------------------------------

ENSEMBLE = "image_to_mesh"
IMAGE_PREPROCESS = "image_preprocess"
REMBG = "rembg"
FOREGROUND = "foreground"
ENCODER = "triposr_encoder"
DECODER = "triposr_decoder"
MESHER = "mesher"
PHOTO_CHECK = "photo_check"
"""The ensemble that stops after the mask: decoding → U²-Net → ``photo_measure`` (docs/photo-check.md)."""
PHOTO_MEASURE = "photo_measure"

PYTHON_MODELS = (IMAGE_PREPROCESS, FOREGROUND, MESHER, PHOTO_MEASURE)
ONNX_MODELS = (REMBG, ENCODER, DECODER)
ENSEMBLES = (ENSEMBLE, PHOTO_CHECK)

# --- Tensor names ---------------------------------------------------------------------------------

IMAGE = "IMAGE"
"""The encoded image file (BYTES): input of the ensemble, of image_preprocess and of foreground."""
U2NET_INPUT = "U2NET_INPUT"
REMBG_INPUT = "input"
REMBG_MASK = "mask"
MASK = "MASK"
CONDITION = "CONDITION"
ENCODER_IMAGE = "image"
SCENE_CODES = "scene_codes"
"""The triplane scene codes: output of the encoder graph and input of the decoder graph."""
POINTS = "points"
DENSITY = "density"
COLOR = "color"
VERSION = "version"
"""The repository version the exporter stamped into a TripoSR graph (INT64, one per batch item)."""
MESHER_SCENE_CODES = "SCENE_CODES"
DECODER_VERSION = "DECODER_VERSION"
VERTICES = "VERTICES"
FACES = "FACES"
VERTEX_COLORS = "VERTEX_COLORS"
UVS = "UVS"
"""Texture coordinates per vertex (glTF convention: (0, 0) is the texture's top-left corner, v down)."""
TEXTURE = "TEXTURE"
"""The baked base-colour texture, sRGB uint8 [S, S, 3]; empty ([0, 0, 3]) when none was asked for."""
MESH_INFO = "MESH_INFO"
WEIGHTS_VERSION = "WEIGHTS_VERSION"
"""The ensemble's copy of the encoder's ``version``: which TripoSR weights made the mesh (the
exporter's version number; the ensemble's own version is another thing, see docs/architecture.md)."""

PHOTO_MEASURES = "PHOTO_MEASURES"
"""The photo check's answer: ``img2mesh.photo_measures.PhotoMeasures`` as a JSON string."""
FRAMED_PHOTO = "FRAMED_PHOTO"
"""The cut-out as TripoSR framed it, RGBA uint8 [FRAMED_SIZE, FRAMED_SIZE, 4] (alpha: the mask): output of
``foreground`` and of the ensemble, for the worker's check of the asset against its photo
(docs/quality-check.md)."""

MESH_OUTPUTS = (VERTICES, FACES, VERTEX_COLORS, UVS, TEXTURE, MESH_INFO)
"""What the mesher returns and the ensemble passes through, in this order."""

# --- Shapes ---------------------------------------------------------------------------------------

MAX_BATCH_SIZE = 8
"""Every model batches up to this many requests; a client sends one image per request."""
U2NET_SIZE = 320
CONDITION_SIZE = 512
"""TripoSR's ``cond_image_size``: the side of the square image the encoder sees."""
FRAMED_SIZE = 256
"""The side of ``FRAMED_PHOTO``: enough for an outline's IoU and the colours away from it, and a
quarter of the condition's pixels to send back with every mesh."""
VARIABLE = -1
"""A dimension whose size varies per request (vertex, face and point counts)."""


@dataclass(frozen=True)
class Shapes:
    """The tensor sizes that differ between the official and the tiny test architecture."""

    scene_code_channels: int = 40
    scene_code_size: int = 64
    condition_size: int = CONDITION_SIZE
    u2net_size: int = U2NET_SIZE

    @property
    def scene_codes(self) -> tuple[int, ...]:
        return (3, self.scene_code_channels, self.scene_code_size, self.scene_code_size)


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of a model: its name, Triton data type (``FP32``, ``STRING``…) and dims without the batch dim."""

    name: str
    data_type: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ModelSpec:
    """The inputs and outputs of one model of the repository, as its ``config.pbtxt`` declares them."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def model_specs(shapes: Shapes | None = None) -> dict[str, ModelSpec]:
    """Every model's tensors for ``shapes`` (default: the official architecture), ensembles last."""
    shapes = shapes or Shapes()
    codes = shapes.scene_codes
    condition = (3, shapes.condition_size, shapes.condition_size)
    u2net = (3, shapes.u2net_size, shapes.u2net_size)
    mask = (1, shapes.u2net_size, shapes.u2net_size)
    image = TensorSpec(IMAGE, "STRING", (1,))
    mesh = (
        TensorSpec(VERTICES, "FP32", (VARIABLE, 3)),
        TensorSpec(FACES, "INT32", (VARIABLE, 3)),
        TensorSpec(VERTEX_COLORS, "UINT8", (VARIABLE, 3)),
        TensorSpec(UVS, "FP32", (VARIABLE, 2)),
        TensorSpec(TEXTURE, "UINT8", (VARIABLE, VARIABLE, 3)),
        TensorSpec(MESH_INFO, "STRING", (1,)),
    )
    version = TensorSpec(VERSION, "INT64", (1,))
    measures = TensorSpec(PHOTO_MEASURES, "STRING", (1,))
    framed = TensorSpec(FRAMED_PHOTO, "UINT8", (FRAMED_SIZE, FRAMED_SIZE, 4))
    specs = (
        ModelSpec(IMAGE_PREPROCESS, (image,), (TensorSpec(U2NET_INPUT, "FP32", u2net),)),
        ModelSpec(REMBG, (TensorSpec(REMBG_INPUT, "FP32", u2net),), (TensorSpec(REMBG_MASK, "FP32", mask),)),
        ModelSpec(FOREGROUND, (image, TensorSpec(MASK, "FP32", mask)), (TensorSpec(CONDITION, "FP32", condition), framed)),
        ModelSpec(
            ENCODER, (TensorSpec(ENCODER_IMAGE, "FP32", condition),), (TensorSpec(SCENE_CODES, "FP32", codes), version)
        ),
        ModelSpec(
            DECODER,
            (TensorSpec(SCENE_CODES, "FP32", codes), TensorSpec(POINTS, "FP32", (VARIABLE, 3))),
            (TensorSpec(DENSITY, "FP32", (VARIABLE, 1)), TensorSpec(COLOR, "FP32", (VARIABLE, 3)), version),
        ),
        ModelSpec(
            MESHER,
            (TensorSpec(MESHER_SCENE_CODES, "FP32", codes), TensorSpec(DECODER_VERSION, "INT64", (1,))),
            mesh,
        ),
        ModelSpec(PHOTO_MEASURE, (image, TensorSpec(MASK, "FP32", mask)), (measures,)),
        ModelSpec(ENSEMBLE, (image,), (*mesh, TensorSpec(WEIGHTS_VERSION, "INT64", (1,)), framed)),
        ModelSpec(PHOTO_CHECK, (image,), (measures,)),
    )
    return {spec.name: spec for spec in specs}


# --- TripoSR's camera ----------------------------------------------------------------------------

CAMERA_DISTANCE = 1.9
"""TripoSR's camera (docs/facts.md, "TripoSR's camera"): at (CAMERA_DISTANCE, 0, 0) of the world frame,
elevation 0, looking at the origin (towards -X), image-right +Y and up +Z. The official renderer's
defaults, whose first view shows the input photo again; the weights take no camera, so this is the
view they reproduce. The self-check draws the asset's front view from here (docs/quality-check.md);
its 40° field of view only scales that view, which the check frames by the object's box instead."""

# --- Request parameters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestParameter:
    """An optional per-request knob: its default and allowed range (``None``: unbounded on that side).

    ``above`` is an exclusive lower bound, ``minimum``/``maximum`` inclusive ones; ``choices`` lists
    the only values allowed; ``off`` is a value, outside the range, that turns the step off.
    """

    name: str
    kind: type
    default: float
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    choices: tuple[int, ...] = ()
    off: float | None = None

    def allowed(self) -> str:
        """The allowed values in words, for error messages and the docs' table."""
        if self.choices:
            return ", ".join(str(choice) for choice in self.choices)
        if self.minimum is not None and self.maximum is not None:
            if self.off is not None:
                return f"{self.off} (off), or {self.minimum} … {self.maximum}"
            return f"{self.minimum} … {self.maximum}"
        if self.above is not None:
            return f"finite, > {self.above}"
        raise ValueError(f"{self.name} has no range")


RESOLUTION = RequestParameter("resolution", int, 256, minimum=16, maximum=320)
"""The marching-cubes grid size; 320 is the largest grid the official demo offers."""
THRESHOLD = RequestParameter("threshold", float, 25.0, above=0)
"""The density iso-level of the surface; 25.0 is TripoSR's own."""
FOREGROUND_RATIO = RequestParameter("foreground_ratio", float, 0.85, minimum=0.5, maximum=1.0)
"""The share of the encoder's square the object fills (TripoSR's run.py default 0.85)."""

TARGET_FACES = RequestParameter("target_faces", int, 0, minimum=1_000, maximum=2_000_000, off=0)
"""The triangle budget the mesher decimates to; 0 keeps marching cubes' mesh as it is."""
TEXTURE_SIZE = RequestParameter("texture_size", int, 0, choices=(0, 256, 512, 1024, 2048, 4096))
"""The side of the baked texture in texels (powers of two, for mipmaps); 0 bakes none (vertex colours only)."""

REQUEST_PARAMETERS = (RESOLUTION, THRESHOLD, FOREGROUND_RATIO, TARGET_FACES, TEXTURE_SIZE)
RESERVED_PARAMETER_PREFIX = "triton_"
"""Triton reserves request parameters with this prefix; they may reach a model alongside ours."""

# --- Limits and model-config parameters -----------------------------------------------------------

MAX_IMAGE_PIXELS = 40_000_000
"""Largest decoded image (width × height) anything accepts: camera originals pass, bombs do not."""
DECODER_CHUNK_POINTS = 262_144
"""Query points per BLS call of the mesher to the decoder (a fixed size keeps the decoder's shapes
stable for its dynamic batcher and TensorRT profiles); also the decoder's warm-up shape."""

CONFIG_MAX_PIXELS = "max_pixels"
CONFIG_DECODER_MODEL = "decoder_model"
CONFIG_CHUNK_SIZE = "chunk_size"
CONFIG_MESH_EXTRACTION = "mesh_extraction"
CONFIG_INFERENCE_PRECISION = "inference_precision"
INFERENCE_PRECISIONS = ("f32", "bf16")
"""Values of ``inference_precision`` for the OpenVINO runner; the first is the default (bf16 is opt-in)."""
CONFIG_INTRA_OP_THREADS = "intra_op_thread_count"
"""Keys of the ``parameters`` in the Python models' config.pbtxt (values are strings)."""
CONFIG_U2NET_VERSIONS = "u2net_versions"
"""Key of the ``rembg`` config's parameter that says which U²-Net each installed version is: JSON
``{"<version>": {"name": "u2netp" or null (unverified), "md5": "…"}}``, written by the exporter
from each version's record; the worker reports the served version's (docs/webhooks.md)."""

