#!/usr/bin/env bash
# The test command of README.md: set up the machine, then run the whole suite (real
# tritonserver and redis-server started by fixtures). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -ra "$@"
