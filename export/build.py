"""Build (or add a version to) a Triton model repository from TripoSR and U²-Net checkpoints.

Steps, each reported as it runs: find and check the U²-Net (first, so a wrong file fails in
seconds, not after the TripoSR export), load TripoSR strictly, export encoder and decoder to ONNX,
compare them with eager PyTorch, stamp them with the version number, prepare the U²-Net, move
each ONNX file into its new version directory, then write configs for the chosen flavour.
Nothing in a version that is already there is modified.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import onnx

from export.repository import (
    existing_versions,
    install_version,
    next_version,
    write_configs,
)
from export.version_tag import add_version_output
from img2mesh.contract import DECODER, ENCODER, INFERENCE_PRECISIONS, REMBG, Shapes

if TYPE_CHECKING:
    from export.rembg_onnx import U2NetSource
    from triposr.system import TSR

Log = Callable[[str], None]
# Protobuf refuses single files of 2 GiB; stay clear of it for the official encoder (1.68 GB).
_EXTERNAL_DATA_ABOVE = 1 << 30


@dataclass
class BuildReport:
    repository: Path
    flavour: str
    version: int
    rembg_version: int | None
    u2net: dict[str, str | None] | None
    """The record of the U²-Net this build added (``U2NetSource.record``), or None."""
    parity: dict[str, dict[str, float]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def _step(log: Log, report: BuildReport, name: str, message: str) -> Callable[[], None]:
    log(f"[export] {message} …")
    started = time.perf_counter()

    def done() -> None:
        report.seconds[name] = round(time.perf_counter() - started, 2)
        log(f"[export] {message}: done in {report.seconds[name]:.1f} s")

    return done


def _stamp(path: Path, version: int) -> None:
    """Add the ``version`` output to the ONNX file at ``path`` in place (keeping external data)."""
    model = onnx.load(str(path))
    add_version_output(model, version)
    large = model.ByteSize() > _EXTERNAL_DATA_ABOVE
    for stale in path.parent.iterdir():
        if stale != path:
            stale.unlink()
    onnx.save_model(model, str(path), save_as_external_data=large, location="model.onnx.data")
    onnx.checker.check_model(str(path))


def model_shapes(model: TSR) -> Shapes:
    """The tensor sizes of the repository's configs for this architecture."""
    _, channels, side, _ = model.scene_code_shape
    return Shapes(scene_code_channels=channels, scene_code_size=side, condition_size=model.config.cond_image_size)


def build_repository(
    checkpoint: str,
    output: Path,
    *,
    flavour: str,
    u2net: str | None,
    precision: str = INFERENCE_PRECISIONS[0],
    version: int | None = None,
    cache_dir: Path | None = None,
    u2net_unverified: bool = False,
    log: Log = print,
) -> BuildReport:
    """Export TripoSR (``checkpoint``: hub id or local dir) and U²-Net into ``output``.

    ``precision`` is that of the encoder where OpenVINO serves it (``bf16`` only as an operator's
    opt-in; the decoder stays fp32). ``u2net`` is what ``--u2net`` takes: one of rembg's U²-Nets by
    name (``export.u2net_models``; ``download`` is the full u2net), or a path to one (checked
    against their md5s unless ``u2net_unverified``), or None to keep the repository's rembg. The
    U²-Net is found and checked before anything is exported, and a build that fails leaves no
    output folder it created.
    """
    from export.rembg_onnx import resolve_u2net  # noqa: PLC0415 - heavy imports only when building

    if u2net is None and not existing_versions(output, REMBG):
        raise ValueError(f"{output} has no rembg model yet: pass --u2net NAME (u2net, u2netp, …) or --u2net PATH")
    created = not output.exists()
    try:
        source = resolve_u2net(u2net, cache_dir=cache_dir, unverified=u2net_unverified) if u2net else None
        return _build(checkpoint, output, flavour, precision, version, cache_dir, source, log)
    except BaseException:
        if created:
            shutil.rmtree(output, ignore_errors=True)
        raise


def _build(checkpoint: str, output: Path, flavour: str, precision: str, version: int | None,
           cache_dir: Path | None, source: U2NetSource | None, log: Log) -> BuildReport:
    from export.rembg_onnx import prepare_u2net  # noqa: PLC0415
    from export.triposr_onnx import compare_with_eager, export_decoder, export_encoder  # noqa: PLC0415
    from triposr.checkpoint import load_tsr  # noqa: PLC0415

    version = version or next_version(output)
    rembg_version = (max(existing_versions(output, REMBG), default=0) + 1) if source else None
    report = BuildReport(output, flavour, version, rembg_version, source.record() if source else None)

    done = _step(log, report, "load", f"loading TripoSR from {checkpoint}")
    model = load_tsr(checkpoint, cache_dir=cache_dir)
    done()
    shapes = model_shapes(model)

    # Scratch space outside the repository: Triton (`--load-model=*`) must never see a half export.
    with tempfile.TemporaryDirectory(prefix="export-") as scratch:
        staged = {name: Path(scratch) / name for name in (ENCODER, DECODER, REMBG)}
        for folder in staged.values():
            folder.mkdir()
        done = _step(log, report, "encoder", "exporting the encoder to ONNX")
        export_encoder(model, staged[ENCODER] / "model.onnx")
        done()
        done = _step(log, report, "decoder", "exporting the decoder to ONNX")
        export_decoder(model, staged[DECODER] / "model.onnx")
        done()
        done = _step(log, report, "parity", "comparing ONNX Runtime with eager PyTorch")
        report.parity = compare_with_eager(
            model, staged[ENCODER] / "model.onnx", staged[DECODER] / "model.onnx"
        )
        done()
        for name, errors in report.parity.items():
            log(f"[export]   {name}: max abs error {errors['max_abs']:.3g}, max rel error {errors['max_rel']:.3g}")
        for name in (ENCODER, DECODER):
            _stamp(staged[name] / "model.onnx", version)
        if source is not None:
            label = source.model.name if source.model else f"an unverified U²-Net (md5 {source.md5})"
            done = _step(log, report, REMBG, f"preparing {label} from {source.path}")
            prepare_u2net(source, staged[REMBG] / "model.onnx")
            done()

        done = _step(log, report, "install", f"writing version {version} and {flavour} configs into {output}")
        output.mkdir(parents=True, exist_ok=True)
        for name in (ENCODER, DECODER):
            install_version(output, name, version, staged[name], flavour)
        if rembg_version is not None:
            install_version(output, REMBG, rembg_version, staged[REMBG], flavour)
        # After the versions: the rembg config lists the record of each installed version.
        write_configs(output, flavour, shapes, precision)
        done()
    return report
