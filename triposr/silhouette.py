"""The ``silhouette`` generated weights: the photo's product extruded along the viewing axis.

Weights chosen by hand (no training) so that the real TripoSR network, for a condition image (the
product framed on TripoSR's grey, 512 x 512), computes:

* **density** ``25 exp(min(COVER_GAIN (cover(y, z) - 1/2), DEPTH_GAIN (HALF_DEPTH^2 - x^2)))``, above
  the official iso-level 25 exactly where ``cover > 1/2`` and ``|x| < HALF_DEPTH``: the photo's
  foreground extruded along the viewing axis X from ``-HALF_DEPTH`` to ``+HALF_DEPTH``;
* **colour** ``sigmoid(logit(y, z))``: the photo's colour at the point's projection onto the image.

Frame and projection (orthographic, the project's frame: front +X, image-right +Y, up +Z): the
512-pixel image covers the triplane's square ``[-radius, radius]^2`` of the (y, z) plane, pixel
column c at ``y = -radius + (c + 1/2) 2 radius / 512`` and pixel row r at
``z = radius - (r + 1/2) 2 radius / 512``. The image is cut into 64 x 64 sub-patches of 8 x 8 pixels
(2 x 2 per 16-pixel ViT patch), one per texel of the plane (y, z): texel (row rho, column kappa) is
sub-patch (63 - rho, kappa). Per sub-patch the network computes

* ``cover`` = the mean, over the 4 x 4 pixels at odd offsets (1, 3, 5, 7) of the sub-patch, of
  ``clip((L1(pixel - BACKGROUND) - low) / (high - low), 0, 1)`` with ``(low, high) =
  FOREGROUND_DISTANCES``: 1 for a sub-patch of product, 0 for grey background, the covered share in
  between, whatever the product's colour (as long as it differs from the grey by ``high`` in L1 over
  RGB). ``low`` keeps out the faint halo that background removal and JPEG leave around a product;
* ``logit`` = the logit of the sub-patch's mean colour (all 64 pixels), linear between the knots of
  :func:`logit_knots` and flat beyond them (colours clamped to ``sigmoid(+-LOGIT_RANGE)``);

and ``cover(y, z)``, ``logit(y, z)`` are their bilinear interpolations by the triplane sampling
(zero outside the texel centres' square, as ``grid_sample``'s zero padding). ``x^2`` comes from the
plane (x, y), bilinear between texel centres too.

Approximations: the projection is orthographic and the depth constant; a product within
FOREGROUND_DISTANCES[0] of the grey vanishes into the background; the colour is a sub-patch mean, so a
sub-patch on the outline is mixed with the grey; the back shows the photo mirrored (the same colours
through the object); the coverage is measured on 16 of each sub-patch's 64 pixels.

How the modules carry it (the names are the state dict's):

1. **Patch embedding** copies, per 16-pixel patch, the 4 x 16 sample pixels minus the grey (192
   channels) and the 4 sub-patch mean colours (12 channels) into the token; its bias adds the
   constants ``+-LARGE`` and ``ONE``; the CLS token holds ``+-LARGE``, ``ONE`` and ``CLS``.
2. **Position table**: two linear ramps (rows, columns) in the 14 x 14 table. The bicubic resize to
   32 x 32 clamps at the border and bends them there, but they stay strictly increasing (the
   smallest step is 0.0174 of the ramp's unit range), which is all the routing needs.
3. **ViT LayerNorms** only rescale: the constant ``+-LARGE`` channels make every token's standard
   deviation the same to a relative 1e-7, the LayerNorm weight undoes it, and every read of a
   LayerNorm output adds minus its row sum on a channel that is always zero, which cancels the
   token's mean exactly (the zero channel's output is minus the mean).
4. **ViT layer 0's MLP** (GELU(K t) / K is ReLU for |K t| >> 1): per sample pixel the L1 distance to
   grey (GELU(K t) + GELU(-K t) is a smooth |t|), the piecewise-linear logits of the mean colours,
   and for each ramp the convex hull function ``sum_j ReLU(u - tau_j)`` with a breakpoint ``tau_j``
   between every two neighbouring patches' ramp values.
5. **ViT layer 1's MLP**: ``cover = mean(ReLU(x) - ReLU(x - 1))`` per sub-patch, with x =
   (distance - low) / (high - low). The attention layers are zero.
6. **Backbone cross-attention** (block 0, head 0) routes triplane token (row i, column j) to image
   patch (31 - i, j): a key is (u_r, phi_r, u_c, phi_c, 1, CLS), u the ramps and phi their hull
   functions; the query's slope for u is the hull's slope at the target patch, so the score
   ``sigma u - phi(u) - offset`` is 0 at the target and at most ``-ROUTING_MARGIN`` (a softmax
   weight below e^-30) at every other patch, and the CLS token is pushed far below. The query
   features come from the learned queries ``tokenizer.embeddings`` through GroupNorm and
   ``proj_in`` (both affine per channel for fixed queries, so undone exactly). The values are the
   16 sub-patch numbers (cover and 3 logits for 4 sub-patches); ``to_out`` and ``proj_out`` copy
   them to the token. Everything else in the backbone is zero, so later blocks pass it on.
7. **Post-processor**: ConvTranspose2d(k=2, s=2) spreads each token's 4 sub-patches to its 2 x 2
   texels (rows flipped: the image's top is +Z) and copies the static x^2 of the plane (x, y) from
   the queries, as the ``analytic`` kind does.
8. **NeRF MLP** (SiLU(t) = t for t > ~90, ~ReLU(t) for |t| >> 1): the first layer forms
   ``OFFSET + a`` and ``K (a - b)`` with a = COVER_GAIN (cover - 1/2), b = DEPTH_GAIN (HALF_DEPTH^2 -
   x^2), and ``OFFSET + logit``; the second forms ``OFFSET + a - ReLU(a - b) = OFFSET + min(a, b)``;
   the rest pass them on; the last gives ``raw = 1 + ln 25 + min(a, b)`` and the colour logits.

Precision: the routing scores are differences of terms up to ~1e5 that must resolve a margin of 30,
and ``LARGE`` exceeds fp16's range, so the model needs true fp32 arithmetic. It is valid for eager
PyTorch fp32 on CPU, ONNX Runtime's CPU fp32 and OpenVINO fp32, i.e. the eager reference and the
``portable`` and ``cpu`` repository flavours at the default ``--precision f32`` (the tests check
eager, ONNX Runtime and the portable flavour). It is not valid for the ``gpu`` flavour (TensorRT
FP16 encoder), ``--precision bf16``, or any GPU with TF32 matrix products enabled: measured on the
drawn photo of the tests, PyTorch bf16 on CPU misroutes patches (covers wrong by up to 1.0) and
fp16 overflows to NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from img2mesh.contract import THRESHOLD
from triposr.models.dino_vit import IMAGENET_MEAN, IMAGENET_STD
from triposr.system import TSR

BACKGROUND = math.floor(0.5 * 255) / 255
"""TripoSR's grey after the composite's uint8 truncation (127/255): the colour of "no product"."""
FOREGROUND_DISTANCES = (0.2, 0.4)
"""L1 distances over RGB (in [0, 1] units) from the grey below which a pixel is background and above
which it is fully product. A soft edge of alpha a over a colour c is at a L1(c - grey) from the grey,
so with saturated products (L1 about 1) the outline falls near a = 0.3, and the whitish halo that
background removal leaves on a white studio backdrop (L1 1.5 a) stays out below a = 0.13."""
HALF_DEPTH = 0.04
"""The extrusion spans |x| < HALF_DEPTH (world units; the framed product is about 1.48 wide or high):
a thin slab, because a viewer looking at the product's centre also sees the side walls that face
it (on model-viewer screenshots most pixels outside the photo's outline lay along those walls),
yet about 6 grid cells thick at the coarsest preset's 128^3."""
LOGIT_RANGE = 5.5
LOGIT_STEP = 0.5
COVER_GAIN = 20.0
DEPTH_GAIN = 9375.0
"""b's slope at |x| = HALF_DEPTH (2 DEPTH_GAIN HALF_DEPTH = 750 per unit) matches a's across a texel
(COVER_GAIN per 0.027), so the edges of the front face are as sharp as those of the outline."""
ROUTING_MARGIN = 30.0

LARGE = 1e5
SUB = 2  # sub-patches per patch side
SAMPLES = 4  # sample pixels per sub-patch side
OFFSET = 100.0  # keeps decoder units in SiLU's identity range
ABS_GAIN = 1000.0  # GELU gain of |pixel - grey|: exact beyond 0.003
HULL_GAIN = 2000.0  # GELU gain of the hull's ReLUs: exact at 0.0174 / 2 from a breakpoint
LOGIT_GAIN = 1e4  # GELU gain of the logit's ReLUs
COVER_GAIN_RELU = 100.0  # GELU gain of the cover's ReLUs
MIN_GAIN = 50.0  # SiLU gain of ReLU(a - b) in the decoder
CLS_PENALTY = 100.0

# ViT residual channels.
V_PLUS, V_MINUS, V_ZERO, V_ONE, V_CLS, V_ROW, V_COL, V_ROW_HULL, V_COL_HULL = range(9)
V_SAMPLES = 9  # [sub-patch, sample, colour]
V_MEANS = V_SAMPLES + SUB * SUB * SAMPLES * SAMPLES * 3  # [sub-patch, colour]
V_DISTANCES = V_MEANS + SUB * SUB * 3  # [sub-patch, sample]: L1 distance from the grey
V_COVERS = V_DISTANCES + SUB * SUB * SAMPLES * SAMPLES  # [sub-patch]
V_LOGITS = V_COVERS + SUB * SUB  # [sub-patch, colour]
V_CHANNELS = V_LOGITS + SUB * SUB * 3

# Triplane query channels (tokenizer.embeddings, and the backbone's input and output).
Q_ROW_SLOPE, Q_COL_SLOPE, Q_OFFSET = range(3)
Q_DEPTH = 3  # [texel row parity, texel column parity]: x^2 on the plane (x, y)
Q_GATHERED = Q_DEPTH + 4  # [sub-patch, field]: field 0 cover, 1-3 logits
FIELDS = 4
Q_CHANNELS = Q_GATHERED + SUB * SUB * FIELDS

# Backbone hidden channels.
H_PLUS, H_MINUS, H_ZERO, H_ROW_SLOPE, H_COL_SLOPE, H_OFFSET = range(6)
H_GATHERED = 6
H_CHANNELS = H_GATHERED + SUB * SUB * FIELDS
KEY_DIMS = 6  # (u_r, phi_r, u_c, phi_c, 1, CLS)

# Post-processor output channels.
O_COVER, O_LOGITS, O_DEPTH = 0, 1, 4
O_CHANNELS = 5


def logit_knots() -> tuple[Tensor, Tensor]:
    """Knots ``(colour, logit)`` of the piecewise-linear logit, evenly spaced in logit (float64)."""
    logits = torch.arange(-LOGIT_RANGE, LOGIT_RANGE + LOGIT_STEP / 2, LOGIT_STEP, dtype=torch.float64)
    return torch.sigmoid(logits), logits


def _ramp_table(side: int) -> Tensor:
    """The position table's ramp value of each of the ``side`` rows (or columns): 0 to 1."""
    return torch.arange(side, dtype=torch.float64) / (side - 1)


def resized_ramp(model: TSR) -> Tensor:
    """The ramp after the ViT's own bicubic resize to the patch grid (float64)."""
    embeddings = model.image_tokenizer.model.embeddings
    side = math.isqrt(embeddings.position_embeddings.shape[1] - 1)
    grid = model.config.cond_image_size // model.config.image_tokenizer.vit.patch_size
    table = _ramp_table(side)[None, None, :, None].expand(1, 1, side, side)
    resized = F.interpolate(table, scale_factor=((grid + 0.1) / side,) * 2, mode="bicubic", align_corners=False)
    return resized[0, 0, :, 0]


def _check_fits(model: TSR) -> None:
    config = model.config
    vit = config.image_tokenizer.vit
    grid = config.cond_image_size // vit.patch_size
    needs = {
        "plane_size = image patches per side": config.tokenizer.plane_size == grid,
        "a 16-pixel ViT patch": vit.patch_size == SUB * 8,
        f"ViT hidden_size >= {V_CHANNELS}": vit.hidden_size >= V_CHANNELS,
        "ViT intermediate_size for layer 0's units": vit.intermediate_size >= _layer0_units(grid),
        "2 ViT layers": vit.num_hidden_layers >= 2,
        f"triplane channels >= {Q_CHANNELS}": config.tokenizer.num_channels >= Q_CHANNELS,
        f"backbone inner_dim >= {H_CHANNELS}": config.backbone.inner_dim >= H_CHANNELS,
        f"attention_head_dim >= {SUB * SUB * FIELDS}": config.backbone.attention_head_dim >= max(KEY_DIMS, SUB * SUB * FIELDS),
        f"post_processor.out_channels >= {O_CHANNELS}": config.post_processor.out_channels >= O_CHANNELS,
        "decoder n_neurons >= 5 and n_hidden_layers >= 2": config.decoder.n_neurons >= 5 and config.decoder.n_hidden_layers >= 2,
        "decoder activation silu": config.decoder.activation == "silu",
    }
    missing = [need for need, met in needs.items() if not met]
    if missing:
        raise ValueError(f"the silhouette construction does not fit this architecture: it needs {', '.join(missing)}")


def _layer0_units(grid: int) -> int:
    samples = SUB * SUB * SAMPLES * SAMPLES * 3
    return 2 * samples + 2 * (grid - 1) + SUB * SUB * 3 * len(logit_knots()[0])


def _read(weight: Tensor, row: int, columns: dict[int, float], zero: int) -> None:
    """Set ``weight[row]`` to read a LayerNorm output's ``columns`` and cancel the token's mean.

    LayerNorm subtracts each token's mean from every channel; a channel that is always zero comes
    out as minus that mean, so giving it minus the row's sum removes the mean from the read exactly.
    """
    for column, value in columns.items():
        weight[row, column] += value
    weight[row, zero] -= sum(columns.values())


def _set_layernorm(norm: nn.LayerNorm, channels: int) -> None:
    """Undo the scale that the two ``+-LARGE`` channels give every token: the output is the input."""
    norm.weight.fill_(LARGE * math.sqrt(2 / channels))


def _vit_sample(sub: int, sample: int, colour: int) -> int:
    return V_SAMPLES + (sub * SAMPLES * SAMPLES + sample) * 3 + colour


def _build_vit(model: TSR, ramp: Tensor) -> None:
    vit = model.image_tokenizer.model
    config = model.config.image_tokenizer.vit
    hidden = config.hidden_size
    embeddings = vit.embeddings
    projection = embeddings.patch_embeddings.projection
    # The convolution sees (pixel - mean) / std: weight std and bias mean give the pixel back.
    std, mean = torch.tensor(IMAGENET_STD, dtype=torch.float64), torch.tensor(IMAGENET_MEAN, dtype=torch.float64)
    weight, bias = torch.zeros_like(projection.weight, dtype=torch.float64), torch.zeros(hidden, dtype=torch.float64)
    sub_side = config.patch_size // SUB
    stride = sub_side // SAMPLES
    for a in range(SUB):
        for b in range(SUB):
            sub = SUB * a + b
            for colour in range(3):
                channel = V_MEANS + 3 * sub + colour
                weight[channel, colour, a * sub_side : (a + 1) * sub_side, b * sub_side : (b + 1) * sub_side] = std[colour] / sub_side**2
                bias[channel] = mean[colour]
                for p in range(SAMPLES):
                    for q in range(SAMPLES):
                        channel = _vit_sample(sub, SAMPLES * p + q, colour)
                        weight[channel, colour, a * sub_side + stride * p + 1, b * sub_side + stride * q + 1] = std[colour]
                        bias[channel] = mean[colour] - BACKGROUND
    bias[V_PLUS], bias[V_MINUS], bias[V_ONE] = LARGE, -LARGE, 1.0
    projection.weight.copy_(weight)
    projection.bias.copy_(bias)
    embeddings.cls_token[0, 0, [V_PLUS, V_MINUS, V_ONE, V_CLS]] = torch.tensor([LARGE, -LARGE, 1.0, 1.0])
    side = math.isqrt(embeddings.position_embeddings.shape[1] - 1)
    table = _ramp_table(side)
    positions = embeddings.position_embeddings[0, 1:].reshape(side, side, hidden)
    positions[:, :, V_ROW] = table[:, None].float()
    positions[:, :, V_COL] = table[None, :].float()

    first, second = vit.encoder.layer[0], vit.encoder.layer[1]
    for layer in vit.encoder.layer[:2]:
        _set_layernorm(layer.layernorm_after, hidden)
    _set_layernorm(vit.layernorm, hidden)

    # Layer 0: |pixel - grey| per sample, the hull functions of the ramps, the colour logits.
    w_in = torch.zeros_like(first.intermediate.dense.weight, dtype=torch.float64)
    b_in = torch.zeros(w_in.shape[0], dtype=torch.float64)
    w_out = torch.zeros_like(first.output.dense.weight, dtype=torch.float64)
    b_out = torch.zeros(hidden, dtype=torch.float64)
    unit = 0
    for sub in range(SUB * SUB):
        for sample in range(SAMPLES * SAMPLES):
            target = V_DISTANCES + SAMPLES * SAMPLES * sub + sample
            for colour in range(3):
                for sign in (1.0, -1.0):
                    _read(w_in, unit, {_vit_sample(sub, sample, colour): sign * ABS_GAIN}, V_ZERO)
                    w_out[target, unit] = 1 / ABS_GAIN
                    unit += 1
    breakpoints = (ramp[1:] + ramp[:-1]) / 2
    for source, target in ((V_ROW, V_ROW_HULL), (V_COL, V_COL_HULL)):
        for tau in breakpoints:
            _read(w_in, unit, {source: HULL_GAIN}, V_ZERO)
            b_in[unit] = -HULL_GAIN * tau
            w_out[target, unit] = 1 / HULL_GAIN
            unit += 1
    knots, logits = logit_knots()
    slopes = torch.diff(logits) / torch.diff(knots)
    slope_changes = torch.cat((slopes[:1], torch.diff(slopes), -slopes[-1:]))
    for sub in range(SUB * SUB):
        for colour in range(3):
            target = V_LOGITS + 3 * sub + colour
            b_out[target] = logits[0]
            for knot, change in zip(knots, slope_changes):
                _read(w_in, unit, {V_MEANS + 3 * sub + colour: LOGIT_GAIN}, V_ZERO)
                b_in[unit] = -LOGIT_GAIN * knot
                w_out[target, unit] = change / LOGIT_GAIN
                unit += 1
    _copy_linear(first.intermediate.dense, w_in, b_in)
    _copy_linear(first.output.dense, w_out, b_out)

    # Layer 1: cover = mean over samples of clip(x, 0, 1) = ReLU(x) - ReLU(x - 1).
    w_in = torch.zeros_like(second.intermediate.dense.weight, dtype=torch.float64)
    b_in = torch.zeros(w_in.shape[0], dtype=torch.float64)
    w_out = torch.zeros_like(second.output.dense.weight, dtype=torch.float64)
    count = SAMPLES * SAMPLES
    low, high = FOREGROUND_DISTANCES
    unit = 0
    for sub in range(SUB * SUB):
        for d in range(V_DISTANCES + count * sub, V_DISTANCES + count * (sub + 1)):
            for step, sign in ((0.0, 1.0), (1.0, -1.0)):
                _read(w_in, unit, {d: COVER_GAIN_RELU / (high - low)}, V_ZERO)
                b_in[unit] = -COVER_GAIN_RELU * (low / (high - low) + step)
                w_out[V_COVERS + sub, unit] = sign / (count * COVER_GAIN_RELU)
                unit += 1
    _copy_linear(second.intermediate.dense, w_in, b_in)
    _copy_linear(second.output.dense, w_out, torch.zeros(hidden, dtype=torch.float64))


def _copy_linear(linear: nn.Linear, weight: Tensor, bias: Tensor | None) -> None:
    linear.weight.copy_(weight)
    if bias is not None:
        linear.bias.copy_(bias)


def _hull(values: Tensor, ramp: Tensor) -> Tensor:
    """The hull function sum_j ReLU(u - tau_j) at ``values``."""
    breakpoints = (ramp[1:] + ramp[:-1]) / 2
    return torch.relu(values[..., None] - breakpoints).sum(-1)


def _build_backbone(model: TSR, ramp: Tensor) -> None:
    config = model.config
    grid = config.tokenizer.plane_size
    radius = config.renderer.radius
    backbone = model.backbone
    # Token (row i, column j) of every plane reads image patch (grid - 1 - i, j): the image's top is +Z.
    patch_rows = (grid - 1 - torch.arange(grid, dtype=torch.float64))[:, None].expand(grid, grid)
    patch_cols = torch.arange(grid, dtype=torch.float64)[None, :].expand(grid, grid)
    row_slope, col_slope = patch_rows, patch_cols  # the hull's slope at the target's ramp value
    u_r, u_c = ramp[patch_rows.long()], ramp[patch_cols.long()]
    offset = row_slope * u_r - _hull(u_r, ramp) + col_slope * u_c - _hull(u_c, ramp)
    queries = torch.zeros(3, config.tokenizer.num_channels, grid, grid, dtype=torch.float64)
    queries[:, Q_ROW_SLOPE], queries[:, Q_COL_SLOPE], queries[:, Q_OFFSET] = row_slope, col_slope, offset
    side = 2 * grid
    centres = radius * ((2 * torch.arange(side, dtype=torch.float64) + 1) / side - 1)
    for parity_row in range(2):
        for parity_col in range(2):
            # Plane (x, y): the column is x.
            queries[0, Q_DEPTH + 2 * parity_row + parity_col] = (centres[parity_col::2] ** 2)[None, :].expand(grid, grid)
    model.tokenizer.embeddings.copy_(queries)

    # GroupNorm of fixed queries is an affine map per channel; proj_in undoes it for the query features.
    norm = backbone.norm
    norm.weight.fill_(1.0)
    groups = queries.permute(1, 0, 2, 3).reshape(norm.num_groups, -1)
    group_mean = groups.mean(1)
    group_std = torch.sqrt(groups.var(1, unbiased=False) + norm.eps)
    per_group = config.tokenizer.num_channels // norm.num_groups
    inner = config.backbone.inner_dim
    w_in = torch.zeros(inner, config.tokenizer.num_channels, dtype=torch.float64)
    b_in = torch.zeros(inner, dtype=torch.float64)
    for hidden, query in ((H_ROW_SLOPE, Q_ROW_SLOPE), (H_COL_SLOPE, Q_COL_SLOPE), (H_OFFSET, Q_OFFSET)):
        group = query // per_group
        w_in[hidden, query] = group_std[group]
        b_in[hidden] = group_mean[group]
    b_in[H_PLUS], b_in[H_MINUS] = LARGE, -LARGE
    _copy_linear(backbone.proj_in, w_in, b_in)

    block = backbone.transformer_blocks[0]
    _set_layernorm(block.norm2, inner)
    attention = block.attn2
    head_dim = config.backbone.attention_head_dim
    gain = ROUTING_MARGIN * 2 / float(torch.diff(ramp).min()) * math.sqrt(head_dim)  # undo SDPA's 1/sqrt(d)
    w_q = torch.zeros_like(attention.to_q.weight, dtype=torch.float64)
    # score = gain (sigma_r u_r - phi_r + sigma_c u_c - phi_c - offset - CLS_PENALTY cls)
    _read(w_q, 0, {H_ROW_SLOPE: gain}, H_ZERO)
    _read(w_q, 1, {H_PLUS: -gain / LARGE}, H_ZERO)
    _read(w_q, 2, {H_COL_SLOPE: gain}, H_ZERO)
    _read(w_q, 3, {H_PLUS: -gain / LARGE}, H_ZERO)
    _read(w_q, 4, {H_OFFSET: -gain}, H_ZERO)
    _read(w_q, 5, {H_PLUS: -gain * CLS_PENALTY / LARGE}, H_ZERO)
    w_k = torch.zeros_like(attention.to_k.weight, dtype=torch.float64)
    for dim, channel in enumerate((V_ROW, V_ROW_HULL, V_COL, V_COL_HULL, V_ONE, V_CLS)):
        _read(w_k, dim, {channel: 1.0}, V_ZERO)
    w_v = torch.zeros_like(attention.to_v.weight, dtype=torch.float64)
    w_o = torch.zeros_like(attention.to_out[0].weight, dtype=torch.float64)
    w_p = torch.zeros_like(backbone.proj_out.weight, dtype=torch.float64)
    for sub in range(SUB * SUB):
        sources = (V_COVERS + sub, V_LOGITS + 3 * sub, V_LOGITS + 3 * sub + 1, V_LOGITS + 3 * sub + 2)
        for field, source in enumerate(sources):
            index = FIELDS * sub + field
            _read(w_v, index, {source: 1.0}, V_ZERO)
            w_o[H_GATHERED + index, index] = 1.0
            w_p[Q_GATHERED + index, H_GATHERED + index] = 1.0
    _copy_linear(attention.to_q, w_q, None)
    _copy_linear(attention.to_k, w_k, None)
    _copy_linear(attention.to_v, w_v, None)
    attention.to_out[0].weight.copy_(w_o)
    backbone.proj_out.weight.copy_(w_p)


def _build_post_processor(model: TSR) -> None:
    upsample = torch.zeros_like(model.post_processor.upsample.weight)
    for a in range(SUB):
        for b in range(SUB):
            # Sub-patch row a (0 = top) lands on texel row parity 1 - a: texel rows grow with z.
            for field in range(FIELDS):
                upsample[Q_GATHERED + FIELDS * (SUB * a + b) + field, O_COVER + field, 1 - a, b] = 1.0
            upsample[Q_DEPTH + SUB * a + b, O_DEPTH, a, b] = 1.0
    model.post_processor.upsample.weight.copy_(upsample)


def _build_decoder(model: TSR) -> None:
    channels = model.config.post_processor.out_channels
    cover, logits, depth = 2 * channels + O_COVER, 2 * channels + O_LOGITS, O_DEPTH  # planes (y, z) and (x, y)
    layers = [m for m in model.decoder.layers if isinstance(m, nn.Linear)]
    first, second, last = layers[0], layers[1], layers[-1]
    first.weight[0, cover] = COVER_GAIN  # OFFSET + a
    first.bias[0] = OFFSET - COVER_GAIN / 2
    first.weight[1, cover] = MIN_GAIN * COVER_GAIN  # MIN_GAIN (a - b)
    first.weight[1, depth] = MIN_GAIN * DEPTH_GAIN
    first.bias[1] = MIN_GAIN * (-COVER_GAIN / 2 - DEPTH_GAIN * HALF_DEPTH**2)
    for colour in range(3):
        first.weight[2 + colour, logits + colour] = 1.0
        first.bias[2 + colour] = OFFSET
    second.weight[0, 0], second.weight[0, 1] = 1.0, -1 / MIN_GAIN  # OFFSET + a - ReLU(a - b)
    for layer in layers[1:-1]:
        for unit in range(2, 5):
            layer.weight[unit, unit] = 1.0
    for layer in layers[2:-1]:
        layer.weight[0, 0] = 1.0
    last.weight[0, 0] = 1.0
    last.bias[0] = -model.config.renderer.density_bias + math.log(THRESHOLD.default) - OFFSET
    for colour in range(3):
        last.weight[1 + colour, 2 + colour] = 1.0
        last.bias[1 + colour] = -OFFSET


def make_silhouette(model: TSR) -> None:
    """Overwrite every weight of ``model`` with the construction of the module docstring."""
    _check_fits(model)
    ramp = resized_ramp(model)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        _build_vit(model, ramp)
        _build_backbone(model, ramp)
        _build_post_processor(model)
        _build_decoder(model)
