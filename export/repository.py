"""Write a Triton model repository: configs for one flavour, Python models, versioned ONNX files.

Configs are built as ``ModelConfig`` protobufs (Triton's own schema from tritonclient) and written
in text format, so every file we produce parses by construction; dims come from the model's
shapes, so a smaller test architecture gets matching configs. ONNX files land in a new numbered
version directory that is renamed into place in one step: the version being served is never
touched, and Triton never sees a half-written version.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from img2mesh.contract import (
    CONDITION,
    CONFIG_CHUNK_SIZE,
    CONFIG_U2NET_VERSIONS,
    CONFIG_DECODER_MODEL,
    CONFIG_INFERENCE_PRECISION,
    CONFIG_MAX_PIXELS,
    CONFIG_MESH_EXTRACTION,
    DECODER,
    DECODER_CHUNK_POINTS,
    DECODER_VERSION,
    ENCODER,
    ENCODER_IMAGE,
    ENSEMBLE,
    ENSEMBLES,
    FOREGROUND,
    FRAMED_PHOTO,
    IMAGE,
    IMAGE_PREPROCESS,
    INFERENCE_PRECISIONS,
    MASK,
    MAX_BATCH_SIZE,
    MAX_IMAGE_PIXELS,
    MESHER,
    MESHER_SCENE_CODES,
    MESH_OUTPUTS,
    ONNX_MODELS,
    PHOTO_CHECK,
    PHOTO_MEASURE,
    PHOTO_MEASURES,
    POINTS,
    PYTHON_MODELS,
    REMBG,
    REMBG_INPUT,
    REMBG_MASK,
    SCENE_CODES,
    U2NET_INPUT,
    VERSION,
    WEIGHTS_VERSION,
    Shapes,
    TensorSpec,
    model_specs,
)
from img2mesh.mesh_extraction import DEFAULT_EXTRACTION

FLAVOURS = ("gpu", "cpu", "portable")
SOURCE_REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"
TRT_CACHE_ROOT = "/cache/trt"

CPU_ENGINES = {REMBG: "onnxruntime", ENCODER: "openvino", DECODER: "openvino"}
"""The fp32 CPU engine of each network that was fastest or within 10 % of it on every processor
measured by ``python -m bench.engines`` (docs/runbook.md, "CPU engines"): the cpu and portable
flavours serve it."""
RUNNERS = {
    "onnxruntime": Path(__file__).resolve().parent / "onnx_runner_model.py",
    "openvino": Path(__file__).resolve().parent / "openvino_runner_model.py",
}
"""The Python-backend model that serves an ONNX file with each engine."""
U2NET_RECORD = "u2net.json"
"""Beside each installed ``rembg`` version's ``model.onnx``: which U²-Net it is, ``{"name", "md5"}``
(``export.rembg_onnx.U2NetSource.record``). ``write_configs`` publishes the records in the rembg
config's ``CONFIG_U2NET_VERSIONS`` parameter, where the worker reads them through Triton."""


def python_runner(name: str, flavour: str) -> Path | None:
    """The runner model that serves ONNX model ``name`` in ``flavour``, or None for a native backend.

    The portable flavour has only the Python backend. The cpu flavour serves OpenVINO networks
    through the runner too: Triton 24.10's native ``openvino`` backend cannot force fp32
    (export/openvino_runner_model.py says why).
    """
    if flavour == "portable" or (flavour == "cpu" and CPU_ENGINES[name] == "openvino"):
        return RUNNERS[CPU_ENGINES[name]]
    return None


def _tensors(kind: type, specs: tuple[TensorSpec, ...]) -> list:
    return [kind(name=spec.name, data_type=getattr(mc, f"TYPE_{spec.data_type}"), dims=list(spec.dims)) for spec in specs]


def _io(name: str, shapes: Shapes) -> tuple[list[mc.ModelInput], list[mc.ModelOutput]]:
    """Inputs and outputs of a model, batch dimension excluded, from the contract."""
    spec = model_specs(shapes)[name]
    return _tensors(mc.ModelInput, spec.inputs), _tensors(mc.ModelOutput, spec.outputs)


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


def onnx_model_config(name: str, flavour: str, shapes: Shapes, precision: str = INFERENCE_PRECISIONS[0]) -> mc.ModelConfig:
    """``precision`` is that of the encoder when OpenVINO serves it (``bf16`` is an operator's opt-in)."""
    inputs, outputs = _io(name, shapes)
    config = mc.ModelConfig(
        name=name,
        max_batch_size=MAX_BATCH_SIZE,
        input=inputs,
        output=outputs,
        version_policy=_latest_version(),
        dynamic_batching=mc.ModelDynamicBatching(max_queue_delay_microseconds=2000),
    )
    warmup_dims = {POINTS: [DECODER_CHUNK_POINTS, 3]} if name == DECODER else None
    runner = python_runner(name, flavour)
    if runner is not None:
        config.backend = "python"
        config.instance_group.extend(_instances(mc.ModelInstanceGroup.KIND_CPU, 1))
        if CPU_ENGINES[name] == "openvino":
            # The decoder stays fp32 whatever is asked: its exp() density needs it (docs/facts.md).
            chosen = precision if name != DECODER else INFERENCE_PRECISIONS[0]
            _set_parameters(config, {CONFIG_INFERENCE_PRECISION: chosen})
        if flavour != "portable":
            config.model_warmup.extend(_warmup(inputs, warmup_dims))
        return config
    config.backend = "onnxruntime"
    config.model_warmup.extend(_warmup(inputs, warmup_dims))
    if flavour == "cpu":
        config.instance_group.extend(_instances(mc.ModelInstanceGroup.KIND_CPU, 1))
        return config
    config.instance_group.extend(_instances(mc.ModelInstanceGroup.KIND_GPU, 1))
    # The decoder stays on the CUDA EP in fp32: its exp() density overflows fp16 (docs/facts.md).
    if name != DECODER:
        config.optimization.CopyFrom(_tensorrt(name, inputs[0].name, list(inputs[0].dims)))
    # Triton forces an EXHAUSTIVE cuDNN search when this is unset: slow first calls per shape.
    _set_parameters(config, {"cudnn_conv_algo_search": "1"})
    return config


def python_model_config(name: str, flavour: str, shapes: Shapes) -> mc.ModelConfig:
    inputs, outputs = _io(name, shapes)
    config = mc.ModelConfig(
        name=name,
        backend="python",
        max_batch_size=MAX_BATCH_SIZE,
        input=inputs,
        output=outputs,
        version_policy=_latest_version(),
        instance_group=_instances(mc.ModelInstanceGroup.KIND_CPU, 2 if flavour != "portable" or name == MESHER else 1),
    )
    if name == MESHER:
        _set_parameters(
            config,
            {
                CONFIG_DECODER_MODEL: DECODER,
                CONFIG_CHUNK_SIZE: str(DECODER_CHUNK_POINTS),
                CONFIG_MESH_EXTRACTION: DEFAULT_EXTRACTION,
            },
        )
    else:
        _set_parameters(config, {CONFIG_MAX_PIXELS: str(MAX_IMAGE_PIXELS)})
    return config


def _mask_steps() -> list[mc.ModelEnsembling.Step]:
    """Decoding and U²-Net, the start both ensembles share: they leave the mask in ``u2net_mask``."""
    Step = mc.ModelEnsembling.Step
    return [
        Step(model_name=IMAGE_PREPROCESS, model_version=-1, input_map={IMAGE: IMAGE}, output_map={U2NET_INPUT: "u2net_input"}),
        Step(model_name=REMBG, model_version=-1, input_map={REMBG_INPUT: "u2net_input"}, output_map={REMBG_MASK: "u2net_mask"}),
    ]


def _ensemble(name: str, shapes: Shapes, steps: list[mc.ModelEnsembling.Step]) -> mc.ModelConfig:
    inputs, outputs = _io(name, shapes)
    return mc.ModelConfig(
        name=name,
        platform="ensemble",
        max_batch_size=MAX_BATCH_SIZE,
        input=inputs,
        output=outputs,
        ensemble_scheduling=mc.ModelEnsembling(step=steps),
    )


def ensemble_config(shapes: Shapes) -> mc.ModelConfig:
    """Dataflow of the ensemble: keys of the maps are step tensors, values ensemble tensors."""
    Step = mc.ModelEnsembling.Step
    steps = [
        *_mask_steps(),
        Step(
            model_name=FOREGROUND,
            model_version=-1,
            input_map={IMAGE: IMAGE, MASK: "u2net_mask"},
            # The framed cut-out leaves the ensemble: the worker checks the asset against it.
            output_map={CONDITION: "condition", FRAMED_PHOTO: FRAMED_PHOTO},
        ),
        Step(
            model_name=ENCODER,
            model_version=-1,
            input_map={ENCODER_IMAGE: "condition"},
            output_map={SCENE_CODES: "scene_codes", VERSION: WEIGHTS_VERSION},
        ),
        Step(
            model_name=MESHER,
            model_version=-1,
            # The decoder version is the encoder's: a job never mixes versions, also mid-roll.
            input_map={MESHER_SCENE_CODES: "scene_codes", DECODER_VERSION: WEIGHTS_VERSION},
            output_map={name: name for name in MESH_OUTPUTS},
        ),
    ]
    return _ensemble(ENSEMBLE, shapes, steps)


def photo_check_config(shapes: Shapes) -> mc.ModelConfig:
    """The photo check stops after the mask: U²-Net's raw prediction goes to ``photo_measure``."""
    measure = mc.ModelEnsembling.Step(
        model_name=PHOTO_MEASURE,
        model_version=-1,
        input_map={IMAGE: IMAGE, MASK: "u2net_mask"},
        output_map={PHOTO_MEASURES: PHOTO_MEASURES},
    )
    return _ensemble(PHOTO_CHECK, shapes, [*_mask_steps(), measure])


def all_configs(flavour: str, shapes: Shapes, precision: str = INFERENCE_PRECISIONS[0]) -> dict[str, mc.ModelConfig]:
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown flavour {flavour!r}: choose one of {', '.join(FLAVOURS)}")
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}: choose one of {', '.join(INFERENCE_PRECISIONS)}")
    configs = {name: python_model_config(name, flavour, shapes) for name in PYTHON_MODELS}
    configs.update({name: onnx_model_config(name, flavour, shapes, precision) for name in ONNX_MODELS})
    configs[ENSEMBLE] = ensemble_config(shapes)
    configs[PHOTO_CHECK] = photo_check_config(shapes)
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


def u2net_records(repository: Path) -> dict[str, dict[str, str | None]]:
    """The record of each installed ``rembg`` version that has one, by version number."""
    records = {}
    for version in existing_versions(repository, REMBG):
        path = repository / REMBG / str(version) / U2NET_RECORD
        if path.is_file():
            records[str(version)] = json.loads(path.read_text())
    return records


def write_configs(repository: Path, flavour: str, shapes: Shapes, precision: str = INFERENCE_PRECISIONS[0]) -> None:
    """Write every config.pbtxt and the Python models' code (version 1) into ``repository``.

    The ``rembg`` config also says which U²-Net each of its installed versions is.
    """
    configs = all_configs(flavour, shapes, precision)
    records = u2net_records(repository)
    if records:
        _set_parameters(configs[REMBG], {CONFIG_U2NET_VERSIONS: json.dumps(records, sort_keys=True)})
    for name, config in configs.items():
        _atomic_write(repository / name / "config.pbtxt", config_text(config))
    # An ensemble needs a version folder, even though nothing goes into it.
    for name in ENSEMBLES:
        (repository / name / "1").mkdir(exist_ok=True)
    if repository.resolve() != SOURCE_REPOSITORY:
        for name in PYTHON_MODELS:
            target = repository / name / "1" / "model.py"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(SOURCE_REPOSITORY / name / "1" / "model.py", target)


def refresh_code(repository: Path, flavour: str, shapes: Shapes, precision: str = INFERENCE_PRECISIONS[0]) -> None:
    """Rewrite every config and every Python model's code, runners included, of an existing
    repository, keeping its ONNX files: a code change reaches it without exporting again."""
    write_configs(repository, flavour, shapes, precision)
    for name in ONNX_MODELS:
        runner = python_runner(name, flavour)
        for version in existing_versions(repository, name):
            if runner is not None:
                shutil.copy2(runner, repository / name / str(version) / "model.py")


def existing_versions(repository: Path, model: str) -> list[int]:
    folder = repository / model
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []


def next_version(repository: Path, models: tuple[str, ...] = (ENCODER, DECODER)) -> int:
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
    runner = python_runner(model, flavour)
    if runner is not None:
        shutil.copy2(runner, staging / "model.py")
    os.rename(staging, target)
    return target
