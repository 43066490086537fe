"""A generated stand-in for rembg's ``u2net.onnx``, and a synthetic product photo.

The demo, the tests and the benchmarks run rembg's real, trained u2netp (``export.u2net_wheel``).
The stand-in stays for one piece of plumbing only: the rewrite in :mod:`export.rembg_onnx` must
un-pin a batch that a traced export froze into constant ``Resize`` sizes, and u2netp's graph has
no such constants to prove it on. So this module writes an ONNX file with the original's
signature and structure (fixed batch 1, input ``input.1`` [1,3,320,320], seven sigmoid outputs
[1,1,320,320] with numeric names, the fused ``d0`` first, side outputs upsampled by ``Resize`` with
constant sizes that pin the batch) whose ``d0`` is a colour-distance mask: it is NOT U²-Net.
``synthetic_product_photo`` is the demo's default photo (a mug on white).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image, ImageDraw

from img2mesh.background_removal import IMAGENET_MEAN, IMAGENET_STD

INPUT_NAME = "input.1"
# Numeric names like a PyTorch export; d0 (the fused mask rembg reads) first, then d1 … d6.
OUTPUT_NAMES = ("1959", "1960", "1961", "1962", "1963", "1964", "1965")
OPSET = 11
SIZE = 320
# Side outputs pool the full-resolution logit by these factors and upsample it back, like
# U²-Net's decoder stages at 1/2 … 1/32 resolution.
SIDE_POOLING = (2, 4, 8, 16, 32)
# Saliency = sigmoid(STEEPNESS · (distance from white − DISTANCE_THRESHOLD)); distances are in
# [0, √3] on RGB scaled by the image maximum, so white is 0, light grey (230) about 0.17 and a
# saturated colour above 1.
STEEPNESS = 25.0
DISTANCE_THRESHOLD = 0.25


def write_u2net_like(path: Path) -> Path:
    """Write the synthetic U²-Net-like ONNX file to ``path`` and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(_u2net_like_model(), str(path))
    return path


def synthetic_product_photo(size: tuple[int, int] = (640, 480), color: tuple[int, int, int] = (196, 48, 40)) -> Image.Image:
    """An RGB product shot: a shaded mug with a handle, slightly off-centre, on a white background.

    ``size`` is ``(width, height)``. Drawn at 4× and LANCZOS-downsampled so the edges are
    anti-aliased like a photo's.
    """
    scale = 4
    width, height = size[0] * scale, size[1] * scale
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    unit = min(width, height)
    left, top = int(width * 0.5 - unit * 0.22), int(height * 0.5 - unit * 0.28)
    right, bottom = left + int(unit * 0.36), top + int(unit * 0.56)
    rim = int(unit * 0.05)
    handle_box = (right - int(unit * 0.06), top + int(unit * 0.12), right + int(unit * 0.16), bottom - int(unit * 0.14))
    draw.ellipse(handle_box, outline=_shade(color, 0.8), width=int(unit * 0.045))
    for x in range(left, right):
        # Darker towards the sides, like a lit cylinder.
        shade = 0.65 + 0.35 * np.sin(np.pi * (x - left) / (right - left))
        draw.line([(x, top + rim), (x, bottom - rim)], fill=_shade(color, shade))
    draw.ellipse((left, bottom - 2 * rim, right - 1, bottom), fill=_shade(color, 0.75))
    draw.ellipse((left, top, right - 1, top + 2 * rim), fill=_shade(color, 0.45))
    return canvas.resize(size, Image.Resampling.LANCZOS)


def _shade(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    red, green, blue = (int(round(channel * factor)) for channel in color)
    return red, green, blue


def _u2net_like_model() -> onnx.ModelProto:
    mean = np.array(IMAGENET_MEAN, dtype=np.float32)
    std = np.array(IMAGENET_STD, dtype=np.float32)
    initializers = [
        # 1×1 convolution undoing the ImageNet normalisation and subtracting white: v·std + mean − 1.
        numpy_helper.from_array(np.diag(std).reshape(3, 3, 1, 1).astype(np.float32), "unnormalize.weight"),
        numpy_helper.from_array(mean - 1.0, "unnormalize.bias"),
        numpy_helper.from_array(np.ones((1, 3, 1, 1), dtype=np.float32), "channel_sum.weight"),
        numpy_helper.from_array(np.array([1, 1, SIZE, SIZE], dtype=np.int64), "mask_shape"),
        numpy_helper.from_array(np.array([STEEPNESS], dtype=np.float32), "steepness"),
        numpy_helper.from_array(np.array([STEEPNESS * DISTANCE_THRESHOLD], dtype=np.float32), "offset"),
        numpy_helper.from_array(np.array([], dtype=np.float32), "empty_roi"),
        numpy_helper.from_array(np.array([], dtype=np.float32), "empty_scales"),
        numpy_helper.from_array(np.array([1, 1, SIZE, SIZE], dtype=np.int64), "side_sizes"),
        # Fusion weights over (d1, d2 … d6): the full-resolution logit dominates, coarser ones smooth.
        numpy_helper.from_array(np.array([0.5] + [0.1] * len(SIDE_POOLING), dtype=np.float32).reshape(1, 6, 1, 1), "fuse.weight"),
    ]
    nodes = [
        helper.make_node("Conv", [INPUT_NAME, "unnormalize.weight", "unnormalize.bias"], ["from_white"]),
        helper.make_node("Mul", ["from_white", "from_white"], ["squared"]),
        helper.make_node("Conv", ["squared", "channel_sum.weight"], ["squared_distance"]),
        helper.make_node("Sqrt", ["squared_distance"], ["distance_4d"]),
        # A flatten-and-restore round trip whose constant shape pins the batch, like traced exports.
        helper.make_node("Flatten", ["distance_4d"], ["distance_flat"], axis=1),
        helper.make_node("Reshape", ["distance_flat", "mask_shape"], ["distance"]),
        helper.make_node("Mul", ["distance", "steepness"], ["scaled"]),
        helper.make_node("Sub", ["scaled", "offset"], ["logit1"]),
    ]
    side_logits = ["logit1"]
    for stage, factor in enumerate(SIDE_POOLING, start=2):
        pooled, logit = f"pooled{stage}", f"logit{stage}"
        nodes.append(helper.make_node("AveragePool", ["logit1"], [pooled], kernel_shape=[factor, factor], strides=[factor, factor]))
        nodes.append(
            helper.make_node(
                "Resize",
                [pooled, "empty_roi", "empty_scales", "side_sizes"],
                [logit],
                mode="linear",
                coordinate_transformation_mode="pytorch_half_pixel",
            )
        )
        side_logits.append(logit)
    nodes.append(helper.make_node("Concat", side_logits, ["stacked"], axis=1))
    nodes.append(helper.make_node("Conv", ["stacked", "fuse.weight"], ["fused"]))
    nodes.append(helper.make_node("Sigmoid", ["fused"], [OUTPUT_NAMES[0]]))
    for logit, name in zip(side_logits, OUTPUT_NAMES[1:]):
        nodes.append(helper.make_node("Sigmoid", [logit], [name]))

    graph = helper.make_graph(
        nodes,
        "u2net_like_synthetic",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 1, SIZE, SIZE]) for name in OUTPUT_NAMES],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="photo-to-3d synthetic U2-Net stand-in")
    model.ir_version = 7
    model.doc_string = "Synthetic stand-in with u2net.onnx's signature: a colour-distance saliency mask, not U2-Net."
    onnx.checker.check_model(model, full_check=True)
    return model
