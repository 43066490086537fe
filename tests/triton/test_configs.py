"""The committed production configs are exactly what the exporter writes, and every flavour parses."""

from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from export.repository import CPU_ENGINES, FLAVOURS, SOURCE_REPOSITORY, parse_config, python_runner, write_configs
from img2mesh.contract import (
    CONFIG_INFERENCE_PRECISION,
    DECODER,
    ENCODER,
    ENSEMBLE,
    ENSEMBLES,
    INFERENCE_PRECISIONS,
    ONNX_MODELS,
    PYTHON_MODELS,
    REMBG,
    Shapes,
)

ALL_MODELS = (*PYTHON_MODELS, *ONNX_MODELS, *ENSEMBLES)


def test_committed_repository_matches_the_exporter(tmp_path: Path) -> None:
    write_configs(tmp_path, "gpu", Shapes())
    for name in ALL_MODELS:
        committed = (SOURCE_REPOSITORY / name / "config.pbtxt").read_text()
        assert committed == (tmp_path / name / "config.pbtxt").read_text(), (
            f"model_repository/{name}/config.pbtxt is stale: run `python -m export configs --flavour gpu`"
        )


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_every_flavour_parses_with_tritons_schema(tmp_path: Path, flavour: str) -> None:
    write_configs(tmp_path, flavour, Shapes())
    configs = {name: parse_config(tmp_path / name / "config.pbtxt") for name in ALL_MODELS}
    for name in ONNX_MODELS:
        config = configs[name]
        runner = python_runner(name, flavour)
        assert config.backend == ("python" if runner is not None else "onnxruntime")
        if runner is not None and CPU_ENGINES[name] == "openvino":
            assert config.parameters[CONFIG_INFERENCE_PRECISION].string_value == INFERENCE_PRECISIONS[0]
        kinds = {group.kind for group in config.instance_group}
        assert kinds == {mc.ModelInstanceGroup.KIND_GPU if flavour == "gpu" else mc.ModelInstanceGroup.KIND_CPU}
        assert config.HasField("dynamic_batching")
        assert bool(config.model_warmup) == (flavour != "portable")
    assert python_runner(ENCODER, "gpu") is None and python_runner(DECODER, "gpu") is None
    for name in PYTHON_MODELS:
        assert configs[name].backend == "python"
        assert (tmp_path / name / "1" / "model.py").is_file()
    for name in ENSEMBLES:
        assert configs[name].platform == "ensemble"
        assert (tmp_path / name / "1").is_dir()


def test_gpu_flavour_uses_tensorrt_fp16_except_for_the_decoder(tmp_path: Path) -> None:
    write_configs(tmp_path, "gpu", Shapes())
    for name in (REMBG, ENCODER):
        accelerators = parse_config(tmp_path / name / "config.pbtxt").optimization.execution_accelerators
        (tensorrt,) = accelerators.gpu_execution_accelerator
        assert tensorrt.name == "tensorrt" and tensorrt.parameters["precision_mode"] == "FP16"
    decoder = parse_config(tmp_path / DECODER / "config.pbtxt")
    assert not decoder.optimization.execution_accelerators.gpu_execution_accelerator


@pytest.mark.parametrize("name", ENSEMBLES)
def test_ensemble_edges_agree_on_names_types_and_dims(tmp_path: Path, name: str) -> None:
    """What Triton checks at load time, checked here without a server: every step input is fed
    by exactly one ensemble tensor of the same type and shape."""
    write_configs(tmp_path, "gpu", Shapes(scene_code_channels=8, scene_code_size=16))
    configs = {model: parse_config(tmp_path / model / "config.pbtxt") for model in ALL_MODELS}
    ensemble = configs[name]
    produced = {tensor.name: (tensor.data_type, list(tensor.dims)) for tensor in ensemble.input}
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        assert set(step.input_map) == {tensor.name for tensor in model.input}, step.model_name
        for tensor in model.input:
            assert produced[step.input_map[tensor.name]] == (tensor.data_type, list(tensor.dims)), (step.model_name, tensor.name)
        outputs = {tensor.name: tensor for tensor in model.output}
        for key, value in step.output_map.items():
            produced[value] = (outputs[key].data_type, list(outputs[key].dims))
    for tensor in ensemble.output:
        assert produced[tensor.name] == (tensor.data_type, list(tensor.dims)), tensor.name


def test_bf16_is_an_opt_in_for_the_encoder_only(tmp_path: Path) -> None:
    write_configs(tmp_path, "cpu", Shapes(), precision="bf16")
    precision = {name: parse_config(tmp_path / name / "config.pbtxt").parameters[CONFIG_INFERENCE_PRECISION].string_value
                 for name in (ENCODER, DECODER)}
    assert precision == {ENCODER: "bf16", DECODER: INFERENCE_PRECISIONS[0]}
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        write_configs(tmp_path, "cpu", Shapes(), precision="fp16")
