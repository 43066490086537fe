"""rembg's U²-Net pre- and post-processing, without rembg or onnxruntime.

The network itself runs in Triton (the ``rembg`` model); these functions reproduce, step for
step, what ``rembg`` 2.0.69 does around it (``BaseSession.normalize``, ``U2netSession.predict``
and ``bg.naive_cutout``), because the official TripoSR pipeline feeds on exactly that cut-out.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from img2mesh.contract import U2NET_SIZE
from img2mesh.image_decoding import is_cut_out

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def u2net_input(rgba: np.ndarray) -> np.ndarray:
    """The U²-Net input tensor ``FP32 [3, 320, 320]`` for an ``H×W×4`` uint8 image.

    As rembg: RGB, LANCZOS-resized to 320×320 ignoring the aspect ratio, divided by the
    resized image's own maximum (not by 255), then ImageNet mean/std. The arithmetic is done in
    float64 and cast at the end, like rembg, so the tensor is bit-identical to rembg's.
    """
    rgb = Image.fromarray(np.ascontiguousarray(rgba[..., :3]))
    resized = np.asarray(rgb.resize((U2NET_SIZE, U2NET_SIZE), Image.Resampling.LANCZOS))
    scaled = resized / max(np.max(resized), 1e-6)
    normalized = (scaled - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    return np.ascontiguousarray(normalized.transpose(2, 0, 1)).astype(np.float32)


def u2net_mask(prediction: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The uint8 ``H×W`` soft mask for one image from U²-Net's first output.

    ``prediction`` is that image's ``[1, 320, 320]`` slice of output ``d0`` (any shape holding
    320×320 values is accepted); ``size`` is ``(height, width)`` of the original image, i.e.
    ``rgba.shape[:2]``. As rembg: min-max normalised over the image, ×255 truncated to uint8,
    LANCZOS-resized back. A constant prediction (no saliency at all) gives an all-zero mask, as
    rembg's NaN → uint8 cast does.
    """
    pred = np.asarray(prediction, dtype=np.float32).reshape(U2NET_SIZE, U2NET_SIZE)
    low, high = pred.min(), pred.max()
    if high > low:
        normalized = np.clip((pred - low) / (high - low), 0, 1)
    else:
        normalized = np.zeros_like(pred)
    mask = Image.fromarray((normalized * 255).astype(np.uint8))
    height, width = size
    return np.asarray(mask.resize((width, height), Image.Resampling.LANCZOS))


def cut_out(rgba: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """rembg's default ``naive_cutout``: the image composited onto transparent black through the mask.

    Alpha becomes the mask and the colour channels are scaled by it (PIL's rounded blend), which
    is what TripoSR then composites onto grey.
    """
    image = Image.fromarray(np.ascontiguousarray(rgba))
    transparent = Image.new("RGBA", image.size, 0)
    return np.asarray(Image.composite(image, transparent, Image.fromarray(mask)))


def foreground_rgba(rgba: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """The cut-out TripoSR frames: the image's own alpha if it is a cut-out, else U²-Net's.

    As the official rule (``tsr.utils.remove_background``), an already cut-out image is trusted
    and the U²-Net prediction is ignored; unlike it, an alpha that cuts nothing out (a few
    anti-aliased pixels) is not a cut-out (``image_decoding.is_cut_out``).
    """
    if is_cut_out(rgba):
        return rgba
    return cut_out(rgba, u2net_mask(prediction, rgba.shape[:2]))
