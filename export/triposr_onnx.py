"""ONNX export of TripoSR as two graphs, and their parity check against eager PyTorch.

* encoder: ``image`` [B, 3, S, S] (RGB in [0, 1], S = cond_image_size) -> ``scene_codes`` [B, 3, C, 2P, 2P]
* decoder: ``scene_codes`` [B, 3, C, 2P, 2P], ``points`` [B, N, 3] -> ``density`` [B, N, 1], ``color`` [B, N, 3]

Both use torch's dynamo-based exporter (``torch.export`` + onnxscript), with B (and N) dynamic. The
ViT position table, a bicubic resize of a parameter, is computed once in PyTorch and stored as a
constant, so the graph holds no Resize whose cubic rounding could differ between runtimes.
Weights go to an external-data file (``model.onnx.data`` beside ``model.onnx``) when they would
bring the file near protobuf's 2 GB limit: the official encoder holds 1.68 GB.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from img2mesh.contract import COLOR, DENSITY, ENCODER_IMAGE, POINTS, SCENE_CODES
from img2mesh.onnxruntime_sessions import onnxruntime_session
from triposr.system import TSR

# The dynamo exporter implements opset 18+; its down-conversion to 17 produces invalid Split nodes.
DEFAULT_OPSET = 18
# Above this many bytes of weights the graph is saved with external data (protobuf caps files at 2 GB).
EXTERNAL_DATA_THRESHOLD = 1 << 30
EXPORT_BATCH = 2
EXPORT_POINTS = 4096


class _EncoderGraph(nn.Module):
    def __init__(self, model: TSR) -> None:
        super().__init__()
        self.model = model
        with torch.no_grad():
            self.register_buffer("vit_position_embeddings", model.vit_position_embeddings().detach().clone())

    def forward(self, image: Tensor) -> Tensor:
        return self.model.encode(image, vit_position_embeddings=self.vit_position_embeddings)


class _DecoderGraph(nn.Module):
    def __init__(self, model: TSR) -> None:
        super().__init__()
        self.model = model

    def forward(self, scene_codes: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
        return self.model.decode(scene_codes, points)


def _weight_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in module.state_dict().values())


def _export(
    graph: nn.Module,
    weights: int,
    args: tuple[Tensor, ...],
    path: Path,
    opset: int,
    input_names: list[str],
    output_names: list[str],
    dynamic_shapes: tuple[dict[int, object], ...],
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    external = weights > EXTERNAL_DATA_THRESHOLD
    with torch.no_grad():
        torch.onnx.export(
            graph.eval(),
            args,
            str(path),
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            external_data=external,
            optimize=True,
            verbose=False,
        )
    onnx.checker.check_model(str(path), full_check=False)
    _check_dynamic(path, {name: sorted(dims) for name, dims in zip(input_names, dynamic_shapes)})
    return path


def _check_dynamic(path: Path, dynamic: dict[str, list[int]]) -> None:
    """Fail if an axis meant to be dynamic was specialised to the example's size in the saved graph."""
    graph = onnx.load(str(path), load_external_data=False).graph
    for value in graph.input:
        dims = value.type.tensor_type.shape.dim
        static = [axis for axis in dynamic.get(value.name, []) if not dims[axis].dim_param]
        if static:
            raise RuntimeError(f"{path}: input {value.name!r} has static axes {static}; expected them dynamic")


def export_encoder(model: TSR, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Write the image -> scene-codes graph to ``path`` (plus ``<path>.data`` for large models)."""
    size = model.config.cond_image_size
    example = torch.rand(EXPORT_BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    batch = torch.export.Dim("batch", min=1, max=1024)
    return _export(
        _EncoderGraph(model),
        _weight_bytes(model) - _weight_bytes(model.decoder),
        (example,),
        Path(path),
        opset,
        [ENCODER_IMAGE],
        [SCENE_CODES],
        ({0: batch},),
    )


def export_decoder(model: TSR, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Write the (scene codes, points) -> (density, color) graph to ``path``."""
    generator = torch.Generator().manual_seed(0)
    codes = torch.randn(EXPORT_BATCH, *model.scene_code_shape, generator=generator)
    points = (torch.rand(EXPORT_BATCH, EXPORT_POINTS, 3, generator=generator) * 2 - 1) * model.radius
    batch = torch.export.Dim("batch", min=1, max=1024)
    count = torch.export.Dim("points", min=1)
    return _export(
        _DecoderGraph(model),
        _weight_bytes(model.decoder),
        (codes, points),
        Path(path),
        opset,
        [SCENE_CODES, POINTS],
        [DENSITY, COLOR],
        ({0: batch}, {0: batch, 1: count}),
    )


def _errors(actual: np.ndarray, expected: np.ndarray) -> dict[str, float]:
    """Max absolute error, and the same relative to the reference's largest magnitude."""
    max_abs = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    scale = float(np.max(np.abs(expected)))
    return {"max_abs": max_abs, "max_rel": max_abs / scale if scale > 0 else max_abs}


def compare_with_eager(
    model: TSR,
    encoder_path: str | Path,
    decoder_path: str | Path,
    images: Tensor | None = None,
    points: Tensor | None = None,
) -> dict[str, dict[str, float]]:
    """Run both ONNX graphs in onnxruntime (CPU) and eager PyTorch on the same inputs.

    Defaults: 1 random image (the official encoder needs about 1.5 minutes per image on 2 CPU cores,
    in each runtime; the dynamic batch axis is checked at export and by the tests) and 3000 random
    points (a count the decoder was not exported with). Returns ``{"scene_codes"|"density"|"color": {"max_abs",
    "max_rel"}}``, where ``max_rel`` is the max absolute error divided by the reference's max
    magnitude. The decoder is fed the eager scene codes, so its errors are its own.
    """
    generator = torch.Generator().manual_seed(1)
    size = model.config.cond_image_size
    if images is None:
        images = torch.rand(1, 3, size, size, generator=generator)
    if points is None:
        points = (torch.rand(images.shape[0], 3000, 3, generator=generator) * 2 - 1) * model.radius
    with torch.no_grad():
        codes = model.encode(images)
        density, color = model.decode(codes, points)
    encoder = onnxruntime_session(encoder_path)
    decoder = onnxruntime_session(decoder_path)
    (onnx_codes,) = encoder.run([SCENE_CODES], {ENCODER_IMAGE: images.numpy()})
    onnx_density, onnx_color = decoder.run([DENSITY, COLOR], {SCENE_CODES: codes.numpy(), POINTS: points.numpy()})
    return {
        SCENE_CODES: _errors(onnx_codes, codes.numpy()),
        DENSITY: _errors(onnx_density, density.numpy()),
        COLOR: _errors(onnx_color, color.numpy()),
    }
