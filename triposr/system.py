"""TSR: the TripoSR network as two explicit stages, image -> scene codes and (scene codes, points) -> field.

The official ``TSR.forward`` takes PIL images and resizes them itself; here the model takes tensors so
that both stages export to ONNX unchanged, and the resize the official ImagePreprocessor does
(antialiased bilinear to ``cond_image_size``) happens in :meth:`TSR.encode` only when the size differs
(at equal size that resize is the identity). The submodule names are those of the official state dict.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from triposr.config import TSRConfig
from triposr.models.dino_vit import DINOSingleImageTokenizer
from triposr.models.nerf_decoder import NeRFMLP, query_triplane
from triposr.models.transformer1d import Transformer1D
from triposr.models.triplane import Triplane1DTokenizer, TriplaneUpsampleNetwork


class TSR(nn.Module):
    def __init__(self, config: TSRConfig) -> None:
        super().__init__()
        self.config = config
        self.image_tokenizer = DINOSingleImageTokenizer(config.image_tokenizer.vit)
        self.tokenizer = Triplane1DTokenizer(config.tokenizer)
        self.backbone = Transformer1D(config.backbone)
        self.post_processor = TriplaneUpsampleNetwork(config.post_processor)
        self.decoder = NeRFMLP(config.decoder)

    @property
    def radius(self) -> float:
        """Half the side of the cube, centred at the origin, that the triplanes cover (0.87 officially)."""
        return self.config.renderer.radius

    @property
    def scene_code_shape(self) -> tuple[int, int, int, int]:
        """Per-image scene-code shape ``(3, C, 2P, 2P)``; (3, 40, 64, 64) for the official model."""
        side = 2 * self.config.tokenizer.plane_size
        return (3, self.config.post_processor.out_channels, side, side)

    def vit_position_embeddings(self) -> Tensor:
        """The ViT position table resized for ``cond_image_size`` inputs; constant for a loaded model."""
        size = self.config.cond_image_size
        return self.image_tokenizer.model.embeddings.interpolated_position_embeddings(size, size)

    def encode(self, images: Tensor, *, vit_position_embeddings: Tensor | None = None) -> Tensor:
        """RGB ``images`` [B, 3, H, W] in [0, 1] -> scene codes [B, 3, C, 2P, 2P].

        ``vit_position_embeddings`` (from :meth:`vit_position_embeddings`) may be passed precomputed; the
        ONNX export does so to store the table as a constant instead of a bicubic resize.
        """
        if images.ndim != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"expected float RGB images [B, 3, H, W], got {images.dtype} {tuple(images.shape)}")
        size = self.config.cond_image_size
        if images.shape[-2:] != (size, size):
            images = F.interpolate(images, (size, size), mode="bilinear", align_corners=False, antialias=True)
        image_tokens = self.image_tokenizer(images, vit_position_embeddings)
        queries = self.tokenizer(images.shape[0])
        tokens = self.backbone(queries, encoder_hidden_states=image_tokens)
        return self.post_processor(self.tokenizer.detokenize(tokens))

    def decode(self, scene_codes: Tensor, points: Tensor) -> tuple[Tensor, Tensor]:
        """Query scene codes [B, 3, C, H, W] at world points [B, N, 3] (inside +-radius).

        Returns density [B, N, 1] (= exp(raw - 1); the official iso-surface is density = 25) and colour
        [B, N, 3] (sigmoid RGB in [0, 1]).
        """
        if scene_codes.ndim != 5 or tuple(scene_codes.shape[1:3]) != self.scene_code_shape[:2]:
            raise ValueError(f"expected scene codes [B, 3, {self.scene_code_shape[1]}, H, W], got {tuple(scene_codes.shape)}")
        if points.ndim != 3 or points.shape[-1] != 3 or points.shape[0] != scene_codes.shape[0]:
            raise ValueError(f"expected points [{scene_codes.shape[0]}, N, 3], got {tuple(points.shape)}")
        renderer = self.config.renderer
        return query_triplane(self.decoder, scene_codes, points, renderer.radius, renderer.density_bias)
