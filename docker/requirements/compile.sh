#!/usr/bin/env bash
# Regenerate the pinned requirements of the three images from pyproject.toml (needs `pip install uv`
# and PyPI). Run it after changing a dependency; tests/ops/test_images.py fails until you do.
set -euo pipefail
cd "$(dirname "$0")/../.."
compile() {  # output, python version, extra arguments...
  local output=$1 python=$2
  shift 2
  uv pip compile pyproject.toml "$@" --python-version "$python" --python-platform x86_64-manylinux_2_28 \
    --annotation-style line --custom-compile-command "docker/requirements/compile.sh" -o "docker/requirements/$output"
}
# Triton's Python backend: the stub of the 24.10 container embeds Python 3.10.
compile triton.txt 3.10 --extra triton
compile worker.txt 3.11 --extra worker
compile exporter.txt 3.11 --extra export docker/requirements/torch-cpu.in --override docker/requirements/without-torch.txt
