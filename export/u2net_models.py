"""rembg's published U²-Nets: which files the exporter accepts, by name or by their bytes.

Each entry is a network rembg itself downloads (its ``rembg/sessions/<name>.py`` names the file
and its md5; ``tests/img2mesh/test_u2net_models.py`` checks this table against the installed
rembg) and that has u2net's signature: input ``input.1`` [1, 3, 320, 320], seven sigmoid outputs
with the fused mask ``d0`` first, and rembg's pre-processing. rembg's other models (isnet, birefnet,
sam, …) take other inputs and are not U²-Nets. A file given by path is recognised by its md5, so a
repository always records which of these it serves (``export.rembg_onnx.U2NET_RECORD``).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

RELEASE_URL = "https://github.com/danielgatis/rembg/releases/download/v0.0.0"
"""Where rembg's downloader fetches every one of them (GitHub: not reachable on every machine)."""


@dataclass(frozen=True)
class U2NetModel:
    name: str
    md5: str
    about: str

    @property
    def file_name(self) -> str:
        return f"{self.name}.onnx"

    @property
    def url(self) -> str:
        return f"{RELEASE_URL}/{self.file_name}"


U2NET = U2NetModel("u2net", "60024c5c889badc19c04ad937298a77b",
                   "the full U²-Net (176 MB): rembg's default and production's")
U2NETP = U2NetModel("u2netp", "8e83ca70e441ab06c318d82300c84806",
                   "the small U²-Net (4.6 MB, a fortieth of the full one's weights): coarser masks")
U2NET_HUMAN_SEG = U2NetModel("u2net_human_seg", "c09ddc2e0104f800e3e1bb4652583d1f",
                             "the full U²-Net trained on people (not for products)")
SILUETA = U2NetModel("silueta", "55e59e0d8062d2f5d013f4725ee84782",
                     "the full U²-Net pruned to 43 MB")

U2NET_MODELS = {model.name: model for model in (U2NET, U2NETP, U2NET_HUMAN_SEG, SILUETA)}
"""By rembg's name, which is also the ``--u2net`` name of ``python -m export build``."""
DEFAULT_DOWNLOAD = U2NET
"""What ``--u2net download`` fetches: the full U²-Net, the one official TripoSR runs."""


class U2NetUnavailable(RuntimeError):
    """A U²-Net could not be had (download failed, not on the index, wrong bytes); the message says what to do."""


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def with_md5(md5: str) -> U2NetModel | None:
    """The published U²-Net whose file has this md5, or None for any other file."""
    return next((model for model in U2NET_MODELS.values() if model.md5 == md5), None)


def known_names() -> str:
    return ", ".join(U2NET_MODELS)
