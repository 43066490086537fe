"""Checkpoints in the official TripoSR file format, for tests, benchmarks and the offline demo.

The official weights (1.68 GB on the Hugging Face hub) cannot be fetched on our build machines, so
these writers produce a folder that :func:`triposr.checkpoint.load_tsr` loads exactly like the hub
one: ``config.yaml`` (same keys, including the ``${tokenizer.num_channels}`` interpolation) and
``model.ckpt`` (a flat state dict of fp32 tensors). A ViT other than ``facebook/dino-vitb16`` is
described by a transformers-style ``vit/config.json`` beside them.

Sizes: ``official`` has the hub architecture (549 tensors, 419,275,628 parameters); ``tiny`` reduces
depth and width (same module tree) so tests run in seconds; ``small`` keeps the official 32 x 32
plane tokens (64 texels a side) and 512-pixel input with narrow widths (a 320-wide, 2-layer ViT, one
1-block backbone of 32 channels): the smallest size the ``silhouette`` kind fits, a 9.5 MB checkpoint
that exports in seconds.

Kinds:

* ``random``: seeded random weights with realistic scales (PyTorch's default initialisation, the
  official Kaiming initialisation for the MLP, norm affines jittered around 1/0 so that every tensor
  influences the output). Nothing meaningful is reconstructed, but every operation of the network
  is exercised.
* ``analytic``: weights chosen so that, whatever the image, the density field is a ball of
  ``radius`` centred at the origin with a uniform ``color``:

  1. ``backbone.proj_out`` is zero, so the backbone returns its residual, the learned triplane
     queries ``tokenizer.embeddings``, untouched (the ViT and the attention blocks stay random).
  2. The post-processor's ConvTranspose2d(k=2, s=2) copies query channel ``2a + b`` at (i, j) to
     output channel 0 at texel (2i + a, 2j + b): the queries spell out any 2P x 2P image exactly.
     Plane (x, y) holds x^2 + y^2 and plane (x, z) holds z^2, evaluated at the world position of each
     texel centre (``align_corners=False``); everything else is zero. Bilinear sampling then returns
     s ~= x^2 + y^2 + z^2 (exact at texel centres; linear interpolation of a square overestimates it by
     at most h^2/4 per axis, h the texel size, so the ball shrinks by at most 3h^2/(8 radius)).
  3. The first MLP layer computes ``h = OFFSET + radius^2 - s`` with OFFSET = 100; hidden layers pass
     unit 0 through unchanged. SiLU(t) equals t in fp32 for t > ~90, so the signal survives the
     activations unchanged.
  4. The last layer gives ``raw = 1 + ln(25) + SHARPNESS (h - OFFSET)``, so the density
     ``exp(raw - 1) = 25 exp(SHARPNESS (radius^2 - s))`` crosses the official iso-level 25 exactly at
     ``s = radius^2``, is above it inside and below it outside. The colour logits are constant
     ``logit(color)``.
* ``two-color``: the same ball, coloured ``FRONT_COLOR`` where x > 0 (the photographed front) and
  ``BACK_COLOR`` where x < 0, with a sharp edge on the plane x = 0 (for texture tests): plane
  (x, y) also holds x in channel 1, two hidden units compute ``SiLU(K x + 1) − SiLU(K x)``, a step
  from 0 to 1 over about ``10 / K`` in x, carried through the later layers on top of OFFSET, and the
  colour logits move from ``logit(BACK_COLOR)`` to ``logit(FRONT_COLOR)`` with it.
* ``silhouette``: the photo's product extruded along the viewing axis, in the photo's colours (sizes
  ``small`` and ``official``). Unlike the kinds above, the image decides the field, and it travels
  through every module: the patch embedding copies sample pixels and sub-patch mean colours into the
  tokens; ViT MLPs turn them into a per-sub-patch foreground cover (colour-independent, saturated per
  pixel) and colour logits, and turn two linear position ramps into convex "hull" keys; the
  backbone's cross-attention routes each triplane token of the plane (y, z) to the image patch at its
  projection; the post-processor spreads 2 x 2 sub-patches to 2 x 2 texels; the NeRF MLP computes
  ``density = 25 exp(min(20 (cover - 1/2), 9375 (0.04^2 - x^2)))`` (above the iso-level inside the
  outline, for |x| < 0.04) and ``colour = sigmoid(logit)``. The frame is the project's (front +X,
  image-right +Y, up +Z) with an orthographic projection of the 512-pixel image onto the triplane's
  square. :mod:`triposr.silhouette` documents the construction, its constants and its approximations;
  it needs true fp32 (no TF32, fp16 or bf16).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from torch import Tensor, nn

from triposr.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from triposr.config import DINO_VITB16, ViTConfig, load_config
from triposr.silhouette import make_silhouette
from triposr.system import TSR

Size = Literal["official", "small", "tiny"]
SIZES: tuple[Size, ...] = ("official", "small", "tiny")
Kind = Literal["random", "analytic", "two-color", "silhouette"]
KINDS: tuple[Kind, ...] = ("random", "analytic", "two-color", "silhouette")

# The hub config.yaml's values (class defaults left implicit, as in the hub file).
OFFICIAL_CONFIG: dict[str, Any] = {
    "cond_image_size": 512,
    "image_tokenizer_cls": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "image_tokenizer": {"pretrained_model_name_or_path": DINO_VITB16},
    "tokenizer_cls": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "tokenizer": {"plane_size": 32, "num_channels": 1024},
    "backbone_cls": "tsr.models.transformer.transformer_1d.Transformer1D",
    "backbone": {
        "in_channels": "${tokenizer.num_channels}",
        "num_attention_heads": 16,
        "attention_head_dim": 64,
        "num_layers": 16,
        "cross_attention_dim": 768,
    },
    "post_processor_cls": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "post_processor": {"in_channels": 1024, "out_channels": 40},
    "decoder_cls": "tsr.models.network_utils.NeRFMLP",
    "decoder": {"in_channels": 120, "n_neurons": 64, "n_hidden_layers": 9, "activation": "silu"},
    "renderer_cls": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
    "renderer": {
        "radius": 0.87,
        "feature_reduction": "concat",
        "density_activation": "exp",
        "density_bias": -1.0,
        "num_samples_per_ray": 128,
    },
}

TINY_VIT = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
SMALL_VIT = ViTConfig(hidden_size=320, num_hidden_layers=2, num_attention_heads=4, intermediate_size=768)
VIT_CONFIGS: dict[str, ViTConfig] = {"tiny": TINY_VIT, "small": SMALL_VIT}
TINY_VIT_DIR = "vit"
NARROW_SHAPES: dict[str, tuple[int, int, int, int]] = {"tiny": (16, 64, 2, 2), "small": (32, 32, 1, 1)}
"""(plane_size, triplane channels, backbone heads, backbone blocks) of the narrow sizes. ``small`` keeps
the official 32 x 32 plane tokens (64 texels a side, one per 8-pixel sub-patch): what the silhouette
construction needs, at a fraction of the official export cost."""

DEFAULT_COLOR = (0.8, 0.3, 0.2)
FRONT_COLOR = (0.9, 0.1, 0.1)
BACK_COLOR = (0.1, 0.1, 0.9)
EDGE_SHARPNESS = 2000.0
"""K of the two-colour step: the colour changes over about 0.005 units of x (a third of a cell at 256³)."""
ANALYTIC_OFFSET = 100.0
ANALYTIC_SHARPNESS = 10.0
ISO_LEVEL = 25.0


def yaml_config(size: Size) -> dict[str, Any]:
    """The ``config.yaml`` content for ``size``; ``small`` and ``tiny`` keep the image size, radius and activations."""
    config = copy.deepcopy(OFFICIAL_CONFIG)
    if size == "official":
        return config
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    plane_size, channels, heads, layers = NARROW_SHAPES[size]
    config["image_tokenizer"] = {"pretrained_model_name_or_path": TINY_VIT_DIR}
    config["tokenizer"] = {"plane_size": plane_size, "num_channels": channels}
    config["backbone"].update(
        num_attention_heads=heads, attention_head_dim=32, num_layers=layers,
        cross_attention_dim=VIT_CONFIGS[size].hidden_size,
    )
    config["post_processor"] = {"in_channels": channels, "out_channels": 8}
    config["decoder"] = {"in_channels": 24, "n_neurons": 16, "n_hidden_layers": 3, "activation": "silu"}
    return config


def _randomize(model: TSR, generator: torch.Generator) -> None:
    """Jitter what default initialisation leaves constant (norm affines, ViT tokens) so it all matters."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
                module.weight.copy_(1.0 + 0.1 * torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(0.1 * torch.randn(module.bias.shape, generator=generator))
        # The official NeRFMLP initialisation; PyTorch's default shrinks the signal through 10 layers
        # until the random field is constant.
        for layer in model.decoder.layers:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu", generator=generator)
        embeddings = model.image_tokenizer.model.embeddings
        for table in (embeddings.cls_token, embeddings.position_embeddings):
            table.copy_(0.02 * torch.randn(table.shape, generator=generator))


def _texel_centres(side: int, radius: float) -> Tensor:
    """World coordinate of each texel centre along one plane axis (grid_sample, align_corners=False)."""
    return radius * ((2 * torch.arange(side, dtype=torch.float64) + 1) / side - 1)


def _make_analytic(
    model: TSR, radius: float, color: tuple[float, float, float],
    split: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None,
) -> None:
    """Overwrite ``model`` so its field is the ball described in the module docstring.

    ``split`` is ``(front colour, back colour)`` for the two-colour ball; None colours it ``color``.
    """
    config = model.config
    plane_size, out_channels = config.tokenizer.plane_size, config.post_processor.out_channels
    if config.tokenizer.num_channels < 4:
        raise ValueError("the analytic construction needs at least 4 triplane channels")
    if not 0 < radius < config.renderer.radius:
        raise ValueError(f"radius must lie in (0, {config.renderer.radius}), got {radius}")
    for shade in (color, *(split or ())):
        if not all(0 < c < 1 for c in shade):
            raise ValueError(f"color components must lie strictly between 0 and 1, got {shade}")
    if split is not None and (config.tokenizer.num_channels < 8 or out_channels < 2 or config.decoder.n_hidden_layers < 2):
        raise ValueError("the two-colour construction needs 8 triplane channels, 2 output channels and 2 hidden layers")
    side = 2 * plane_size
    centres = _texel_centres(side, config.renderer.radius)
    images = torch.zeros(2, 3, side, side, dtype=torch.float64)  # [output channel, plane, row, col]
    images[0, 0] = centres[:, None] ** 2 + centres[None, :] ** 2  # plane (x, y): col = x, row = y
    images[0, 1] = (centres**2)[:, None].expand(side, side)  # plane (x, z): row = z
    images[1, 0] = centres[None, :].expand(side, side)  # plane (x, y), channel 1: x
    queries = torch.zeros(3, config.tokenizer.num_channels, plane_size, plane_size, dtype=torch.float64)
    upsample = torch.zeros_like(model.post_processor.upsample.weight)
    for channel in range(2 if split is not None else 1):
        for a in range(2):
            for b in range(2):
                queries[:, 4 * channel + 2 * a + b] = images[channel, :, a::2, b::2]
                upsample[4 * channel + 2 * a + b, channel, a, b] = 1.0

    layers = [m for m in model.decoder.layers if isinstance(m, nn.Linear)]
    with torch.no_grad():
        model.backbone.proj_out.weight.zero_()
        model.backbone.proj_out.bias.zero_()
        model.tokenizer.embeddings.copy_(queries)
        model.post_processor.upsample.weight.copy_(upsample)
        model.post_processor.upsample.bias.zero_()
        for layer in layers:
            layer.weight.zero_()
            layer.bias.zero_()
        first, last = layers[0], layers[-1]
        first.weight[0, 0] = -1.0  # plane 0, channel 0: x^2 + y^2
        first.weight[0, out_channels] = -1.0  # plane 1, channel 0: z^2
        first.bias[0] = ANALYTIC_OFFSET + radius**2
        for layer in layers[1:-1]:
            layer.weight[0, 0] = 1.0
        last.weight[0, 0] = ANALYTIC_SHARPNESS
        last.bias[0] = -config.renderer.density_bias + math.log(ISO_LEVEL) - ANALYTIC_SHARPNESS * ANALYTIC_OFFSET
        if split is None:
            last.bias[1:4] = torch.tensor([_logit(c) for c in color])
            return
        front, back = split
        first.weight[1, 1] = first.weight[2, 1] = EDGE_SHARPNESS  # plane 0, channel 1: x
        first.bias[1] = 1.0
        second = layers[1]
        second.weight[1, 1], second.weight[1, 2] = 1.0, -1.0  # SiLU(Kx + 1) - SiLU(Kx): the step
        second.bias[1] = ANALYTIC_OFFSET
        for layer in layers[2:-1]:
            layer.weight[1, 1] = 1.0
        for index, (f, b) in enumerate(zip(front, back), start=1):
            last.weight[index, 1] = _logit(f) - _logit(b)
            last.bias[index] = _logit(b) - (_logit(f) - _logit(b)) * ANALYTIC_OFFSET


def _logit(value: float) -> float:
    return math.log(value / (1 - value))


def write_checkpoint(
    directory: str | Path,
    *,
    size: Size,
    kind: Kind,
    seed: int = 0,
    radius: float = 0.5,
    color: tuple[float, float, float] = DEFAULT_COLOR,
) -> Path:
    """Write ``config.yaml`` + ``model.ckpt`` (+ ``vit/config.json`` for ``tiny``) into ``directory``.

    ``radius`` and ``color`` only apply to ``kind="analytic"``. Returns the directory, ready for
    :func:`triposr.checkpoint.load_tsr`. The official size writes 1.68 GB.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    data = yaml_config(size)
    if size in VIT_CONFIGS:
        (directory / TINY_VIT_DIR).mkdir(exist_ok=True)
        (directory / TINY_VIT_DIR / "config.json").write_text(json.dumps(VIT_CONFIGS[size].to_json_dict(), indent=2))
    (directory / CONFIG_NAME).write_text(yaml.safe_dump(data, sort_keys=False))
    config = load_config(directory / CONFIG_NAME)
    torch.manual_seed(seed)
    model = TSR(config)
    _randomize(model, torch.Generator().manual_seed(seed))
    if kind == "analytic":
        _make_analytic(model, radius, color)
    elif kind == "two-color":
        _make_analytic(model, radius, color, (FRONT_COLOR, BACK_COLOR))
    elif kind == "silhouette":
        make_silhouette(model)
    torch.save(model.state_dict(), directory / WEIGHTS_NAME)
    return directory


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m triposr.synthetic", description="Write a TripoSR checkpoint in the official format."
    )
    parser.add_argument("directory", type=Path)
    parser.add_argument("--size", choices=SIZES, default="tiny")
    parser.add_argument("--kind", choices=KINDS, default="random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--radius", type=float, default=0.5, help="ball radius of the analytic field")
    parser.add_argument("--color", type=float, nargs=3, default=DEFAULT_COLOR, help="RGB in (0, 1) of the analytic field")
    args = parser.parse_args(argv)
    path = write_checkpoint(
        args.directory, size=args.size, kind=args.kind, seed=args.seed, radius=args.radius, color=tuple(args.color)
    )
    print(f"wrote a {args.size} {args.kind} TripoSR checkpoint to {path}")


if __name__ == "__main__":
    main()
