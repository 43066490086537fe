"""The exporter's U²-Net: which file ``--u2net`` names, its checks, and the rewrite for Triton
(names, pruning, dynamic batch, parity) on the real u2netp; the rewrite's batch-unpinning is
plumbing, proven on the generated stand-in whose graph pins the batch as a traced export does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import Fail

from export.rembg_onnx import U2NetSource, prepare_u2net, resolve_u2net
from export.repository import U2NET_RECORD
from export.u2net_models import U2NETP, U2NetUnavailable, md5_of
from export.u2net_synthetic import synthetic_product_photo
from img2mesh.background_removal import u2net_input
from img2mesh.contract import REMBG
from img2mesh.onnxruntime_sessions import onnxruntime_session


@pytest.fixture(scope="module")
def prepared(u2netp: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return prepare_u2net(resolve_u2net(str(u2netp)), tmp_path_factory.mktemp(REMBG) / "1" / "model.onnx")


def photo_inputs() -> np.ndarray:
    colours = ((196, 48, 40), (30, 140, 60), (40, 90, 200))
    return np.stack([u2net_input(np.asarray(synthetic_product_photo((400, 300), colour).convert("RGBA"))) for colour in colours])


def test_signature_is_renamed_pruned_and_batch_dynamic(u2netp: Path, prepared: Path) -> None:
    model = onnx.load(str(prepared))
    onnx.checker.check_model(model, full_check=True)
    (graph_input,) = model.graph.input
    (graph_output,) = model.graph.output
    assert graph_input.name == "input" and graph_output.name == "mask"
    assert [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim] == ["batch", 3, 320, 320]
    assert [d.dim_param or d.dim_value for d in graph_output.type.tensor_type.shape.dim] == ["batch", 1, 320, 320]
    side_outputs = {output.name for output in onnx.load(str(u2netp)).graph.output[1:]}
    produced = {name for node in model.graph.node for name in node.output}
    assert len(side_outputs) == 6 and not produced & side_outputs  # the side outputs' sigmoids are gone


def test_any_batch_equals_the_original_image_by_image(u2netp: Path, prepared: Path) -> None:
    images = photo_inputs()
    original = onnxruntime_session(u2netp)
    expected = np.concatenate([original.run(None, {"input.1": image[None]})[0] for image in images])
    rewritten = onnxruntime_session(prepared)
    (batched,) = rewritten.run(["mask"], {"input": images})
    assert batched.shape == (3, 1, 320, 320)
    difference = float(np.abs(batched - expected).max())
    print(f"prepared u2netp, batch 3 vs original one by one: max |Δ| = {difference:.3g}")
    assert difference < 1e-4


def test_the_record_names_the_network(prepared: Path) -> None:
    assert json.loads((prepared.parent / U2NET_RECORD).read_text()) == {"name": "u2netp", "md5": U2NETP.md5}


def test_a_pinned_batch_is_unpinned(u2net_like: Path, tmp_path: Path) -> None:
    """Only declaring the batch dynamic is not enough: constant Resize/Reshape shapes must go too."""
    model = onnx.load(str(u2net_like))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    naive = tmp_path / "naive.onnx"
    onnx.save(model, str(naive))
    with pytest.raises(Fail, match="cannot be reshaped to the requested shape"):
        onnxruntime_session(naive).run(None, {"input.1": photo_inputs()[:2]})
    source = resolve_u2net(str(u2net_like), unverified=True)
    rewritten = onnxruntime_session(prepare_u2net(source, tmp_path / "1" / "model.onnx"))
    assert rewritten.run(["mask"], {"input": photo_inputs()[:2]})[0].shape == (2, 1, 320, 320)
    assert json.loads((tmp_path / "1" / U2NET_RECORD).read_text()) == {"name": None, "md5": md5_of(u2net_like)}


def test_a_path_is_recognised_by_its_md5(u2netp: Path, tmp_path: Path) -> None:
    renamed = tmp_path / "renamed.onnx"
    shutil.copy(u2netp, renamed)
    assert resolve_u2net(str(renamed)) == U2NetSource(renamed, U2NETP, U2NETP.md5)


@pytest.mark.parametrize("damage", ["truncated", "another network"])
def test_a_file_that_is_no_published_u2net_is_refused_unless_unverified(
        damage: str, u2netp: Path, u2net_like: Path, tmp_path: Path) -> None:
    path = u2net_like
    if damage == "truncated":
        path = tmp_path / "u2netp.onnx"
        path.write_bytes(u2netp.read_bytes()[: 1 << 20])
    with pytest.raises(ValueError, match="is none of rembg's published U²-Nets") as raised:
        resolve_u2net(str(path))
    message = str(raised.value)
    assert f"u2netp {U2NETP.md5}" in message and "--u2net-unverified" in message and "fetch-u2netp" in message
    assert resolve_u2net(str(path), unverified=True).model is None


def test_neither_a_file_nor_a_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file, and not the name of one of rembg's U²-Nets .*u2netp"):
        resolve_u2net(str(tmp_path / "missing.onnx"))


def test_a_name_reuses_a_verified_file_in_the_cache(u2netp: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _unreachable_network(monkeypatch)
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(u2netp, cache / U2NETP.file_name)
    source = resolve_u2net("u2netp", cache_dir=cache)
    assert source.path == cache / U2NETP.file_name and source.model == U2NETP


def test_failed_download_names_the_offline_alternatives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _unreachable_network(monkeypatch)
    cache = tmp_path / "cache"
    with pytest.raises(U2NetUnavailable, match="could not download rembg's u2net.onnx") as raised:
        resolve_u2net("download", cache_dir=cache)
    message = str(raised.value)
    assert "--u2net PATH" in message and str(cache / "u2net.onnx") in message and "U2NET_HOME" in message
    with pytest.raises(U2NetUnavailable, match="could not download rembg's u2netp.onnx.*fetch-u2netp"):
        resolve_u2net("u2netp", cache_dir=cache)


def _unreachable_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unreachable proxy makes a download fail fast and the same way with or without internet."""
    for variable in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(variable, "http://127.0.0.1:9")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
