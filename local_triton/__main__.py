"""``python -m local_triton --repository DIR``: serve a model repository until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
from pathlib import Path

from img2mesh.contract import ENSEMBLE
from local_triton.server import LocalTriton, TritonStartError, serve_forever


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m local_triton", description=__doc__)
    parser.add_argument("--repository", type=Path, required=True, help="Triton model repository (portable flavour)")
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--model-control", choices=["none", "explicit"], default="none")
    parser.add_argument("--load-model", action="append", default=[], help="with explicit control; '*' for all")
    parser.add_argument("--start-timeout", type=float, default=300.0, help="seconds to wait for readiness")
    args = parser.parse_args()
    if not (args.repository / ENSEMBLE).is_dir():
        parser.error(f"{args.repository} holds no image_to_mesh model: build it with `python -m export`")
    server = LocalTriton(
        args.repository,
        grpc_port=args.grpc_port,
        http_port=args.http_port,
        metrics_port=args.metrics_port,
        model_control=args.model_control,
        load_models=args.load_model,
    )
    try:
        serve_forever(server)
    except TritonStartError as error:
        print(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
