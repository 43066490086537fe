from __future__ import annotations

import shutil
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch

from triposr.checkpoint import CheckpointError, load_tsr
from triposr.config import config_from_dict
from triposr.synthetic import yaml_config
from triposr.system import TSR


def test_official_architecture_has_the_hub_checkpoint_layout() -> None:
    with torch.device("meta"):
        model = TSR(config_from_dict(yaml_config("official")))
    state = model.state_dict()
    assert len(state) == 549
    assert sum(t.numel() for t in state.values()) == 419_275_628
    groups: dict[str, int] = {}
    for name, tensor in state.items():
        groups[name.split(".")[0]] = groups.get(name.split(".")[0], 0) + tensor.numel()
    assert groups == {
        "image_tokenizer": 86_389_248,
        "tokenizer": 3_145_728,
        "backbone": 329_535_488,
        "post_processor": 163_880,
        "decoder": 41_284,
    }
    expected_shapes = {
        "image_tokenizer.model.embeddings.position_embeddings": (1, 197, 768),
        "image_tokenizer.model.encoder.layer.11.attention.attention.query.bias": (768,),
        "image_tokenizer.model.pooler.dense.weight": (768, 768),
        "tokenizer.embeddings": (3, 1024, 32, 32),
        "backbone.transformer_blocks.15.attn2.to_k.weight": (1024, 768),
        "backbone.transformer_blocks.0.ff.net.0.proj.weight": (8192, 1024),
        "backbone.transformer_blocks.0.ff.net.2.weight": (1024, 4096),
        "backbone.transformer_blocks.0.attn1.to_out.0.bias": (1024,),
        "post_processor.upsample.weight": (1024, 40, 2, 2),
        "decoder.layers.18.weight": (4, 64),
    }
    assert {name: tuple(state[name].shape) for name in expected_shapes} == expected_shapes
    assert "backbone.transformer_blocks.0.attn1.to_q.bias" not in state


def test_strict_load_restores_every_tensor(tiny_random_dir: Path) -> None:
    model = load_tsr(tiny_random_dir)
    saved = torch.load(tiny_random_dir / "model.ckpt", weights_only=True)
    loaded = model.state_dict()
    assert loaded.keys() == saved.keys()
    assert all(torch.equal(loaded[k], saved[k]) for k in saved)
    assert not model.training and all(not p.requires_grad for p in model.parameters())


def _copy_with_state(source: Path, target: Path, edit) -> Path:
    shutil.copytree(source, target)
    state = torch.load(source / "model.ckpt", weights_only=True)
    edit(state)
    torch.save(state, target / "model.ckpt")
    return target


def test_missing_key_is_named(tiny_random_dir: Path, tmp_path: Path) -> None:
    directory = _copy_with_state(tiny_random_dir, tmp_path / "ckpt", lambda s: s.pop("image_tokenizer.model.pooler.dense.bias"))
    with pytest.raises(CheckpointError, match=r"missing keys: image_tokenizer\.model\.pooler\.dense\.bias"):
        load_tsr(directory)


def test_extra_key_is_named(tiny_random_dir: Path, tmp_path: Path) -> None:
    directory = _copy_with_state(tiny_random_dir, tmp_path / "ckpt", lambda s: s.update({"decoder.layers.99.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=r"unexpected keys: decoder\.layers\.99\.weight"):
        load_tsr(directory)


def test_shape_mismatch_is_named(tiny_random_dir: Path, tmp_path: Path) -> None:
    directory = _copy_with_state(tiny_random_dir, tmp_path / "ckpt", lambda s: s.update({"tokenizer.embeddings": torch.zeros(3, 64, 8, 8)}))
    with pytest.raises(CheckpointError, match=r"shape mismatches: tokenizer\.embeddings \(checkpoint \(3, 64, 8, 8\)"):
        load_tsr(directory)


def test_directory_without_weights_says_what_is_missing(tiny_random_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(tiny_random_dir, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.ckpt").unlink()
    with pytest.raises(CheckpointError, match="lacks model.ckpt"):
        load_tsr(tmp_path / "ckpt")


def test_unreachable_hub_says_what_to_pass_instead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(CheckpointError) as info:
        load_tsr("stabilityai/TripoSR", cache_dir=tmp_path)
    message = str(info.value)
    assert "local directory that holds config.yaml and model.ckpt" in message
    assert "python -m triposr.synthetic" in message
