from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from triposr.config import DINO_VITB16_CONFIG, ConfigError, load_config
from triposr.synthetic import TINY_VIT, yaml_config


def _write(directory: Path, data: dict) -> Path:
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def test_official_config_resolves_interpolation_and_code_defaults(tmp_path: Path) -> None:
    data = yaml_config("official")
    assert data["backbone"]["in_channels"] == "${tokenizer.num_channels}"
    config = load_config(_write(tmp_path, data))
    assert config.cond_image_size == 512
    assert config.image_tokenizer.vit == DINO_VITB16_CONFIG  # no hub call for dino-vitb16
    assert (config.image_tokenizer.vit.hidden_size, config.image_tokenizer.vit.layer_norm_eps) == (768, 1e-12)
    backbone = config.backbone
    assert backbone.in_channels == 1024 and backbone.inner_dim == 1024
    assert (backbone.norm_num_groups, backbone.attention_bias, backbone.activation_fn) == (32, False, "geglu")
    assert config.decoder.activation == "silu" and config.decoder.n_hidden_layers == 9
    assert (config.renderer.radius, config.renderer.density_bias, config.renderer.color_activation) == (0.87, -1.0, "sigmoid")


def test_other_vit_is_read_from_a_local_config_json(tmp_path: Path) -> None:
    (tmp_path / "vit").mkdir()
    (tmp_path / "vit" / "config.json").write_text(json.dumps(TINY_VIT.to_json_dict()))
    config = load_config(_write(tmp_path, yaml_config("tiny")))
    assert config.image_tokenizer.vit == TINY_VIT


def test_unknown_vit_name_explains_what_to_pass(tmp_path: Path) -> None:
    data = yaml_config("official")
    data["image_tokenizer"]["pretrained_model_name_or_path"] = "facebook/dino-vits16"
    with pytest.raises(ConfigError, match="local directory"):
        load_config(_write(tmp_path, data))


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        (None, "decoder_cls", "my.Decoder", "decoder_cls"),
        ("backbone", "activation_fn", "gelu", "backbone.activation_fn"),
        ("renderer", "feature_reduction", "mean", "renderer.feature_reduction"),
        ("decoder", "n_layers", 3, "unknown key"),
        ("backbone", "in_channels", "${tokenizer.missing}", "missing key"),
    ],
)
def test_unsupported_or_unknown_settings_are_rejected(tmp_path: Path, section, key, value, message) -> None:
    data = yaml_config("official")
    (data[section] if section else data)[key] = value
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, data))
