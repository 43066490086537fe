"""export.rollout's pure parts: reading Triton's repository index, building config overrides, and
the command line's refusals (the live behaviour is in test_rollout.py)."""

from __future__ import annotations

import pytest

from export.rollout import (
    ModelState,
    parse_args,
    states_from_index,
    with_version_policy,
)
from img2mesh.contract import DECODER, ENCODER, ENSEMBLE, MESHER, REMBG

INDEX = {
    "models": [
        {"name": ENCODER, "version": "1", "state": "UNAVAILABLE", "reason": "unloaded"},
        {"name": ENCODER, "version": "2", "state": "READY"},
        {"name": ENCODER, "version": "3", "state": "UNAVAILABLE", "reason": "Internal: failed to load model.onnx"},
        {"name": DECODER, "version": "2", "state": "READY"},
        {"name": DECODER, "version": "1", "state": "READY"},
        {"name": REMBG, "version": "1", "state": "READY"},
        {"name": MESHER},
    ]
}


def test_index_gives_ready_versions_and_real_failures_only() -> None:
    states = states_from_index(INDEX, [ENCODER, DECODER, MESHER])
    assert states[ENCODER] == ModelState(ENCODER, (2,), {3: "Internal: failed to load model.onnx"})
    assert states[DECODER].ready == (1, 2)
    assert states[MESHER] == ModelState(MESHER)
    assert REMBG not in states
    assert states[ENCODER].describe() == (
        "triposr_encoder: serving 2; version 3 failed to load: Internal: failed to load model.onnx"
    )


def test_override_changes_only_the_version_policy() -> None:
    config = {"name": DECODER, "backend": "onnxruntime", "version_policy": {"latest": {"num_versions": 1}}}
    updated = with_version_policy(config, [2, 1, 2])
    assert updated == {**config, "version_policy": {"specific": {"versions": ["1", "2"]}}}
    assert config["version_policy"] == {"latest": {"num_versions": 1}}
    with pytest.raises(ValueError, match="at least one version"):
        with_version_policy(config, [])


@pytest.mark.parametrize("argv", [["roll"], ["rollback"], ["roll", "--version", "0"], ["move", "--version", "2"]])
def test_command_line_refuses_a_roll_without_a_version(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert capsys.readouterr().err


def test_command_line_defaults_are_the_triposr_pair() -> None:
    args = parse_args(["roll", "--triton-url", "triton:8001", "--version", "2"])
    assert (args.model, args.companion, args.ensemble, args.version) == (ENCODER, None, ENSEMBLE, 2)
