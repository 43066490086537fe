"""TripoSR configuration: the official ``config.yaml`` parsed into frozen dataclasses.

The hub file names its modules by class path and leaves many values to the class defaults of the
official code; both are reproduced here so that a checkpoint configured like the hub one builds
exactly the module tree whose state dict it holds. Only the classes and options of the official
model are implemented; anything else fails at parse time with a message naming the key, rather
than building a model that silently differs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import yaml

DINO_VITB16 = "facebook/dino-vitb16"

# The class paths of the official configuration; the only ones this clean-room model implements.
OFFICIAL_CLASSES = {
    "image_tokenizer_cls": "tsr.models.tokenizers.image.DINOSingleImageTokenizer",
    "tokenizer_cls": "tsr.models.tokenizers.triplane.Triplane1DTokenizer",
    "backbone_cls": "tsr.models.transformer.transformer_1d.Transformer1D",
    "post_processor_cls": "tsr.models.network_utils.TriplaneUpsampleNetwork",
    "decoder_cls": "tsr.models.network_utils.NeRFMLP",
    "renderer_cls": "tsr.models.nerf_renderer.TriplaneNeRFRenderer",
}


class ConfigError(ValueError):
    """The configuration asks for something the official model does not have."""


@dataclass(frozen=True)
class ViTConfig:
    """The subset of a transformers ``ViTConfig`` that shapes the ViT (names as in ``config.json``)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    patch_size: int = 16
    image_size: int = 224
    num_channels: int = 3
    layer_norm_eps: float = 1e-12
    qkv_bias: bool = True

    @classmethod
    def from_json_file(cls, path: Path) -> ViTConfig:
        """Read a transformers-style ``config.json``; keys that only matter for training are ignored."""
        data = json.loads(path.read_text())
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in data.items() if k in known})
        if config.hidden_act != "gelu":
            raise ConfigError(f"{path}: hidden_act {config.hidden_act!r} is not supported (only 'gelu')")
        return config

    def to_json_dict(self) -> dict[str, Any]:
        """The ``config.json`` content transformers' ``ViTConfig.from_pretrained`` would accept."""
        data: dict[str, Any] = {"model_type": "vit", "architectures": ["ViTModel"]}
        data.update({f.name: getattr(self, f.name) for f in fields(self)})
        data.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.02)
        return data


# facebook/dino-vitb16's config.json, as a constant so the official model needs no hub call for it.
DINO_VITB16_CONFIG = ViTConfig()


@dataclass(frozen=True)
class ImageTokenizerConfig:
    pretrained_model_name_or_path: str = DINO_VITB16
    vit: ViTConfig = DINO_VITB16_CONFIG


@dataclass(frozen=True)
class TokenizerConfig:
    plane_size: int
    num_channels: int


@dataclass(frozen=True)
class BackboneConfig:
    in_channels: int
    num_attention_heads: int = 16
    attention_head_dim: int = 88
    num_layers: int = 1
    cross_attention_dim: int | None = None
    norm_num_groups: int = 32
    attention_bias: bool = False
    activation_fn: str = "geglu"
    norm_type: str = "layer_norm"
    norm_elementwise_affine: bool = True
    only_cross_attention: bool = False
    double_self_attention: bool = False
    upcast_attention: bool = False
    out_channels: int | None = None
    dropout: float = 0.0
    gradient_checkpointing: bool = False

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim


@dataclass(frozen=True)
class PostProcessorConfig:
    in_channels: int
    out_channels: int


@dataclass(frozen=True)
class DecoderConfig:
    in_channels: int
    n_neurons: int
    n_hidden_layers: int
    activation: str = "relu"
    bias: bool = True
    weight_init: str | None = "kaiming_uniform"
    bias_init: str | None = None


@dataclass(frozen=True)
class RendererConfig:
    radius: float
    feature_reduction: str = "concat"
    density_activation: str = "trunc_exp"
    density_bias: float = -1.0
    color_activation: str = "sigmoid"
    num_samples_per_ray: int = 128
    randomized: bool = False


@dataclass(frozen=True)
class TSRConfig:
    cond_image_size: int
    image_tokenizer: ImageTokenizerConfig
    tokenizer: TokenizerConfig
    backbone: BackboneConfig
    post_processor: PostProcessorConfig
    decoder: DecoderConfig
    renderer: RendererConfig


_INTERPOLATION = re.compile(r"\$\{([^}]+)\}")


def _lookup(root: Mapping[str, Any], dotted: str, seen: tuple[str, ...]) -> Any:
    if dotted in seen:
        raise ConfigError(f"circular interpolation: {' -> '.join(seen + (dotted,))}")
    node: Any = root
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"interpolation ${{{dotted}}} refers to a missing key")
        node = node[part]
    return _resolve(root, node, seen + (dotted,))


def _resolve(root: Mapping[str, Any], value: Any, seen: tuple[str, ...] = ()) -> Any:
    """Resolve OmegaConf-style ``${a.b}`` interpolations, the only OmegaConf feature the hub file uses."""
    if isinstance(value, Mapping):
        return {k: _resolve(root, v, seen) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(root, v, seen) for v in value]
    if isinstance(value, str):
        whole = _INTERPOLATION.fullmatch(value)
        if whole:
            return _lookup(root, whole.group(1), seen)
        return _INTERPOLATION.sub(lambda m: str(_lookup(root, m.group(1), seen)), value)
    return value


def _section(cls: type, data: Any, name: str, **extra: Any) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{name}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)} - set(extra)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{name}: unknown key(s) {unknown}; known keys are {sorted(known)}")
    try:
        return cls(**data, **extra)
    except TypeError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _vit_config(name_or_path: str, base_dir: Path | None) -> ViTConfig:
    """``facebook/dino-vitb16`` is a built-in constant; anything else must be a local config.json."""
    if name_or_path == DINO_VITB16:
        return DINO_VITB16_CONFIG
    path = Path(name_or_path)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise ConfigError(
            f"image_tokenizer.pretrained_model_name_or_path={name_or_path!r}: only {DINO_VITB16!r} is "
            f"built in; any other value must be a local directory (or file) with a transformers ViT "
            f"config.json (relative paths are taken from the config.yaml's folder); {path} does not exist"
        )
    return ViTConfig.from_json_file(path)


def _check_supported(config: TSRConfig) -> None:
    backbone = config.backbone
    unsupported = {
        "backbone.activation_fn": (backbone.activation_fn, "geglu"),
        "backbone.norm_type": (backbone.norm_type, "layer_norm"),
        "backbone.only_cross_attention": (backbone.only_cross_attention, False),
        "backbone.double_self_attention": (backbone.double_self_attention, False),
        "backbone.norm_elementwise_affine": (backbone.norm_elementwise_affine, True),
        "renderer.feature_reduction": (config.renderer.feature_reduction, "concat"),
        "renderer.color_activation": (config.renderer.color_activation, "sigmoid"),
    }
    for key, (value, supported) in unsupported.items():
        if value != supported:
            raise ConfigError(f"{key}={value!r} is not implemented (the official model uses {supported!r})")
    if backbone.cross_attention_dim is None:
        raise ConfigError("backbone.cross_attention_dim is required: the backbone attends to the image tokens")
    if backbone.cross_attention_dim != config.image_tokenizer.vit.hidden_size:
        raise ConfigError(
            f"backbone.cross_attention_dim={backbone.cross_attention_dim} must equal the ViT hidden_size "
            f"{config.image_tokenizer.vit.hidden_size}"
        )
    if config.decoder.activation not in ("silu", "relu"):
        raise ConfigError(f"decoder.activation={config.decoder.activation!r}: expected 'silu' or 'relu'")
    # trunc_exp equals exp in the forward pass; the official code only resolves "exp" by name.
    if config.renderer.density_activation != "exp":
        raise ConfigError(
            f"renderer.density_activation={config.renderer.density_activation!r}: only 'exp' is "
            "implemented (the hub config sets it; the class default 'trunc_exp' does not run upstream)"
        )
    if config.decoder.in_channels != 3 * config.post_processor.out_channels:
        raise ConfigError(
            f"decoder.in_channels={config.decoder.in_channels} must be 3 x post_processor.out_channels "
            f"({config.post_processor.out_channels}) for concat feature reduction"
        )
    if config.tokenizer.num_channels != backbone.in_channels or backbone.in_channels != config.post_processor.in_channels:
        raise ConfigError(
            "tokenizer.num_channels, backbone.in_channels and post_processor.in_channels must be equal, got "
            f"{config.tokenizer.num_channels}, {backbone.in_channels}, {config.post_processor.in_channels}"
        )
    if backbone.out_channels not in (None, backbone.in_channels):
        raise ConfigError("backbone.out_channels must be unset or equal to in_channels (the residual needs it)")


def config_from_dict(data: Mapping[str, Any], base_dir: Path | None = None) -> TSRConfig:
    """Build a :class:`TSRConfig` from the parsed yaml; ``base_dir`` anchors a relative ViT config path."""
    data = _resolve(data, data)
    expected = {"cond_image_size", *OFFICIAL_CLASSES, *(k[: -len("_cls")] for k in OFFICIAL_CLASSES)}
    missing = sorted(expected - set(data))
    unknown = sorted(set(data) - expected)
    if missing or unknown:
        raise ConfigError(f"config.yaml: missing key(s) {missing}, unknown key(s) {unknown}")
    for key, official in OFFICIAL_CLASSES.items():
        if data[key] != official:
            raise ConfigError(f"{key}={data[key]!r} is not implemented (only {official!r})")
    image = dict(data["image_tokenizer"])
    name = image.get("pretrained_model_name_or_path", DINO_VITB16)
    image_config = _section(
        ImageTokenizerConfig,
        {k: v for k, v in image.items() if k != "enable_gradient_checkpointing"},
        "image_tokenizer",
        vit=_vit_config(name, base_dir),
    )
    config = TSRConfig(
        cond_image_size=int(data["cond_image_size"]),
        image_tokenizer=image_config,
        tokenizer=_section(TokenizerConfig, data["tokenizer"], "tokenizer"),
        backbone=_section(BackboneConfig, data["backbone"], "backbone"),
        post_processor=_section(PostProcessorConfig, data["post_processor"], "post_processor"),
        decoder=_section(DecoderConfig, data["decoder"], "decoder"),
        renderer=_section(RendererConfig, data["renderer"], "renderer"),
    )
    _check_supported(config)
    return config


def load_config(path: str | Path) -> TSRConfig:
    """Parse a TripoSR ``config.yaml`` (the hub file or one written by :mod:`triposr.synthetic`)."""
    path = Path(path)
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a YAML mapping at the top level")
    return config_from_dict(data, base_dir=path.parent)
