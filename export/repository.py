"""Write a Triton model repository: configs for one flavour, Python models, versioned ONNX files.

Configs are built as ``ModelConfig`` protobufs (Triton's own schema from tritonclient) and written
in text format, so every file we produce parses by construction; dims come from the model's
shapes, so a smaller test architecture gets matching configs. ONNX files land in a new numbered
version directory that is renamed into place in one step: the version being served is never
touched, and Triton never sees a half-written version.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

FLAVOURS = ("gpu", "cpu", "portable")
SOURCE_REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"
PYTHON_MODELS = ("image_preprocess", "foreground", "mesher")
ONNX_MODELS = ("rembg", "triposr_encoder", "triposr_decoder")
ENSEMBLE = "image_to_mesh"
ONNX_RUNNER = Path(__file__).resolve().parent / "onnx_runner_model.py"
MAX_BATCH_SIZE = 8
DECODER_CHUNK = 262_144
TRT_CACHE_ROOT = "/cache/trt"


@dataclass(frozen=True)
class Shapes:
    """The tensor sizes that differ between the official and the tiny test architecture."""

    scene_code_channels: int = 40
    scene_code_size: int = 64
    condition_size: int = 512
    u2net_size: int = 320

    @property
    def scene_codes(self) -> list[int]:
        return [3, self.scene_code_channels, self.scene_code_size, self.scene_code_size]


def _tensor(kind: type, name: str, data_type: int, dims: list[int]) -> object:
    return kind(name=name, data_type=data_type, dims=dims)


def _inputs(*specs: tuple[str, int, list[int]]) -> list[mc.ModelInput]:
    return [_tensor(mc.ModelInput, *spec) for spec in specs]


def _outputs(*specs: tuple[str, int, list[int]]) -> list[mc.ModelOutput]:
    return [_tensor(mc.ModelOutput, *spec) for spec in specs]


def _io(shapes: Shapes) -> dict[str, tuple[list[mc.ModelInput], list[mc.ModelOutput]]]:
    """Inputs and outputs of every model, batch dimension excluded (docs/architecture.md)."""
    codes = shapes.scene_codes
    image = [3, shapes.condition_size, shapes.condition_size]
    u2net = [3, shapes.u2net_size, shapes.u2net_size]
    mask = [1, shapes.u2net_size, shapes.u2net_size]
    fp32, string, int64 = mc.TYPE_FP32, mc.TYPE_STRING, mc.TYPE_INT64
    return {
        "image_preprocess": (_inputs(("IMAGE", string, [1])), _outputs(("U2NET_INPUT", fp32, u2net))),
        "rembg": (_inputs(("input", fp32, u2net)), _outputs(("mask", fp32, mask))),
        "foreground": (
            _inputs(("IMAGE", string, [1]), ("MASK", fp32, mask)),
            _outputs(("CONDITION", fp32, image)),
        ),
        "triposr_encoder": (
            _inputs(("image", fp32, image)),
            _outputs(("scene_codes", fp32, codes), ("version", int64, [1])),
        ),
        "triposr_decoder": (
            _inputs(("scene_codes", fp32, codes), ("points", fp32, [-1, 3])),
            _outputs(("density", fp32, [-1, 1]), ("color", fp32, [-1, 3]), ("version", int64, [1])),
        ),
        "mesher": (
            _inputs(("SCENE_CODES", fp32, codes), ("DECODER_VERSION", int64, [1])),
            _outputs(
                ("VERTICES", fp32, [-1, 3]),
                ("FACES", mc.TYPE_INT32, [-1, 3]),
                ("VERTEX_COLORS", mc.TYPE_UINT8, [-1, 3]),
                ("MESH_INFO", string, [1]),
            ),
        ),
    }


def _set_parameters(config: mc.ModelConfig, values: Mapping[str, str]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = value


def _instances(kind: int, count: int) -> list[mc.ModelInstanceGroup]:
    return [mc.ModelInstanceGroup(kind=kind, count=count)]


def _latest_version() -> mc.ModelVersionPolicy:
    return mc.ModelVersionPolicy(latest=mc.ModelVersionPolicy.Latest(num_versions=1))


def _warmup(inputs: list[mc.ModelInput], overrides: Mapping[str, list[int]] | None = None) -> list[mc.ModelWarmup]:
    """One zero-filled batch-1 request per instance before the model reports READY.

    On GPU this builds the TensorRT engines and runs cuDNN's algorithm search at load time
    instead of on the first customer's job.
    """
    overrides = overrides or {}
    return [
        mc.ModelWarmup(
            name="zeros",
            batch_size=1,
            count=1,
            inputs={
                tensor.name: mc.ModelWarmup.Input(
                    data_type=tensor.data_type, dims=overrides.get(tensor.name, list(tensor.dims)), zero_data=True
                )
                for tensor in inputs
            },
        )
    ]


def _tensorrt(name: str, input_name: str, dims: list[int]) -> mc.ModelOptimizationPolicy:
    """TensorRT FP16 through ORT, with fixed profiles and a persistent engine cache.

    Fixed min/opt/max shapes stop the TensorRT EP from rebuilding engines for each new batch size,
    and the cache volume keeps engines across container restarts.
    """
    shape = "x".join(str(d) for d in dims)
    accelerator = mc.ModelOptimizationPolicy.ExecutionAccelerators.Accelerator(
        name="tensorrt",
        parameters={
            "precision_mode": "FP16",
            "max_workspace_size_bytes": str(4 << 30),
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": f"{TRT_CACHE_ROOT}/{name}",
            "trt_profile_min_shapes": f"{input_name}:1x{shape}",
            "trt_profile_opt_shapes": f"{input_name}:4x{shape}",
            "trt_profile_max_shapes": f"{input_name}:{MAX_BATCH_SIZE}x{shape}",
        },
    )
    return mc.ModelOptimizationPolicy(
        execution_accelerators=mc.ModelOptimizationPolicy.ExecutionAccelerators(gpu_execution_accelerator=[accelerator])
    )


def onnx_model_config(name: str, flavour: str, shapes: Shapes) -> mc.ModelConfig:
    inputs, outputs = _io(shapes)[name]
    config = mc.ModelConfig(
        name=name,
        max_batch_size=MAX_BATCH_SIZE,
        input=inputs,
        output=outputs,
        version_policy=_latest_version(),
        dynamic_batching=mc.ModelDynamicBatching(max_queue_delay_microseconds=2000),
    )
    if flavour == "portable":
        config.backend = "python"
        config.instance_group.extend(_instances(mc.ModelInstanceGroup.KIND_CPU, 1))
        return config
    config.backend = "onnxruntime"
    warmup_dims = {"points": [DECODER_CHUNK, 3]} if name == "triposr_decoder" else None
    config.model_warmup.extend(_warmup(inputs, warmup_dims))
    if flavour == "cpu":
        config.instance_group.extend(_instances(mc.ModelInstanceGroup.KIND_CPU, 1))
        return config
    config.instance_group.extend(_instances(mc.ModelInstanceGroup.KIND_GPU, 1))
    # The decoder stays on the CUDA EP in fp32: its exp() density overflows fp16 (triposr-facts §3.6).
    if name != "triposr_decoder":
        config.optimization.CopyFrom(_tensorrt(name, inputs[0].name, list(inputs[0].dims)))
    # Triton forces an EXHAUSTIVE cuDNN search when this is unset: slow first calls per shape.
    _set_parameters(config, {"cudnn_conv_algo_search": "1"})
    return config


def python_model_config(name: str, flavour: str, shapes: Shapes) -> mc.ModelConfig:
    inputs, outputs = _io(shapes)[name]
    config = mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=MAX_BATCH_SIZE,
        input=inputs,
        output=outputs,
        version_policy=_latest_version(),
        instance_group=_instances(mc.ModelInstanceGroup.KIND_CPU, 2 if flavour != "portable" or name == "mesher" else 1),
    )
    if name == "mesher":
        _set_parameters(config, {"decoder_model": "triposr_decoder", "chunk_size": str(DECODER_CHUNK)})
    else:
        _set_parameters(config, {"max_pixels": "40000000"})
    return config


def ensemble_config(shapes: Shapes) -> mc.ModelConfig:
    """Dataflow of ``image_to_mesh``: keys of the maps are step tensors, values ensemble tensors."""
    fp32, string = mc.TYPE_FP32, mc.TYPE_STRING
    Step = mc.ModelEnsembling.Step
    steps = [
        Step(model_name="image_preprocess", model_version=-1, input_map={"IMAGE": "IMAGE"}, output_map={"U2NET_INPUT": "u2net_input"}),
        Step(model_name="rembg", model_version=-1, input_map={"input": "u2net_input"}, output_map={"mask": "u2net_mask"}),
        Step(
            model_name="foreground",
            model_version=-1,
            input_map={"IMAGE": "IMAGE", "MASK": "u2net_mask"},
            output_map={"CONDITION": "condition"},
        ),
        Step(
            model_name="triposr_encoder",
            model_version=-1,
            input_map={"image": "condition"},
            output_map={"scene_codes": "scene_codes", "version": "MODEL_VERSION"},
        ),
        Step(
            model_name="mesher",
            model_version=-1,
            # The decoder version is the encoder's: a job never mixes versions, also mid-roll.
            input_map={"SCENE_CODES": "scene_codes", "DECODER_VERSION": "MODEL_VERSION"},
            output_map={name: name for name in ("VERTICES", "FACES", "VERTEX_COLORS", "MESH_INFO")},
        ),
    ]
    return mc.ModelConfig(
        name=ENSEMBLE,
        platform="ensemble",
        max_batch_size=MAX_BATCH_SIZE,
        input=_inputs(("IMAGE", string, [1])),
        output=_outputs(
            ("VERTICES", fp32, [-1, 3]),
            ("FACES", mc.TYPE_INT32, [-1, 3]),
            ("VERTEX_COLORS", mc.TYPE_UINT8, [-1, 3]),
            ("MESH_INFO", string, [1]),
            ("MODEL_VERSION", mc.TYPE_INT64, [1]),
        ),
        ensemble_scheduling=mc.ModelEnsembling(step=steps),
    )


def all_configs(flavour: str, shapes: Shapes) -> dict[str, mc.ModelConfig]:
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}: choose one of {', '.join(FLAVOURS)}")
    configs = {name: python_model_config(name, flavour, shapes) for name in PYTHON_MODELS}
    configs.update({name: onnx_model_config(name, flavour, shapes) for name in ONNX_MODELS})
    configs[ENSEMBLE] = ensemble_config(shapes)
    return configs


def config_text(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config)


def parse_config(path: Path) -> mc.ModelConfig:
    """Parse a config.pbtxt with Triton's schema; raises on any unknown field or bad value."""
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".tmp-", delete=False) as handle:
        handle.write(text)
    os.replace(handle.name, path)


def write_configs(repository: Path, flavour: str, shapes: Shapes) -> None:
    """Write every config.pbtxt and the Python models' code (version 1) into ``repository``."""
    for name, config in all_configs(flavour, shapes).items():
        _atomic_write(repository / name / "config.pbtxt", config_text(config))
    # An ensemble needs a version folder, even though nothing goes into it.
    (repository / ENSEMBLE / "1").mkdir(exist_ok=True)
    if repository.resolve() != SOURCE_REPOSITORY:
        for name in PYTHON_MODELS:
            target = repository / name / "1" / "model.py"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(SOURCE_REPOSITORY / name / "1" / "model.py", target)


def existing_versions(repository: Path, model: str) -> list[int]:
    folder = repository / model
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []


def next_version(repository: Path, models: tuple[str, ...] = ("triposr_encoder", "triposr_decoder")) -> int:
    """One more than the highest version of any of ``models`` (1 for an empty repository)."""
    return max((v for model in models for v in existing_versions(repository, model)), default=0) + 1


def install_version(repository: Path, model: str, version: int, source: Path, flavour: str) -> Path:
    """Move the files of ``source`` (``model.onnx`` and any external data) into ``<model>/<version>/``.

    The files are staged in a hidden folder of the model (Triton ignores non-numeric names) and
    renamed into place in one step.
    """
    target = repository / model / str(version)
    if target.exists():
        raise FileExistsError(f"{target} already exists: versions are immutable, export a new number")
    if not (source / "model.onnx").is_file():
        raise FileNotFoundError(f"{source} holds no model.onnx")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".staging-{version}-"))
    for item in source.iterdir():
        shutil.move(str(item), staging / item.name)
    if flavour == "portable":
        shutil.copy2(ONNX_RUNNER, staging / "model.py")
    os.rename(staging, target)
    return target
