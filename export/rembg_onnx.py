"""Turn rembg's ``u2net.onnx`` into the Triton ``rembg`` model file.

rembg's file has a fixed batch of 1, an input called ``input.1`` and seven outputs of which
rembg only reads the first (the fused mask ``d0``). Triton's ``rembg`` model (docs/architecture.md)
wants ``input`` → ``mask`` with a dynamic batch, so this module renames the tensors, drops the
six side outputs and the nodes only they need, un-pins the batch where the PyTorch export froze
it into constants (``Resize`` sizes, ``Reshape`` shapes), and proves the result still computes,
image for image, what the original computes.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from img2mesh.contract import REMBG_INPUT, REMBG_MASK
from img2mesh.onnxruntime_sessions import onnxruntime_session

U2NET_MD5 = "60024c5c889badc19c04ad937298a77b"
BATCH_DIM = "batch"
# Batch 1 vs batch 2 on CPU may pick different convolution kernels; sigmoid outputs agree far
# closer than this, while a graph that mixes images up is off by order 1.
_PARITY_ATOL = 1e-4


def prepare_u2net(
    source: Path | None,
    output: Path,
    *,
    cache_dir: Path | None = None,
    verify_checksum: bool = True,
) -> Path:
    """Write the Triton-ready U²-Net to ``output`` and return it.

    ``source`` is a local ``u2net.onnx``; ``None`` fetches it through rembg's own downloader
    into ``cache_dir`` (default: rembg's ``$U2NET_HOME``, i.e. ``~/.u2net``), which reuses a file
    already there when its md5 matches. A local file's md5 is checked against rembg's unless
    ``verify_checksum`` is False (for another U²-Net export, or the synthetic stand-in).

    Raises:
        RuntimeError: the download failed (say, offline); the message names the alternatives.
        ValueError: the checksum differs, or the rewritten graph does not match the original.
    """
    if source is None:
        source = _download_with_rembg(cache_dir)
    elif verify_checksum:
        _check_md5(source)
    original = onnx.load(str(source))
    rewritten = rewrite_for_triton(original)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(rewritten, str(output))
    onnx.checker.check_model(str(output), full_check=True)
    verify_against_original(source, output)
    return output


def rewrite_for_triton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The graph with input ``input``, the single output ``mask`` (the first one) and a dynamic batch."""
    old_input = model.graph.input[0].name
    old_output = model.graph.output[0].name
    pruned = onnx.utils.Extractor(model).extract_model([old_input], [old_output])
    graph = pruned.graph
    _rename_tensor(graph, old_input, REMBG_INPUT)
    _rename_tensor(graph, old_output, REMBG_MASK)
    for value in (graph.input[0], graph.output[0]):
        batch = value.type.tensor_type.shape.dim[0]
        batch.Clear()
        batch.dim_param = BATCH_DIM
    _unpin_batch(graph)
    # Shapes inferred for batch 1 would contradict the dynamic batch; infer them afresh.
    del graph.value_info[:]
    del pruned.opset_import[:]
    pruned.opset_import.extend(model.opset_import)
    pruned.ir_version = model.ir_version
    return onnx.shape_inference.infer_shapes(pruned, strict_mode=True)


def verify_against_original(original: Path, rewritten: Path) -> None:
    """Check that batch 1 and batch 2 of the rewritten file match the original image by image.

    Raises:
        ValueError: a shape or a value differs.
    """
    first, second = _probe_inputs()
    reference = onnxruntime_session(original)
    candidate = onnxruntime_session(rewritten)
    reference_input = reference.get_inputs()[0].name
    expected = [reference.run(None, {reference_input: image[None]})[0][0] for image in (first, second)]
    single = candidate.run([REMBG_MASK], {REMBG_INPUT: first[None]})[0]
    pair = candidate.run([REMBG_MASK], {REMBG_INPUT: np.stack([first, second])})[0]
    if single.shape != (1, *expected[0].shape) or pair.shape != (2, *expected[0].shape):
        raise ValueError(f"rewritten U²-Net returns shapes {single.shape} and {pair.shape} for batches 1 and 2")
    for label, got, want in (
        ("batch 1", single[0], expected[0]),
        ("batch 2, image 1", pair[0], expected[0]),
        ("batch 2, image 2", pair[1], expected[1]),
    ):
        difference = float(np.abs(got - want).max())
        if difference > _PARITY_ATOL:
            raise ValueError(f"rewritten U²-Net differs from the original on {label}: max |Δ| = {difference:.3g}")


def _download_with_rembg(cache_dir: Path | None) -> Path:
    """Fetch ``u2net.onnx`` with rembg's pooch downloader (md5-checked, reused when present)."""
    from rembg.sessions.u2net import U2netSession

    with _u2net_home(cache_dir):
        home = U2netSession.u2net_home()
        try:
            return Path(U2netSession.download_models())
        except Exception as error:  # pooch raises requests', OSError or ValueError (bad hash) errors
            raise RuntimeError(
                f"could not download rembg's u2net.onnx into {home} ({type(error).__name__}: {error}). "
                f"Offline, either pass the path of a u2net.onnx (md5 {U2NET_MD5}) as prepare_u2net's "
                f"`source` argument, or copy the file to {Path(home) / 'u2net.onnx'} (set U2NET_HOME, or "
                "`cache_dir`, to use another folder): rembg's downloader then reuses it."
            ) from error


@contextlib.contextmanager
def _u2net_home(cache_dir: Path | None) -> Iterator[None]:
    """Point rembg's ``U2NET_HOME`` at ``cache_dir`` for the duration, if one is given."""
    if cache_dir is None:
        yield
        return
    previous = os.environ.get("U2NET_HOME")
    os.environ["U2NET_HOME"] = str(cache_dir)
    try:
        yield
    finally:
        if previous is None:
            del os.environ["U2NET_HOME"]
        else:
            os.environ["U2NET_HOME"] = previous


def _check_md5(path: Path) -> None:
    digest = hashlib.md5()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != U2NET_MD5:
        raise ValueError(
            f"{path} has md5 {digest.hexdigest()}, not rembg's u2net.onnx ({U2NET_MD5}): use the file from "
            "rembg's release v0.0.0, or pass verify_checksum=False to use a different U²-Net export on purpose"
        )


def _rename_tensor(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Rename a tensor everywhere it is produced, consumed or declared."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def _unpin_batch(graph: onnx.GraphProto) -> None:
    """Replace constant target shapes that start with batch 1 by ones taken from the runtime batch.

    PyTorch's tracer folds ``x.shape`` into constants, so ``F.interpolate(size=…)`` becomes a
    ``Resize`` with ``sizes = [1, C, H, W]`` and ``view`` a ``Reshape`` to ``[1, …]``. Each such
    constant becomes ``Concat(Shape(data)[0:1], constant[1:])``.
    """
    constants = _constant_tensors(graph)
    rewritten: list[onnx.NodeProto] = []
    for node in graph.node:
        shape_input = {"Resize": 3, "Reshape": 1}.get(node.op_type)
        if shape_input is not None and len(node.input) > shape_input:
            target = constants.get(node.input[shape_input])
            if target is not None and target.ndim == 1 and target.size > 0 and target[0] == 1:
                prefix = f"{node.output[0]}__batch_shape"
                rewritten.extend(_runtime_batch_shape(node.input[0], target[1:], prefix))
                node.input[shape_input] = f"{prefix}/value"
        rewritten.append(node)
    del graph.node[:]
    graph.node.extend(rewritten)
    used = {name for node in graph.node for name in node.input}
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)


def _runtime_batch_shape(data: str, rest: np.ndarray, prefix: str) -> list[onnx.NodeProto]:
    """Nodes computing ``Concat(Shape(data)[0:1], rest)`` into ``{prefix}/value``."""
    return [
        helper.make_node("Shape", [data], [f"{prefix}/shape"]),
        helper.make_node(
            "Constant", [], [f"{prefix}/index"], value=helper.make_tensor(f"{prefix}/index_value", TensorProto.INT64, [1], [0])
        ),
        helper.make_node("Gather", [f"{prefix}/shape", f"{prefix}/index"], [f"{prefix}/batch"], axis=0),
        helper.make_node("Constant", [], [f"{prefix}/rest"], value=numpy_helper.from_array(rest.astype(np.int64), f"{prefix}/rest_value")),
        helper.make_node("Concat", [f"{prefix}/batch", f"{prefix}/rest"], [f"{prefix}/value"], axis=0),
    ]


def _constant_tensors(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    """Initializers and ``Constant`` node outputs by name, as numpy arrays."""
    values = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    values[node.output[0]] = numpy_helper.to_array(attribute.t)
    return values


def _probe_inputs() -> tuple[np.ndarray, np.ndarray]:
    """Two different U²-Net inputs: the synthetic product photo and a smaller, differently coloured one."""
    from export.u2net_synthetic import synthetic_product_photo
    from img2mesh.background_removal import u2net_input

    photos = (synthetic_product_photo(), synthetic_product_photo(size=(300, 420), color=(40, 90, 200)))
    return tuple(u2net_input(np.asarray(photo.convert("RGBA"))) for photo in photos)
